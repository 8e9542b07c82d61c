"""LoRA on the LLM through peft; the section's schema is :class:`partlib.models.schema.Lora`.

Adapters are created up front on every candidate layer (``layers``: a layer spec)
and trained only on the *active* layers (``requires_grad``). peft initialises B = 0, and a layer's
B only changes while it is active, so activating a layer never changes the model's outputs.
"""
from __future__ import annotations

import warnings
from typing import Dict, List, Union

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import Linear as LoraLinear
from torch import nn

from partlib import config
from partlib.common import ConfigError
from partlib.models.llm import LAYER_NAME_RE as _LAYER_RE
from partlib.models.llm import decoder_layers
from partlib.models.schema import Lora, resolve_layers


def normalize_lora_config(lora: Union[Lora, dict], llm: nn.Module, num_layers: int) -> dict:
    """A LoRA section (:class:`partlib.models.schema.Lora`) checked against the LLM: its target
    modules must be linear layers inside ``.layers.<N>.``; ``layers`` becomes a list of indices."""
    lora = lora if isinstance(lora, Lora) else config.parse(Lora, lora, "model config", "lora")
    decoder_layers(llm)  # LoRA layer selection needs the '.layers.<N>.' layout: a clear error if not
    names = {name.rsplit(".", 1)[-1] for name, m in llm.named_modules()
             if isinstance(m, nn.Linear) and _LAYER_RE.search(name)}
    missing = [t for t in lora.target_modules if t not in names]
    if missing:
        raise ConfigError(f"lora.target_modules {missing} are not linear layers of the LLM; "
                          f"choose from {sorted(names)}")
    layers = resolve_layers(lora.layers, num_layers, "lora.layers")
    if not layers:  # peft reads an empty layer list as "every layer"
        raise ConfigError(f"lora.layers {lora.layers!r} selects no layer of the LLM")
    return {**lora.shape(), "layers": layers}


def inject_lora(llm: nn.Module, cfg: dict) -> PeftModel:
    """Wrap ``llm`` with LoRA adapters (B = 0) on the layers of a normalised config."""
    peft_config = LoraConfig(r=cfg["r"], lora_alpha=cfg["alpha"], lora_dropout=cfg["dropout"],
                        target_modules=cfg["target_modules"], layers_to_transform=cfg["layers"],
                        layers_pattern="layers", task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft probes a deprecated transformers attribute
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
        return get_peft_model(llm, peft_config)


def lora_params_by_layer(model: nn.Module) -> Dict[int, List[nn.Parameter]]:
    """LoRA parameters grouped by transformer layer index."""
    out: Dict[int, List[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if "lora_" in name:
            m = _LAYER_RE.search(name)
            out.setdefault(int(m.group(1)), []).append(p)
    return out


def lora_base_weights(model: nn.Module) -> Dict[int, List[nn.Parameter]]:
    """The weights LoRA adapts (those of the linear layers it wraps), grouped by transformer layer index."""
    out: Dict[int, List[nn.Parameter]] = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLinear):
            m = _LAYER_RE.search(name)
            out.setdefault(int(m.group(1)), []).append(module.base_layer.weight)
    return out


def merged_state_dict(model: PeftModel) -> Dict[str, torch.Tensor]:
    """State dict of the plain LLM with every LoRA update merged into its base weight (no in-place change)."""
    base = model.get_base_model()
    deltas = {}
    for name, module in base.named_modules():
        if isinstance(module, LoraLinear):
            deltas[name + ".base_layer.weight"] = sum(module.get_delta_weight(a) for a in module.active_adapters)
    out = {}
    for key, value in base.state_dict().items():
        if "lora_" in key:
            continue
        if key in deltas:
            value = value + deltas[key].to(value.dtype)
        out[key.replace(".base_layer.", ".")] = value
    return out


def unwrap(model: nn.Module) -> nn.Module:
    """The plain transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if isinstance(model, PeftModel) else model

