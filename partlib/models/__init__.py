"""partlib.models: Whisper encoder (variable length) + adapter + causal LLM with LoRA and task prompts."""
from partlib.models.speech_llm import SpeechLLM

__all__ = ["SpeechLLM"]
