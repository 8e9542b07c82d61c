"""Checkpoint averaging on merged weights (LoRA folded into its base layer first).

Averaging LoRA factors A and B separately would not average the updates they stand for
(mean(B)·mean(A) ≠ mean(B·A)); averaging the merged weights does.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable, Dict, Sequence

import torch

from partlib.common import PathLike


def average_merged(model, ckpt_paths: Sequence[PathLike], out_dir: PathLike,
                   model_state: Callable[[PathLike], Dict[str, torch.Tensor]]) -> None:
    """Load each training checkpoint into ``model`` (its entries read by ``model_state``:
    :meth:`partlib.train.checkpoint.CheckpointManager.model_state`), export it merged, average the
    exported weights (floating-point tensors only) and save the average as a self-contained model
    directory ``out_dir``."""
    from partlib.models.speech_llm import SpeechLLM

    acc: Dict[str, torch.Tensor] = {}
    first = None
    with tempfile.TemporaryDirectory(dir=Path(out_dir).parent) as tmp:
        for i, path in enumerate(ckpt_paths):
            model.load_state_dict(model_state(path), strict=False)
            exported = Path(tmp) / f"m{i}"
            model.save_pretrained(exported, merge_lora=True)
            merged = SpeechLLM.from_pretrained(exported)
            for k, v in merged.state_dict().items():
                if v.is_floating_point():
                    acc[k] = acc[k] + v.double() if k in acc else v.double().clone()
            if first is None:
                first = merged
            else:
                shutil.rmtree(exported)
        n = float(len(ckpt_paths))
        sd = first.state_dict()
        first.load_state_dict({k: (acc[k] / n).to(sd[k].dtype) if k in acc else sd[k] for k in sd})
        first.save_pretrained(out_dir, self_contained=True)
