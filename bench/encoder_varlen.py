"""Variable-length vs stock 30 s padded Whisper encoding: forward+backward time of encoder+adapter.

64 utterances with durations uniform in 2-8 s are cut into the project's length-bucketed batches
(partlib.data.batching.make_batches); both variants run the very same batches with the same weights.
Prints per-config times and the speed-up, for a tiny config and a whisper-base-sized one
(random weights). Training steps of the whole paper preset: ``bench/gpu_step.py``.

    python bench/encoder_varlen.py [--threads 1]
"""
from __future__ import annotations

import argparse
import time
from typing import Dict, List

import torch

from partlib.models.adapter import StackAdapter
from partlib.models.encoder import SpeechEncoder, whisper_encoder_from_config
from partlib.data.batching import make_batches
from partlib.data.examples import Example

CONFIGS: Dict[str, dict] = {
    "tiny": dict(num_mel_bins=80, d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64),
    "whisper-base": dict(num_mel_bins=80, d_model=512, encoder_layers=6, encoder_attention_heads=8,
                         encoder_ffn_dim=2048),
}
LLM_WIDTH = 896  # Qwen2.5-0.5B hidden size, a small realistic adapter output


def make_utterances(n: int, seed: int) -> List[Example]:
    """``n`` utterances with durations uniform in 2-8 s (100 frames/s)."""
    g = torch.Generator().manual_seed(seed)
    frames = (200 + torch.rand(n, generator=g) * 600).long().tolist()
    return [Example(key=f"u{i:03d}", utt=f"u{i:03d}", dir_index=0, task="asr", src_lang="en", tgt_lang="en",
                    num_frames=f, src_text=None, target="", n_tokens=f // 8) for i, f in enumerate(frames)]


def time_variant(encoder: SpeechEncoder, adapter: StackAdapter, batches: List[List[torch.Tensor]],
                 device: str) -> float:
    """Seconds for forward+backward over all batches (after one warm-up batch)."""
    def step(feats: torch.Tensor, lens: torch.Tensor) -> None:
        h, hl = encoder(feats, lens)
        y, yl = adapter(h, hl)
        y.square().mean().backward()

    step(*batches[0])
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for feats, lens in batches:
        step(feats, lens)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def bench_encoder(name: str, arch: dict, utts: List[Example], device: str) -> None:
    """Print variable-length and padded times for one encoder size."""
    torch.manual_seed(0)
    whisper = whisper_encoder_from_config({**arch, "max_source_positions": 1500}).to(device)
    adapter = StackAdapter(arch["d_model"], LLM_WIDTH, k=4, hidden=1024).to(device)
    groups = make_batches(utts, max_frames=8 * 800, max_tokens=10 ** 9, max_utts=8)
    g = torch.Generator().manual_seed(1)
    batches = []
    for group in groups:
        lens = torch.tensor([e.num_frames for e in group])
        feats = torch.randn(len(group), int(lens.max()), arch["num_mel_bins"], generator=g)
        batches.append((feats.to(device), lens.to(device)))
    times = {}
    for pad in (False, True):
        enc = SpeechEncoder(whisper, pad_to_30s=pad).train()
        times[pad] = time_variant(enc, adapter, batches, device)
    sizes = [len(b) for b in groups]
    print(f"{name:13s} batches={len(groups)} sizes={sizes}  variable-length {times[False]:8.2f} s   "
          f"padded-30s {times[True]:8.2f} s   speed-up {times[True] / times[False]:5.1f}x", flush=True)


def main() -> None:
    """Parse arguments and run the benchmarks."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    utts = make_utterances(64, seed=0)
    secs = sum(e.num_frames for e in utts) / 100
    print(f"device={args.device} threads={args.threads} utterances=64 total={secs:.0f} s (2-8 s each)")
    for name in args.configs:
        bench_encoder(name, CONFIGS[name], utts, args.device)


if __name__ == "__main__":
    main()
