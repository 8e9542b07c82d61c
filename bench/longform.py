"""Long-form transcription speed on CPU: the real-time factor of one long recording.

Joins the utterances of a data dir (cycled as often as needed) with 0.1-0.4 s pauses into one
recording of ``--minutes`` minutes and transcribes it with :class:`partlib.infer.transcribe.Transcriber`
(voice-activity segmentation, batched greedy decoding, stitching), after a warm-up on its first
minute. Prints the audio length, the segments, the seconds spent in voice activity detection and
in all, and RTF = seconds / seconds of audio.

    python bench/longform.py --model exp/model_part_seed1 --data-dir dump/raw/test_en --lang en \\
        [--minutes 10] [--threads 2]

(run in egs/mini_synth/part1 after ``./run.sh``; any exported model folder and data dir with audio)
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from partlib.data import audio
from partlib.data.audio import TARGET_SR
from partlib.data.datadir import DataDir
from partlib.infer import longform
from partlib.infer.transcribe import Transcriber


def long_recording(data_dir: str, minutes: float, seed: int = 0) -> np.ndarray:
    """The data dir's utterances in sorted order, cycled, with pauses, cut to ``minutes``."""
    d = DataDir.load(data_dir)
    reader = audio.AudioReader(d)
    clips = [reader[u] for u in d.utts]
    need = int(minutes * 60 * TARGET_SR)
    reps = int(np.ceil(need / sum(map(len, clips)))) + 1
    rng = np.random.default_rng(seed)
    samples, _ = audio.concatenate(clips * reps, rng.uniform(0.1, 0.4, size=len(clips) * reps))
    return samples[:need]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="an exported model folder")
    p.add_argument("--data-dir", required=True, help="a data dir with audio (wav.scp)")
    p.add_argument("--lang", required=True, help="its spoken language")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    samples = long_recording(args.data_dir, args.minutes)
    model = Transcriber(args.model, threads=args.threads)
    model((samples[:60 * TARGET_SR], TARGET_SR), src_lang=args.lang, batch_size=args.batch_size)  # warm-up
    start = time.perf_counter()
    segments = longform.plan_segments(samples, model.max_segment_s, model.vad)
    vad_s = time.perf_counter() - start
    start = time.perf_counter()
    (result,) = model((samples, TARGET_SR), src_lang=args.lang, batch_size=args.batch_size)
    total = time.perf_counter() - start
    seconds = len(samples) / TARGET_SR
    print(f"audio {seconds:.1f} s; max segment {model.max_segment_s:.2f} s; {len(result.segments)} segments "
          f"(mean {np.mean([g.end - g.start for g in result.segments]):.2f} s); threads {args.threads}")
    assert len(segments) == len(result.segments)
    print(f"voice activity {vad_s:.2f} s (RTF {vad_s / seconds:.4f}); transcription in all {total:.2f} s "
          f"(RTF {total / seconds:.4f})")


if __name__ == "__main__":
    main()
