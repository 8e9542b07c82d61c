"""The memory planner (``partlib.train.memory``, ``python -m partlib.bin.plan``) against measurement.

For each model size and trainable spec, a fresh process builds the model with random weights,
runs AdamW training steps (forward, backward, optimizer; the trainer's optimizer builder) on one
batch and reports its peak resident set size during the steps (Linux VmHWM, reset just before
them) minus its resident size before the model was built: weights, gradients, optimizer state,
activations and temporaries, as the planner counts them. The measured processes run with glibc's
mmap threshold fixed at 64 KiB (``MALLOC_MMAP_THRESHOLD_``), so that a freed tensor leaves the
resident set at once and RSS follows the live tensors, as ``torch.cuda.max_memory_allocated``
does on a GPU; ``--default-malloc`` measures with glibc's defaults instead, whose heap keeps
freed memory for reuse (the peak then also holds that retention). The planner predicts the same batch (its
shape read from the real prompt batch) on the meta device, for the CPU (float32 compute, no
autocast, single-tensor AdamW). Prints predicted, measured and the error.

Sizes: whisper-base + Qwen2.5-0.5B (float32 LLM) and whisper-small + Qwen2.5-0.5B (bfloat16 LLM,
as the paper preset keeps its LLM), random weights; specs as in the schedules: LLM frozen, LoRA
(r 16 on q, k, v, o of every layer), full; encoder and adapter train in all three.

    python bench/memory_plan.py [--sizes base small] [--specs frozen lora full] [--rows 4]
        [--seconds 6] [--steps 3] [--grad-ckpt] [--llm-layers N] [--threads 2] [--default-malloc]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import _status_kb, peak_rss, reset_peak_rss  # noqa: E402  (the same RSS method)

from partlib.models.builders import CONFIG_DIR, build_tiny_tokenizer  # noqa: E402

LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "layers": "all"}
SPECS = {"frozen": "frozen", "lora": {"lora": LORA}, "full": "full"}
SIZES = {
    "base": ("whisper-base.json", "qwen2.5-0.5b-instruct.json", "float32"),
    "small": ("whisper-small.json", "qwen2.5-0.5b-instruct.json", "bfloat16"),
}
WORDS = "the quick brown fox jumps over a lazy dog near our river bank at night".split()


def model_config(size: str, tokenizer: str, grad_ckpt: bool, work_dir: Path, llm_layers: int = 0) -> dict:
    """The model config of ``size`` with random weights (``arch``) and a toy tokenizer;
    ``llm_layers`` > 0 keeps only that many LLM layers (a quicker run of the same widths)."""
    enc, llm, dtype = SIZES[size]
    llm_arch = CONFIG_DIR / llm
    if llm_layers:
        arch = json.loads(llm_arch.read_text())
        arch.update(num_hidden_layers=llm_layers, max_window_layers=llm_layers)
        llm_arch = work_dir / f"{size}-llm-{llm_layers}.json"
        llm_arch.write_text(json.dumps(arch))
    return {"encoder": {"arch": str(CONFIG_DIR / enc), "gradient_checkpointing": grad_ckpt},
            "adapter": {"type": "stack", "stack": 4, "hidden": 1024},
            "llm": {"arch": str(llm_arch), "dtype": dtype, "tokenizer": tokenizer,
                    "gradient_checkpointing": grad_ckpt},
            "prompt": {"system": None}}


def make_batch(rows: int, frames: int, n_mels: int) -> dict:
    """A training batch of ``rows`` ASR utterances of ``frames`` frames, targets of unequal length."""
    g = torch.Generator().manual_seed(0)
    targets = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(10 + 4 * i)) for i in range(rows)]
    return {"utt_ids": [f"u{i}" for i in range(rows)], "tasks": ["asr"] * rows, "src_langs": ["en"] * rows,
            "tgt_langs": ["en"] * rows, "feats": torch.randn(rows, frames, n_mels, generator=g),
            "feat_lens": torch.full((rows,), frames), "src_texts": [None] * rows, "targets": targets}


def child(args: argparse.Namespace) -> None:
    """(Subprocess) measure: build, set trainable, AdamW steps on one batch; print JSON."""
    from partlib.models.speech_llm import SpeechLLM
    from partlib.train import memory
    from partlib.train.optim import Optim, build_optimizer

    cfg = json.loads(args.child)
    before = _status_kb("VmRSS")
    model = SpeechLLM.from_config(cfg["model"])
    model.apply_trainable({"encoder": "full", "adapter": "full", "llm": SPECS[cfg["spec"]]})
    model.train()
    batch = make_batch(args.rows, int(args.seconds * 100), model.n_mels)
    shape = memory.batch_shape(model, batch)  # as the model builds it: padded length, target tokens
    params = [p for p in model.parameters() if p.requires_grad]
    opt = build_optimizer(params, Optim())
    reset_peak_rss()
    for _ in range(args.steps):
        out = model(batch)
        out["loss_sum"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    print(json.dumps({"growth": (peak_rss() - before) * 1024, "shape": dataclasses.asdict(shape)}))


def measure(model_cfg: dict, spec: str, args: argparse.Namespace) -> Dict:
    """Run :func:`child` in a fresh interpreter and return its JSON."""
    cmd = [sys.executable, __file__, "--threads", str(args.threads), "--rows", str(args.rows),
           "--seconds", str(args.seconds), "--steps", str(args.steps),
           "--child", json.dumps({"model": model_cfg, "spec": spec})]
    env = dict(os.environ)
    if not args.default_malloc:  # freed tensors go back to the OS at once: RSS follows the live tensors
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"measurement of {spec} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def predicted(model_cfg: dict, spec: str, m: Dict, args: argparse.Namespace):
    """The planner's plan for the measured batch's shape, on the CPU."""
    from partlib.train import memory

    model = memory.meta_model(model_cfg)
    model.apply_trainable({"encoder": "full", "adapter": "full", "llm": SPECS[spec]})
    parts = memory.CHECKPOINTING["on" if args.grad_ckpt else "off"]
    return memory.predict(model, memory.BatchShape(**m["shape"]), memory.Setup(device="cpu"), parts)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--specs", nargs="+", default=list(SPECS), choices=list(SPECS))
    ap.add_argument("--rows", type=int, default=4, help="utterances in the batch")
    ap.add_argument("--seconds", type=float, default=6.0, help="duration of each utterance")
    ap.add_argument("--steps", type=int, default=3, help="AdamW steps measured")
    ap.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing in encoder and LLM")
    ap.add_argument("--llm-layers", type=int, default=0, help="keep only this many LLM layers (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--default-malloc", action="store_true",
                    help="measure under glibc's default allocator settings (it keeps freed memory)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    return ap


def validate(args: argparse.Namespace) -> Iterator[Dict]:
    """Per size and spec: the plan, the measurement and the relative error of the predicted peak."""
    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_tokenizer(tmp)
        for size in args.sizes:
            cfg = model_config(size, tmp, args.grad_ckpt, Path(tmp), args.llm_layers)
            for spec in args.specs:
                m = measure(cfg, spec, args)
                p = predicted(cfg, spec, m, args)
                yield {"size": size, "spec": spec, "plan": p, "measured": m["growth"],
                       "error": (p.peak - m["growth"]) / m["growth"]}


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        child(args)
        return 0
    from partlib.train.memory import gib

    print(f"{args.rows} utterances x {args.seconds:g} s, {args.steps} AdamW steps, gradient checkpointing "
          f"{'on' if args.grad_ckpt else 'off'}; GiB; error = (predicted - measured) / measured")
    print(f"{'size':<7}{'spec':<8}{'weights':>8}{'grads':>7}{'optim':>7}{'activ':>7}{'lossg':>7}{'steptmp':>8}"
          f"{'predicted':>10}{'measured':>10}{'error':>8}")
    worst = 0.0
    for r in validate(args):
        p = r["plan"]
        worst = max(worst, abs(r["error"]))
        print(f"{r['size']:<7}{r['spec']:<8}{gib(p.weights):>8}{gib(p.grads):>7}{gib(p.optimizer):>7}"
              f"{gib(p.activations):>7}{gib(p.loss_grads):>7}{gib(p.step_temps):>8}{gib(p.peak):>10}"
              f"{gib(r['measured']):>10}"
              f"{r['error']:>+8.1%}", flush=True)
    print(f"largest |error|: {worst:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
