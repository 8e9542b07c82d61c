"""Saving and loading a SpeechLLM directory.

Layout written by :func:`save_model` (assembled next to the target and renamed into place)::

    config.yaml          the model config; encoder.path / llm.path point inside the dir or, unless
                         the folder is self-contained, to unchanged pretrained weights (an absolute
                         local path or a hub id)
    adapter.safetensors  the adapter
    encoder/             Whisper encoder weights, if they were trained or are random
    llm/                 full LLM weights (trained, merged with LoRA, or random) + tokenizer
    lora/                LoRA factors in peft format over a referenced base LLM (not merged)
    tokenizer/           the tokenizer with its chat template
    state.json           {"lora_active_layers": [...]}

A *self-contained* folder (``self_contained=True``: what training exports) holds every weight it
needs and names no path outside itself, so it can be copied anywhere. Weights are safetensors only;
:func:`read_config` refuses a folder with pickled weights (``*.bin``, ``*.pt``, ...), which can run
code when loaded.

This module knows the folder, not the model class: :meth:`SpeechLLM.from_pretrained
<partlib.models.speech_llm.SpeechLLM.from_pretrained>` builds the model from :func:`read_config`'s
config and fills it with :func:`load_weights`, and :meth:`~partlib.models.speech_llm.SpeechLLM.save_pretrained`
calls :func:`save_model`, so the model module imports this one and never the other way round.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path

import yaml
from peft import set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import nn

from partlib.common import DataError, PathLike, atomic_write, named_write_errors, replace_dir
from partlib.models.lora import merged_state_dict, unwrap


def _reference(path: str) -> str:
    """How a saved model refers to unchanged pretrained weights: an absolute local path or the hub id."""
    return os.path.abspath(path) if os.path.exists(path) else path


PICKLED = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt")


def read_config(path: PathLike) -> dict:
    """The model config of a directory written by :func:`save_model`, after checking that it is
    one and holds no pickled weights."""
    path = Path(path)
    if not (path / "config.yaml").is_file():
        raise DataError("not a saved SpeechLLM directory (no config.yaml)", path)
    pickled = sorted(p for pattern in PICKLED for p in path.rglob(pattern))
    if pickled:
        raise DataError("pickled weights are refused (they can run code when loaded); "
                        "re-save the model as safetensors", pickled[0])
    return yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))


def load_weights(model: nn.Module, path: PathLike) -> None:
    """Fill a SpeechLLM built from the :func:`read_config` of ``path`` with the adapter and LoRA
    weights and the active LoRA layers stored there (its encoder and LLM came with the config)."""
    path = Path(path)
    # weights stored inside this directory are copied on the next save, never referenced
    model.encoder_weights_modified = (path / "encoder").is_dir()
    model.llm_weights_modified = (path / "llm").is_dir()
    model.adapter.load_state_dict(load_file(str(path / "adapter.safetensors")))
    if model.lora_config is not None:
        set_peft_model_state_dict(model.llm, load_file(str(path / "lora" / "adapter_model.safetensors")))
        state = json.loads((path / "state.json").read_text())
        model.set_lora_active_layers(state["lora_active_layers"])


def save_model(model: nn.Module, path: PathLike, merge_lora: bool = False, self_contained: bool = False) -> None:
    """Write a SpeechLLM's config.yaml, adapter.safetensors, tokenizer/, state.json, encoder/ (if its weights
    were trained or are random, or ``self_contained``; else config.yaml refers to the pretrained
    ones) and llm/ (full weights: trained, merged, random, or ``self_contained``) and/or lora/
    (peft format, unless ``merge_lora``).

    The directory is assembled next to ``path`` and renamed into place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        with named_write_errors(path):
            _write(model, tmp, merge_lora, self_contained)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write(model: nn.Module, out: Path, merge_lora: bool, self_contained: bool) -> None:
    cfg = copy.deepcopy(model.config)
    enc_cfg = {k: v for k, v in cfg["encoder"].items() if k != "arch"}
    if model.encoder_weights_modified or cfg["encoder"].get("path") is None or self_contained:
        model.encoder.whisper.save_pretrained(out / "encoder")
        enc_cfg["path"] = "encoder"
    else:
        enc_cfg["path"] = _reference(cfg["encoder"]["path"])
    cfg["encoder"] = enc_cfg
    save_file({k: v.contiguous() for k, v in model.adapter.state_dict().items()}, str(out / "adapter.safetensors"))
    llm_cfg = {k: v for k, v in cfg["llm"].items() if k not in ("arch", "tokenizer")}
    has_lora = model.lora_config is not None
    save_llm = merge_lora or model.llm_weights_modified or cfg["llm"].get("path") is None or self_contained
    if save_llm:
        base = unwrap(model.llm)
        if has_lora and merge_lora:
            state = merged_state_dict(model.llm)
        elif has_lora:  # LoRA stays separate (lora/): save the base weights without it
            state = {k.replace(".base_layer.", "."): v for k, v in base.state_dict().items() if "lora_" not in k}
        else:
            state = base.state_dict()
        base.save_pretrained(out / "llm", state_dict=state)
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(out / "llm")
        llm_cfg["path"] = "llm"
    else:
        llm_cfg["path"] = _reference(cfg["llm"]["path"])
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(out / "tokenizer")
        llm_cfg["tokenizer"] = "tokenizer"
    cfg["llm"] = llm_cfg
    if has_lora and not merge_lora:
        model.llm.save_pretrained(out / "lora")
        (out / "lora" / "README.md").unlink(missing_ok=True)  # peft's card template; the folder has its own
        # peft records where the base model was loaded from; name the base this folder uses instead
        # (its own llm/ when saved, else the reference), so that the folder names no other place
        adapter_config = out / "lora" / "adapter_config.json"
        peft_cfg = json.loads(adapter_config.read_text(encoding="utf-8"))
        peft_cfg["base_model_name_or_path"] = "../llm" if llm_cfg["path"] == "llm" else llm_cfg["path"]
        atomic_write(adapter_config, json.dumps(peft_cfg, indent=2, sort_keys=True) + "\n")
        cfg["lora"] = dict(model.lora_config)
    else:
        cfg.pop("lora", None)
    active = model.lora_active_layers if has_lora and not merge_lora else []
    atomic_write(out / "state.json", json.dumps({"lora_active_layers": active}) + "\n")
    atomic_write(out / "config.yaml", yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
