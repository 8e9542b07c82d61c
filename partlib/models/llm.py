"""The causal LLM: any ``AutoModelForCausalLM`` with its ``AutoTokenizer``.

What the toolkit assumes of a Hugging Face causal LM, stated here once: ``get_decoder()`` returns
the decoder stack, whose transformer layers are the ``nn.ModuleList`` attribute ``layers``, so that
parameter names hold ``.layers.<N>.`` (:data:`LAYER_NAME_RE`; LoRA layer selection and FSDP units
rely on it); ``get_input_embeddings()``/``get_output_embeddings()`` give the embedding and the head.
Llama, Qwen2/2.5/3, Mistral, Gemma and Phi-3 follow it; :func:`decoder_layers` names an LLM that
does not.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional, Tuple

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from partlib.common import ConfigError, PathLike
from partlib.models.pretrained import load_pretrained

LAYER_NAME_RE = re.compile(r"\.layers\.(\d+)\.")  # a parameter or module name inside decoder layer N
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(name: Optional[str]) -> torch.dtype:
    """``float32`` (default), ``bfloat16`` or ``float16``."""
    if name is None:
        return torch.float32
    if name not in DTYPES:
        raise ConfigError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def llm_config(path: Optional[PathLike], arch: Optional[PathLike], *, key: str = "llm.path",
               base_dir: Optional[PathLike] = None):
    """The architecture config of the LLM at ``path`` (local dir or hub id; config key ``key``) or in
    an ``arch`` config.json, read without loading any weight."""
    if path is not None:
        return load_pretrained(AutoConfig.from_pretrained, path, key, base_dir)
    cfg = json.loads(Path(arch).read_text())
    model_type = cfg.pop("model_type")
    return AutoConfig.for_model(model_type, **cfg)


def load_causal_lm(path: Optional[PathLike], arch: Optional[PathLike], dtype: torch.dtype, *,
                   key: str = "llm.path", base_dir: Optional[PathLike] = None) -> PreTrainedModel:
    """Pretrained weights from ``path`` (local dir or hub id; config key ``key``), or random weights
    from an ``arch`` config.json.

    Random-weight models are created on the current default device (e.g. inside ``torch.device("meta")``).
    """
    if path is not None:
        return load_pretrained(lambda name: AutoModelForCausalLM.from_pretrained(name, dtype=dtype), path, key,
                               base_dir)
    return AutoModelForCausalLM.from_config(llm_config(None, arch), dtype=dtype)


def load_tokenizer(path: Optional[PathLike], *, key: str = "llm.tokenizer", base_dir: Optional[PathLike] = None):
    """The tokenizer saved in ``path`` (local dir or hub id; config key ``key``), or None."""
    return None if path is None else load_pretrained(AutoTokenizer.from_pretrained, path, key, base_dir)


def backbone_and_head(model: PreTrainedModel) -> Tuple[nn.Module, nn.Module]:
    """(decoder stack returning hidden states, output projection) of a causal LM."""
    return model.get_decoder(), model.get_output_embeddings()


def decoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The transformer layers of a causal LM's decoder (``get_decoder().layers``); an LLM laid out
    otherwise is a :class:`ConfigError` that says what is expected."""
    decoder = model.get_decoder()
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(f"{type(model).__name__}: the LLM's decoder ({type(decoder).__name__}) has no ModuleList "
                          "'layers'; partlib needs decoder layers named '.layers.<N>.' (as Llama and Qwen "
                          "models have) for LoRA layer selection and FSDP")
    return layers
