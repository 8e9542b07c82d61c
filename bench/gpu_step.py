"""Training steps of every stage of a schedule at its per-GPU batch: step time, tokens/s, peak
memory, MFU, with gradient checkpointing on and off, and the memory planner's prediction beside
each measured peak.

Default: the paper preset (Whisper-large-v3 + Qwen2.5-7B-Instruct, random weights built directly
on the device, bf16 autocast as the trainer runs it on GPU, SDPA attention) and the Common Voice
PART schedule at paper scale, with the per-GPU micro-batch of an ``--gpus``-GPU run (the planner's
largest batch of each stage). ``--tiny`` runs the same code with the toy models of the test suite
(a CPU check of this script). An out-of-memory step is a result (``OOM``), not a crash.

Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA; on CPU, the peak RSS growth over the
process's RSS before the model was built (glibc's mmap threshold fixed so that RSS follows live
tensors, as in ``bench/memory_plan.py``). MFU: model FLOPs (2 x parameters x tokens per pass:
forward, input gradients where a gradient flows, weight gradients where parameters train; plus
attention scores; recomputation not counted) over ``--peak-tflops``.

    python bench/gpu_step.py [--model-config M] [--schedule S] [--gpus 8] [--steps 3] [--tiny]
        [--peak-tflops 989] [--stages NAME ...]
"""
from __future__ import annotations

import argparse
import ctypes
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import _status_kb, peak_rss, reset_peak_rss  # noqa: E402

from partlib import tasks  # noqa: E402
from partlib.models import builders  # noqa: E402
from partlib.models.lora import unwrap  # noqa: E402
from partlib.train import memory  # noqa: E402
from partlib.train.schedule import apply_stage_trainable, load_schedule  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCHEDULE = REPO / "egs" / "commonvoice15" / "part1" / "conf" / "schedule_part.yaml"
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}  # dense bf16
WORDS = "the quick brown fox jumps over a lazy dog near our river bank at night".split()


def make_batch(shape: memory.BatchShape, n_mels: int, tokenizer) -> Dict:
    """A batch of ``shape``'s task: ``rows`` utterances (or texts) with targets of the planned
    token count (one word is about one token)."""
    n = shape.rows
    per_row = max(1, shape.targets // n - 1)
    text = " ".join(WORDS[i % len(WORDS)] for i in range(per_row))
    speech = tasks.get(shape.task).speech
    g = torch.Generator().manual_seed(0)
    return {"utt_ids": [f"u{i}" for i in range(n)], "tasks": [shape.task] * n, "src_langs": ["en"] * n,
            "tgt_langs": ["de" if tasks.get(shape.task).cross_lingual else "en"] * n,
            "feats": torch.randn(n, shape.frames, n_mels, generator=g) if speech else None,
            "feat_lens": torch.full((n,), shape.frames) if speech else None,
            "src_texts": [None if speech else text] * n, "targets": [text] * n}


def model_flops(model, shape: memory.BatchShape, n_targets: int) -> float:
    """Model FLOPs of one training step (recomputation not counted): per module 2 x parameters x
    positions for the forward, again for the input gradients where a gradient must pass (the
    module or one before it trains), again for the weight gradients where it trains; attention
    scores and the output head on the target positions alike."""
    speech = shape.rows * shape.frames
    embeds = shape.rows * model.speech_embed_length(shape.frames) if shape.frames else 0
    llm = unwrap(model.llm)
    flops, upstream = 0.0, False
    for module, positions in ((model.encoder, speech // 2), (model.adapter, embeds),
                              (llm.get_decoder(), shape.rows * shape.tokens)):
        trains = any(p.requires_grad for p in module.parameters())
        passes = 1 + (trains or upstream) + trains
        flops += 2 * sum(p.numel() for p in module.parameters()) * positions * passes
        upstream = upstream or trains
    cfg = llm.config
    causal_scores = 2 * 2 * shape.rows * shape.tokens ** 2 * cfg.hidden_size * cfg.num_hidden_layers / 2
    flops += causal_scores * 3
    head = llm.get_output_embeddings().weight
    flops += 2 * head.numel() * n_targets * (2 + head.requires_grad)
    return flops


def step(model, batch: Dict, opt, device: torch.device) -> int:
    """One training step; returns the target tokens."""
    with torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False):
        out = model(batch)
    out["loss_sum"].backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return int(out["n_tokens"])


def run(args: argparse.Namespace) -> List[Dict]:
    """Measure every stage with checkpointing on and off; one result row each."""
    from partlib.models.speech_llm import SpeechLLM
    from partlib.train.optim import build_optimizer

    device = torch.device(args.device)
    rows: List[Dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            cfg = builders.tiny_model_config(Path(tmp), lora=False)
        elif args.model_config:
            cfg = yaml.safe_load(Path(args.model_config).read_text())
        else:
            cfg, base = builders.load_preset("paper")
            for sec in ("encoder", "llm"):
                cfg[sec]["arch"] = str(base / cfg[sec]["arch"])
        if cfg["llm"].get("tokenizer") is None and cfg["llm"].get("path") is None:
            builders.build_tiny_tokenizer(Path(tmp) / "tok")
            cfg["llm"]["tokenizer"] = str(Path(tmp) / "tok")
        schedule = load_schedule(args.schedule)
        planner = memory.meta_model(cfg)
        setup = memory.Setup(gpus=args.gpus, device="cuda" if device.type == "cuda" else "cpu")
        before = _status_kb("VmRSS")
        model = SpeechLLM.from_config(cfg, device=str(device))
        model.train()
        peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items()
                                         if device.type == "cuda" and k in torch.cuda.get_device_name()), None)
        for stage in schedule.stages:
            if args.stages and stage.name not in args.stages:
                continue
            apply_stage_trainable(model, stage)
            shape = memory.plan_stage(planner, stage, setup, float("inf")).plans["off"].shape
            batch = make_batch(shape, model.n_mels, model.tokenizer)
            opt = build_optimizer([p for p in model.parameters() if p.requires_grad], stage.optim)
            for ckpt, parts in memory.CHECKPOINTING.items():
                model.set_gradient_checkpointing(ckpt == "on", ckpt == "on")
                real = memory.batch_shape(model, batch)
                predicted = memory.predict(planner, real, memory.Setup(gpus=1, device=setup.device,
                                                                       accum_grad=1), parts).peak
                row = {"stage": stage.name, "ckpt": ckpt, "batch": real.describe(), "predicted": predicted}
                try:
                    times, n_tokens = [], 0
                    for i in range(args.steps):
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                            torch.cuda.reset_peak_memory_stats()
                        else:
                            reset_peak_rss()
                        t0 = time.perf_counter()
                        n_tokens = step(model, batch, opt, device)
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                        times.append(time.perf_counter() - t0)
                    dt = min(times[1:] or times)  # the first step also allocates the optimizer state
                    measured = (torch.cuda.max_memory_allocated() if device.type == "cuda"
                                else (peak_rss() - before) * 1024)
                    flops = model_flops(model, real, n_tokens)
                    row.update(step_s=dt, tokens_s=real.rows * real.tokens / dt, measured=measured,
                               mfu=flops / dt / (peak * 1e12) if peak else None)
                except torch.OutOfMemoryError:
                    row.update(oom=True)
                    opt.zero_grad(set_to_none=True)
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                rows.append(row)
                print(_format(row), flush=True)
            del opt
    return rows


def _format(row: Dict) -> str:
    head = f"{row['stage']:<15}{row['ckpt']:<5}{row['batch']:<58}"
    if row.get("oom"):
        return head + f"{'OOM':>10}{'':>12}{'':>10}{row['predicted'] / memory.GIB:>10.2f}{'':>8}"
    mfu = f"{row['mfu']:.1%}" if row.get("mfu") is not None else "n/a"
    err = f"{(row['predicted'] - row['measured']) / row['measured']:+.1%}" if row["measured"] > 0 else "n/a"
    return (head + f"{row['step_s'] * 1000:>10.0f}{row['tokens_s']:>12.0f}{row['measured'] / memory.GIB:>10.2f}"
            f"{row['predicted'] / memory.GIB:>10.2f}{err:>8}{mfu:>8}")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-config", help="a model YAML (default: the paper preset, random weights)")
    ap.add_argument("--schedule", default=str(SCHEDULE))
    ap.add_argument("--gpus", type=int, default=8, help="the run whose per-GPU micro-batch is measured")
    ap.add_argument("--steps", type=int, default=3, help="steps per setting (the fastest after the first counts)")
    ap.add_argument("--stages", nargs="*", help="only these stages")
    ap.add_argument("--tiny", action="store_true", help="toy models (a CPU check of this script)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak (default: by GPU name)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads")
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    if torch.device(args.device).type == "cpu":
        try:  # freed tensors leave the resident set at once (M_MMAP_THRESHOLD = -3)
            ctypes.CDLL("libc.so.6").mallopt(-3, 65536)
        except OSError:
            pass
    name = torch.cuda.get_device_name() if torch.device(args.device).type == "cuda" else "cpu"
    print(f"device {name}, torch {torch.__version__}, per-GPU batch of a {args.gpus}-GPU run; "
          f"memory GiB; error = (predicted - measured) / measured")
    print(f"{'stage':<15}{'ckpt':<5}{'batch per GPU':<58}{'step ms':>10}{'tokens/s':>12}{'peak':>10}"
          f"{'planner':>10}{'error':>8}{'MFU':>8}")
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
