"""Gradient synchronisation of the ``ddp`` strategy: one all-reduce per parameter after backward
(the reduction partlib used before) against :class:`partlib.train.distributed.GradReducer`
(buckets, reduced while backward runs), on 2 CPU processes (gloo).

The model is a Whisper encoder of whisper-small size (12 layers, d_model 768, ~88 M parameters in
~200 tensors) trained in full on random log-mel batches; both reductions see the same batches, in
alternating steps after a warm-up, and their summed gradients are compared element by element.

Per step and rank: *step* is forward + backward + reduction; *communication* is the time the step
spends reducing that backward does not hide: the per-parameter loop for the baseline, and for the
buckets the launches inside backward's hooks plus :meth:`GradReducer.finish` (waiting and
setting the gradients).

    python bench/grad_sync.py [--steps 8] [--frames 400] [--batch 2] [--bucket-mb 25] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import time
from pathlib import Path
from typing import Dict, List

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from partlib.models.builders import CONFIG_DIR
from partlib.models.encoder import SpeechEncoder, whisper_encoder_from_config
from partlib.train.distributed import GradReducer


def per_parameter_all_reduce(params: List[torch.nn.Parameter]) -> None:
    """The baseline: a flag all-reduce, then one all-reduce per parameter with a gradient."""
    flags = torch.tensor([p.grad is not None for p in params], dtype=torch.float32)
    dist.all_reduce(flags)
    for p, f in zip(params, flags.tolist()):
        if f == 0:
            p.grad = None
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)


class _Timed(GradReducer):
    """GradReducer that adds the time of its launches (inside backward) and of finish()."""

    spent = 0.0

    def _launch(self, b: int) -> None:
        t = time.perf_counter()
        super()._launch(b)
        self.spent += time.perf_counter() - t

    def finish(self) -> None:
        t = time.perf_counter()
        super().finish()
        self.spent += time.perf_counter() - t


def _worker(rank: int, port: int, args: argparse.Namespace, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)  # the same initial weights on both ranks
    encoder = SpeechEncoder(whisper_encoder_from_config(CONFIG_DIR / "whisper-small.json"))
    params = [p for p in encoder.parameters() if p.requires_grad]
    reducer = _Timed(params, args.bucket_mb)
    gen = torch.Generator().manual_seed(rank)
    times: Dict[str, Dict[str, List[float]]] = {k: {"step": [], "comm": []} for k in ("per-parameter", "buckets")}
    max_diff = 0.0
    for step in range(2 * (args.steps + 1)):
        feats = torch.randn(args.batch, args.frames, encoder.n_mels, generator=gen)
        lens = torch.full((args.batch,), args.frames, dtype=torch.long)
        grads = {}
        for kind in ("per-parameter", "buckets") if step % 2 == 0 else ("buckets", "per-parameter"):
            encoder.zero_grad(set_to_none=True)
            dist.barrier()
            t0 = time.perf_counter()
            if kind == "buckets":
                reducer.spent = 0.0
                reducer.arm()
            h, _ = encoder(feats, lens)
            h.pow(2).mean().backward()
            if kind == "buckets":
                reducer.finish()
                comm = reducer.spent
            else:
                t1 = time.perf_counter()
                per_parameter_all_reduce(params)
                comm = time.perf_counter() - t1
            total = time.perf_counter() - t0
            if step >= 2:  # the first pair warms up allocator and gloo
                times[kind]["step"].append(total)
                times[kind]["comm"].append(comm)
            grads[kind] = [p.grad.clone() for p in params]
        max_diff = max(max_diff, max(float((a - b).abs().max()) for a, b in zip(grads["per-parameter"], grads["buckets"])))
    out.put({"rank": rank, "times": times, "max_diff": max_diff, "tensors": len(params),
             "params": sum(p.numel() for p in params), "buckets": len(reducer.buckets)})
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8, help="measured steps per reduction")
    ap.add_argument("--frames", type=int, default=400, help="log-mel frames per utterance")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--bucket-mb", type=float, default=25.0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, port, args, out)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted((out.get() for _ in procs), key=lambda r: r["rank"])
    for p in procs:
        p.join()
    r0 = results[0]
    print(f"whisper-small-size encoder trained in full: {r0['params'] / 1e6:.1f} M parameters in {r0['tensors']} "
          f"tensors; 2 gloo processes, {args.threads} thread(s) each; batch {args.batch} x {args.frames} frames; "
          f"{args.steps} steps per reduction (median over steps, max over ranks)")
    summary = {}
    for kind in ("per-parameter", "buckets"):
        step = max(statistics.median(r["times"][kind]["step"]) for r in results)
        comm = max(statistics.median(r["times"][kind]["comm"]) for r in results)
        summary[kind] = {"step_s": step, "comm_s": comm}
        label = kind if kind == "per-parameter" else f"buckets of {args.bucket_mb:g} MiB ({r0['buckets']})"
        print(f"  {label:<28} step {step * 1e3:8.1f} ms   communication {comm * 1e3:8.1f} ms")
    pp, bk = summary["per-parameter"], summary["buckets"]
    diff = max(r["max_diff"] for r in results)
    print(f"  communication: {pp['comm_s'] / bk['comm_s']:.1f} x less; step: {pp['step_s'] / bk['step_s']:.2f} x "
          f"faster; largest gradient difference {diff:.2g}")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "summary": summary,
                                         "max_diff": diff}, indent=2))


if __name__ == "__main__":
    main()
