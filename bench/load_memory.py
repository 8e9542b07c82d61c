"""Peak host memory of loading each component of the paper preset, against the planner's weights.

The checkpoints are written as the hub ships them, with every tensor zero (no download): Whisper
as a full ``WhisperForConditionalGeneration`` (encoder and decoder) in float16, the LLM in bfloat16
safetensors shards with an index. A fresh process then loads each one the way the model config
does (``partlib.models.encoder.load_whisper_encoder`` in the encoder's dtype, float32 by default;
``partlib.models.llm.load_causal_lm`` in the LLM's) and reports its peak resident set size
growth (Linux VmHWM over the RSS before loading), then the same after every weight was read once
(as moving the model to a GPU does: a memory-mapped safetensors checkpoint is only read then),
beside the planner's figure for the weights the loaded module holds. For reference, the whole ``WhisperModel`` (what loading built before only the
encoder was) is loaded as well.

    python bench/load_memory.py [--work-dir DIR] [--components encoder llm]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import _status_kb, peak_rss  # noqa: E402

from partlib.models.builders import CONFIG_DIR, load_preset  # noqa: E402

SHARD_BYTES = 4 * 2 ** 30


def write_zero_checkpoint(model_cls, config, out: Path, dtype: torch.dtype) -> None:
    """``model_cls(config)``'s state dict as zero tensors of ``dtype`` in safetensors shards of at
    most SHARD_BYTES, with an index when there are several (memory bounded by one shard)."""
    from safetensors.torch import save_file

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in model_cls(config).state_dict().items()}
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(out))
    shards: List[List[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        n = shape.numel() * torch.tensor([], dtype=dtype).element_size()
        if shards[-1] and size + n > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += n
    index = {}
    for i, names in enumerate(shards):
        file = "model.safetensors" if len(shards) == 1 else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: torch.zeros(shapes[k], dtype=dtype) for k in names}, str(out / file), metadata={"format": "pt"})
        index.update({k: file for k in names})
    if len(shards) > 1:
        (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": index}))


def child(kind: str, path: str, dtype: str) -> None:
    """(Subprocess) load one component; print the peak RSS growth and the bytes of its weights."""
    before = _status_kb("VmRSS")
    torch_dtype = getattr(torch, dtype)
    if kind == "encoder":
        from partlib.models.encoder import load_whisper_encoder
        module = load_whisper_encoder(path, torch_dtype)
    elif kind == "whole whisper":
        from transformers import WhisperModel
        module = WhisperModel.from_pretrained(path, dtype=torch_dtype)
    else:
        from partlib.models.llm import load_causal_lm
        module = load_causal_lm(path, None, torch_dtype)
    weights = sum(p.numel() * p.element_size() for p in module.parameters())
    loaded = (peak_rss() - before) * 1024
    anon0, file0 = _status_kb("RssAnon"), _status_kb("RssFile")
    for p in module.parameters():  # read every weight once, as moving the model to a GPU does
        p.detach().max()
    print(json.dumps({"growth": loaded, "weights": weights, "read_peak": (peak_rss() - before) * 1024,
                      "read_anon": (_status_kb("RssAnon") - anon0) * 1024,
                      "read_file": (_status_kb("RssFile") - file0) * 1024}))


def measure(kind: str, path: Path, dtype: str) -> Dict:
    res = subprocess.run([sys.executable, __file__, "--child", kind, str(path), dtype],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"loading {kind} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", type=Path, help="where the checkpoints are written (default: a temp dir)")
    ap.add_argument("--components", nargs="+", default=["encoder", "llm"], choices=["encoder", "llm"])
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    from transformers import AutoConfig, AutoModelForCausalLM, WhisperConfig, WhisperForConditionalGeneration

    from partlib.train import memory

    preset, base = load_preset("paper")
    planner = memory.meta_model({**preset, "encoder": {**preset["encoder"], "arch": str(base / preset["encoder"]["arch"])},
                                 "llm": {**preset["llm"], "arch": str(base / preset["llm"]["arch"])}})
    planned = memory.param_counts(planner).bytes
    enc_dtype = preset["encoder"].get("dtype") or "float32"
    llm_dtype = preset["llm"].get("dtype") or "float32"
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        print("GiB; RSS growth over the process before loading; 'read': after every weight was read once "
              "(its growth split into anonymous memory and file pages: a memory-mapped checkpoint's pages are "
              "page cache, shared by the processes of a node)")
        print(f"{'component':<32}{'checkpoint':>11}{'loaded as':>10}{'loaded':>8}{'read':>7}{'anon':>7}{'file':>7}"
              f"{'weights':>9}{'planner':>9}")
        for comp in args.components:
            if comp == "encoder":
                arch = json.loads((CONFIG_DIR / "whisper-large-v3.json").read_text())
                arch.pop("model_type")
                ckpt = Path(tmp) / "whisper-large-v3"
                write_zero_checkpoint(WhisperForConditionalGeneration, WhisperConfig(**arch), ckpt, torch.float16)
                runs = [("encoder", "whisper-large-v3 encoder", enc_dtype, planned["encoder"]),
                        ("whole whisper", "whisper-large-v3 WhisperModel", enc_dtype, None)]
            else:
                arch = json.loads((CONFIG_DIR / "qwen2.5-7b-instruct.json").read_text())
                ckpt = Path(tmp) / "qwen2.5-7b-instruct"
                config = AutoConfig.for_model(arch.pop("model_type"), **arch)
                write_zero_checkpoint(AutoModelForCausalLM.from_config, config, ckpt, torch.bfloat16)
                runs = [("llm", "Qwen2.5-7B-Instruct", llm_dtype, planned["llm"])]
            on_disk = sum(f.stat().st_size for f in ckpt.glob("*.safetensors"))
            for kind, name, dtype, plan in runs:
                m = measure(kind, ckpt, dtype)
                g = {k: m[k] / 2 ** 30 for k in ("growth", "read_peak", "read_anon", "read_file", "weights")}
                ref = f"{plan / 2 ** 30:>9.2f}" if plan is not None else f"{'':>9}"
                print(f"{name:<32}{on_disk / 2 ** 30:>11.2f}{dtype:>10}{g['growth']:>8.2f}{g['read_peak']:>7.2f}"
                      f"{g['read_anon']:>7.2f}{g['read_file']:>7.2f}{g['weights']:>9.2f}{ref}", flush=True)
            for f in ckpt.glob("*.safetensors"):
                f.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
