"""LoRA on the LLM through peft, with one schema: ``{r, alpha, dropout, target_modules, layers}``.

Adapters are created up front on every candidate layer (``layers``: ``all`` or a list of indices)
and trained only on the *active* layers (``requires_grad``). peft initialises B = 0, and a layer's
B only changes while it is active, so activating a layer never changes the model's outputs.
"""
from __future__ import annotations

import warnings
from typing import Dict, List

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import Linear as LoraLinear
from torch import nn

from partlib.common import ConfigError
from partlib.models.llm import LAYER_NAME_RE as _LAYER_RE
from partlib.models.llm import decoder_layers

LORA_KEYS = ("r", "alpha", "dropout", "target_modules", "layers")
LORA_DEFAULTS = {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"], "layers": "all"}


def parse_layers(layers, num_layers: int, what: str = "lora.layers") -> List[int]:
    """``"all"`` or a list of layer indices (negative ones count from the top) -> sorted indices."""
    if layers == "all":
        return list(range(num_layers))
    if not isinstance(layers, (list, tuple)) or not all(isinstance(i, int) for i in layers):
        raise ConfigError(f"{what} must be 'all' or a list of integers, got {layers!r}")
    out = set()
    for i in layers:
        if not -num_layers <= i < num_layers:
            raise ConfigError(f"{what}: layer {i} is out of range for an LLM with {num_layers} layers")
        out.add(i % num_layers)
    return sorted(out)


def normalize_lora_config(cfg: dict, llm: nn.Module, num_layers: int) -> dict:
    """Fill defaults and validate a ``lora`` section against the LLM; ``layers`` becomes a list."""
    unknown = set(cfg) - set(LORA_KEYS)
    if unknown:
        raise ConfigError(f"unknown lora option(s) {sorted(unknown)}; allowed: {list(LORA_KEYS)}")
    out = {**LORA_DEFAULTS, **cfg}
    decoder_layers(llm)  # LoRA layer selection needs the '.layers.<N>.' layout: a clear error if not
    if not isinstance(out["r"], int) or out["r"] < 1:
        raise ConfigError(f"lora.r must be a positive integer, got {out['r']!r}")
    targets = out["target_modules"]
    if isinstance(targets, str):
        targets = [targets]
    names = {name.rsplit(".", 1)[-1] for name, m in llm.named_modules()
             if isinstance(m, nn.Linear) and _LAYER_RE.search(name)}
    missing = [t for t in targets if t not in names]
    if missing:
        raise ConfigError(f"lora.target_modules {missing} are not linear layers of the LLM; "
                          f"choose from {sorted(names)}")
    out["target_modules"] = list(targets)
    out["layers"] = parse_layers(out["layers"], num_layers)
    return out


def inject_lora(llm: nn.Module, cfg: dict) -> PeftModel:
    """Wrap ``llm`` with LoRA adapters (B = 0) on the layers of a normalised config."""
    config = LoraConfig(r=cfg["r"], lora_alpha=cfg["alpha"], lora_dropout=cfg["dropout"],
                        target_modules=cfg["target_modules"], layers_to_transform=cfg["layers"],
                        layers_pattern="layers", task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft probes a deprecated transformers attribute
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
        return get_peft_model(llm, config)


def lora_params_by_layer(model: nn.Module) -> Dict[int, List[nn.Parameter]]:
    """LoRA parameters grouped by transformer layer index."""
    out: Dict[int, List[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if "lora_" in name:
            m = _LAYER_RE.search(name)
            out.setdefault(int(m.group(1)), []).append(p)
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

