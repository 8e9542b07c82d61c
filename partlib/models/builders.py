"""Model presets: ``tiny`` (real Whisper/Qwen2 architectures at toy sizes, saved with
``save_pretrained``) and ``paper`` (PART-8B: Whisper-large-v3 + Transformer adapter + Qwen2.5-7B,
built offline from bundled config.json files)."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Iterable, Optional, Tuple

import torch
import yaml
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM, WhisperConfig,
                          WhisperModel)

from partlib.common import ConfigError, PathLike
from partlib.models.pretrained import load_pretrained
from partlib.text.tokenizer import CHATML_TEMPLATE, SPECIAL_TOKENS

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


# A few sentences in several scripts so that the toy vocabulary has real merges.
_SAMPLE_TEXTS = [
    "Transcribe the speech. Translate the speech into English.",
    "Translate the following text into German. Continue this text.",
    "The quick brown fox jumps over the lazy dog.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le renard brun rapide saute par-dessus le chien paresseux.",
    "El rápido zorro marrón salta sobre el perro perezoso.",
    "敏捷的棕色狐狸跳过了懒狗。", "素早い茶色の狐がのろまな犬を飛び越える。",
    "Быстрая коричневая лиса перепрыгивает через ленивую собаку.",
    "You are a helpful assistant. system user assistant",
]


def build_tiny_tokenizer(out_dir: PathLike, texts: Optional[Iterable[str]] = None,
                         vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer with ChatML special tokens and chat template; save it to ``out_dir``.

    Any Unicode text is encodable (byte fallback through the 256-symbol byte alphabet).
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts) if texts is not None else _SAMPLE_TEXTS, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>"])
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(str(out_dir))
    return fast


def _read_arch(name: str, **overrides) -> dict:
    cfg = json.loads((CONFIG_DIR / name).read_text())
    cfg.pop("model_type")
    cfg.pop("architectures", None)
    cfg.update(overrides)
    return cfg


def build_tiny_encoder(out_dir: PathLike, seed: int = 0, **overrides) -> Path:
    """Save a randomly initialised tiny Whisper model (encoder + 1-layer decoder) to ``out_dir``.

    ``overrides`` change fields of configs/tiny-whisper.json (e.g. ``num_mel_bins=128``).
    """
    torch.manual_seed(seed)
    WhisperModel(WhisperConfig(**_read_arch("tiny-whisper.json", **overrides))).save_pretrained(str(out_dir))
    return Path(out_dir)


def build_tiny_llm(out_dir: PathLike, tokenizer_dir: Optional[PathLike] = None, seed: int = 0,
                   **overrides) -> Path:
    """Save a randomly initialised tiny Qwen2 causal LM sized to a tokenizer, plus that tokenizer.

    Without ``tokenizer_dir`` a toy tokenizer is trained (:func:`build_tiny_tokenizer`).
    """
    out_dir = Path(out_dir)
    if tokenizer_dir is None:
        tokenizer = build_tiny_tokenizer(out_dir)
    else:
        tokenizer = load_pretrained(PreTrainedTokenizerFast.from_pretrained, tokenizer_dir, "tokenizer_dir")
        tokenizer.save_pretrained(str(out_dir))
    cfg = _read_arch("tiny-qwen2.json", **overrides)
    cfg.update(vocab_size=len(tokenizer), eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
               pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    Qwen2ForCausalLM(Qwen2Config(**cfg)).save_pretrained(str(out_dir))
    return out_dir


def tiny_model_config(work_dir: PathLike, lora: bool = True, tokenizer_dir: Optional[PathLike] = None,
                      seed: int = 0) -> dict:
    """Build tiny encoder and LLM under ``work_dir`` and return a model config that uses them."""
    work_dir = Path(work_dir)
    enc = build_tiny_encoder(work_dir / "tiny_whisper", seed=seed)
    llm = build_tiny_llm(work_dir / "tiny_llm", tokenizer_dir, seed=seed)
    cfg = {"encoder": {"path": str(enc)}, "adapter": {"type": "stack", "stack": 4, "hidden": 64},
           "llm": {"path": str(llm), "dtype": "float32"}, "prompt": {"system": None}}
    if lora:
        cfg["lora"] = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "layers": "all"}
    return cfg


def load_preset(name: str) -> Tuple[dict, Path]:
    """A bundled model config (``paper``) and the directory its relative paths refer to."""
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown model preset {name!r}; known: {known}")
    return yaml.safe_load(path.read_text(encoding="utf-8")), CONFIG_DIR


def build_paper(device: str = "meta", encoder_path: Optional[str] = None, llm_path: Optional[str] = None,
                tokenizer: Optional[str] = None):
    """The paper model: random weights on ``device`` by default, or pretrained checkpoints by path."""
    from partlib.models.speech_llm import SpeechLLM

    cfg, base = load_preset("paper")
    cfg = copy.deepcopy(cfg)
    if encoder_path:
        cfg["encoder"] = {**{k: v for k, v in cfg["encoder"].items() if k != "arch"}, "path": encoder_path}
    if llm_path:
        cfg["llm"] = {**{k: v for k, v in cfg["llm"].items() if k != "arch"}, "path": llm_path}
    if tokenizer:
        cfg["llm"]["tokenizer"] = tokenizer
    return SpeechLLM.from_config(cfg, base_dir=base, device=device)
