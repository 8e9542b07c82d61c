"""partlib.models: Whisper encoder (variable length) + adapter + causal LLM with LoRA and task prompts.

``SpeechLLM`` is imported on first use, so that the config schema (:mod:`partlib.models.schema`)
can be checked without loading transformers.
"""
from typing import Any

__all__ = ["SpeechLLM"]


def __getattr__(name: str) -> Any:
    if name == "SpeechLLM":
        from partlib.models.speech_llm import SpeechLLM

        return SpeechLLM
    raise AttributeError(f"module 'partlib.models' has no attribute {name!r}")
