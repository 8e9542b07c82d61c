"""Decoding speed on CPU: real-time factor and utterances/s at batch 1 and batch 16, and the ratio.

Times ``partlib.infer.decode.decode_dir`` (greedy search with the KV cache, length-sorted batches,
feature loading and output writing included) on a fixed set of utterances, after one warm-up decode;
the best of ``--repeats`` runs counts. RTF = decoding seconds / seconds of audio. Target: batch 16
at least 4x the utterances/s of batch 1.

Default model: a tiny model (real Whisper/Qwen2 architectures at toy sizes) built and briefly
trained on synthetic data in a temp dir; default test set: 32 synthetic utterances (lognormal
durations, median 4 s) with dumped features.

    python bench/decode.py [--model-dir exp/.../model] [--data-dir data/test] [--threads 1]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Dict, Tuple

import torch

from partlib.data.datadir import DataDir
from partlib.data.examples import utt_num_frames
from partlib.infer.decode import decode_dir
from train_step import synth_data_dir, tiny_config


def train_tiny_model(work_dir: Path, steps: int) -> Path:
    """Build a tiny model and train it briefly on synthetic ASR data; return the exported model dir."""
    from partlib.train.schedule import parse_schedule
    from partlib.train.trainer import Trainer

    synth_data_dir(work_dir / "data" / "train", 160, seed=1)
    sched = {"seed": 1, "stages": [{
        "name": "s1", "max_steps": steps, "log_interval": steps, "save_interval": steps,
        "optim": {"lr": 3e-3}, "scheduler": {"type": "constant"}, "batch": {"max_frames": 6000, "max_tokens": 4000},
        "tasks": [{"task": "asr", "data": ["train"]}],
        "trainable": {"encoder": "full", "adapter": "full", "llm": "full"}}]}
    return Trainer(parse_schedule(sched), tiny_config(work_dir / "models", 32), work_dir / "exp",
                   data_root=str(work_dir / "data"), tensorboard=False).run()[0]


def time_decode(model, data_dir: Path, out_dir: Path, batch_size: int, repeats: int) -> Tuple[float, Dict[str, str]]:
    """Best wall-clock seconds of ``repeats`` decodes at ``batch_size``, and the hypotheses."""
    best, hyps = float("inf"), {}
    for r in range(repeats):
        t0 = time.perf_counter()
        hyps = decode_dir(model, data_dir, out_dir / f"b{batch_size}_{r}", batch_size=batch_size,
                          batch_frames=10**9)
        best = min(best, time.perf_counter() - t0)
    return best, hyps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", help="an exported model dir (default: a tiny model trained in a temp dir)")
    p.add_argument("--data-dir", help="test data dir (default: 32 synthetic utterances)")
    p.add_argument("--num-utts", type=int, default=32, help="utterances of the synthetic test set")
    p.add_argument("--train-steps", type=int, default=60, help="training steps of the default model")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)

    from partlib.models.speech_llm import SpeechLLM

    with tempfile.TemporaryDirectory(prefix="bench_decode_") as tmp:
        tmp_path = Path(tmp)
        if args.model_dir:
            model_dir, what_model = Path(args.model_dir), args.model_dir
        else:
            model_dir = train_tiny_model(tmp_path, args.train_steps)
            what_model = (f"none given: built a tiny model and trained it {args.train_steps} steps on "
                          "synthetic ASR data in a temp dir")
        if args.data_dir:
            data_dir, what_data = Path(args.data_dir), args.data_dir
        else:
            data_dir = tmp_path / "data" / "test"
            synth_data_dir(data_dir, args.num_utts, seed=2)
            what_data = f"none given: {args.num_utts} synthetic utterances (lognormal durations, median 4 s)"
        model = SpeechLLM.from_pretrained(model_dir)
        d = DataDir.load(data_dir)
        audio_s = sum(utt_num_frames(d, u) for u in d.utts) / 100
        print(f"model: {what_model}\ndata:  {what_data}\n       {len(d.utts)} utts, {audio_s:.1f} s of audio")
        print(f"torch threads: {torch.get_num_threads()} (interop {torch.get_num_interop_threads()}), "
              f"torch {torch.__version__}, greedy search; shared machines give noisy numbers\n")

        decode_dir(model, data_dir, tmp_path / "warmup", batch_size=16, batch_frames=10**9)
        rows = {}
        for bs in (1, 16):
            rows[bs] = time_decode(model, data_dir, tmp_path / "dec", bs, args.repeats)
        n = len(d.utts)
        print(f"{'batch':>5}{'seconds':>10}{'RTF':>9}{'utts/s':>9}{'words/hyp':>11}")
        for bs, (secs, hyps) in rows.items():
            words = sum(len(h.split()) for h in hyps.values()) / n
            print(f"{bs:>5}{secs:>10.2f}{secs / audio_s:>9.4f}{n / secs:>9.2f}{words:>11.1f}")
        ratio = rows[1][0] / rows[16][0]
        print(f"\nbatch 16 / batch 1 utts/s: {ratio:.2f}x (target >= 4x: {'met' if ratio >= 4 else 'NOT met'})")
        print(f"hypotheses identical at batch 1 and 16: {rows[1][1] == rows[16][1]}")


if __name__ == "__main__":
    main()
