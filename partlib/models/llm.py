"""The causal LLM: any ``AutoModelForCausalLM`` with its ``AutoTokenizer``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Tuple

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from partlib.common import ConfigError, PathLike

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(name: Optional[str]) -> torch.dtype:
    """``float32`` (default), ``bfloat16`` or ``float16``."""
    if name is None:
        return torch.float32
    if name not in DTYPES:
        raise ConfigError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def load_causal_lm(path: Optional[PathLike], arch: Optional[PathLike], dtype: torch.dtype) -> PreTrainedModel:
    """Pretrained weights from ``path`` (local dir or hub id), or random weights from an ``arch`` config.json.

    Random-weight models are created on the current default device (e.g. inside ``torch.device("meta")``).
    """
    if path is not None:
        return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    cfg = json.loads(Path(arch).read_text())
    model_type = cfg.pop("model_type")
    config = AutoConfig.for_model(model_type, **cfg)
    return AutoModelForCausalLM.from_config(config, dtype=dtype)


def load_tokenizer(path: Optional[PathLike]):
    """The tokenizer saved in ``path`` (local dir or hub id), or None."""
    return None if path is None else AutoTokenizer.from_pretrained(str(path))


def backbone_and_head(model: PreTrainedModel) -> Tuple[nn.Module, nn.Module]:
    """(decoder stack returning hidden states, output projection) of a causal LM."""
    return model.get_decoder(), model.get_output_embeddings()
