"""Training data at scale: the streaming loader over Lhotse Shar exports (``--features shards``)
against today's in-memory path (``StageData`` examples, ``AudioReader`` + ``FeatureSource``, the
mixture sampler's shuffled order), all measured in one run on this machine.

1. loader memory per rank: RSS growth over the process's RSS after imports, to the first batch,
   at a simulated 1,000,000-utterance corpus (synthetic metadata, one shared short clip), in-memory
   vs streaming, and streaming at 100,000 vs 1,000,000;
2. time from loader construction to the first batch at 1,000,000 utterances;
3. utterances per second with features, 2 workers, 2,000 short utterances, and files opened per
   epoch (cut files and audio tars, counted in-process) against the number of shards;
4. WenetSpeech-like data (30-minute recordings, 3 s segments): export throughput, and reading
   in training order against ``AudioReader`` (which decodes the whole recording per segment);
5. bytes per audio hour of espeak-ng speech (silence trimmed): FLAC shards and shards keeping
   mp3 / opus originals against float32 128-bin log-mel dumps.

    python bench/data_scale.py [--utts 1000000] [--work DIR] [--keep]

Each memory figure comes from a fresh process (``--child``).
"""
from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import soundfile as sf

SR = 16000
WORDS = ("the cat dog bird fish runs sleeps sings swims a big small red green blue house tree river "
         "morning evening quickly slowly today yesterday").split()


def rss_kib(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def espeak(text: str, voice: str) -> np.ndarray:
    """espeak-ng speech at 16 kHz with leading and trailing silence trimmed."""
    from partlib.data.audio import from_array

    wav = subprocess.run(["espeak-ng", "-v", voice, "--stdout", text], capture_output=True, check=True).stdout
    x, rate = sf.read(io.BytesIO(wav), dtype="float32")
    voiced = np.flatnonzero(np.abs(x) > 1e-3)
    return from_array(x[voiced[0]:voiced[-1] + 1], rate)


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9)))


def write_dir(path: Path, wav: Dict[str, str], text: Dict[str, str], dur: Dict[str, float],
              lang: str = "en", segments=None) -> None:
    from partlib.data.datadir import DataDir

    utts = list(text)
    DataDir({u: u.split("-")[0] for u in utts}, wav_scp=wav, segments=segments, text=text,
            utt2lang={u: lang for u in utts}, utt2dur=dur).write(path)


def tiny_model(work: Path):
    from partlib.models.builders import tiny_model_config

    cfg_path = work / "model.json"
    if not cfg_path.is_file():
        cfg_path.write_text(json.dumps(tiny_model_config(work / "models", lora=False)))
    return json.loads(cfg_path.read_text())


def stage(pattern: str, window: int = 2000):
    from partlib.train.schedule import parse_schedule

    return parse_schedule({"seed": 1, "stages": [{
        "name": "s", "max_steps": 1, "batch": {"max_frames": 4000, "max_tokens": 20000, "max_utts": 32},
        "sampling": {"window": window}, "tasks": [{"task": "asr", "data": [pattern]}],
        "trainable": {"encoder": "full", "adapter": "full", "llm": "frozen"}}]}).stages[0]


def loader(data, model, workers: int, start: int = 0, end: int = 2**40):
    import torch

    from partlib.train.loader import BatchDataset, StreamDataset

    common = dict(batch_size=None, num_workers=workers, collate_fn=lambda x: x,
                  prefetch_factor=2 if workers else None)
    if data.plan is not None:
        return torch.utils.data.DataLoader(StreamDataset(data.plan, model.n_mels, 0, 1, workers, start, end), **common)
    return torch.utils.data.DataLoader(BatchDataset(data.sampler, data.features), sampler=range(start, end), **common)


# -- 1 + 2: memory and time to the first batch ----------------------------------------------------
def child(mode: str, data_root: str, work: Path) -> None:
    """One measurement in a fresh process: prints JSON."""
    from partlib.models.speech_llm import SpeechLLM
    from partlib.train.stage_data import make_stage_data

    model = SpeechLLM.from_config(tiny_model(work))
    base = rss_kib()
    t0 = time.perf_counter()
    data = make_stage_data(stage("big"), model, data_root, 1, "shards" if mode == "streaming" else "on_the_fly")
    batch = next(iter(loader(data, model, 0)))
    elapsed = time.perf_counter() - t0
    print(json.dumps({"growth_mib": (rss_kib("VmHWM") - base) / 1024, "first_batch_s": elapsed,
                      "batch_utts": len(batch["utt_ids"])}))


def big_corpus(root: Path, n: int, clip: Path, clip_s: float) -> None:
    """``n`` utterances (speakers of 100) of one shared clip, exported to shards with that clip's
    FLAC bytes for every utterance (the metadata is per utterance, the audio shared)."""
    from partlib.data import shards

    rng = random.Random(n)
    utts = [f"s{i // 100:05d}-{i:07d}" for i in range(n)]
    write_dir(root / "big", {u: str(clip) for u in utts}, {u: sentence(rng) for u in utts},
              {u: clip_s for u in utts})
    payload = clip.read_bytes()
    n_samples = sf.info(str(clip)).frames
    real = shards._audio_items
    shards._audio_items = lambda d, us: ((u, payload, "flac", n_samples, SR) for u in us)
    try:
        shards.export(root / "big")
    finally:
        shards._audio_items = real


def memory(work: Path, n_big: int, clip: Path, clip_s: float) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for n in (n_big // 10, n_big):
        root = work / f"corpus{n}"
        if not (root / "big" / "shar" / "manifest.json").is_file():
            t0 = time.perf_counter()
            big_corpus(root, n, clip, clip_s)
            print(f"  built and exported {n} utterances in {time.perf_counter() - t0:.0f} s", flush=True)
        for mode in (("streaming", "in_memory") if n == n_big else ("streaming",)):
            res = subprocess.run([sys.executable, __file__, "--child", mode, "--data-root", str(root),
                                  "--work", str(work)], capture_output=True, text=True)
            if res.returncode != 0:
                raise SystemExit(res.stderr[-3000:])
            r = json.loads(res.stdout.strip().splitlines()[-1])
            out[f"{mode}_{n}_mib"] = r["growth_mib"]
            out[f"{mode}_{n}_first_batch_s"] = r["first_batch_s"]
            print(f"  {mode:9s} {n:8d} utts: +{r['growth_mib']:.0f} MiB, first batch after {r['first_batch_s']:.2f} s",
                  flush=True)
    return out


# -- 3: throughput and files opened ----------------------------------------------------------------
def throughput(work: Path, clips: List[np.ndarray], texts: List[str]) -> Dict[str, float]:
    """Two source formats for the in-memory baseline: wav (no decoding) and flac (decoded like
    the shards); the same 2,000 utterances (200 clips, each 10 times) exported once."""
    from partlib.data import shards
    from partlib.models.speech_llm import SpeechLLM
    from partlib.train.stage_data import make_stage_data

    n = 2000
    utts = [f"s{i // 50:03d}-{i:05d}" for i in range(n)]
    model = SpeechLLM.from_config(tiny_model(work))
    out: Dict[str, float] = {}
    for fmt in ("wav", "flac"):
        root = work / f"short_{fmt}"
        if not (root / "big" / "shar" / "manifest.json").is_file():
            (root / "clips").mkdir(parents=True, exist_ok=True)
            paths = []
            for i, c in enumerate(clips):
                paths.append(root / "clips" / f"c{i:03d}.{fmt}")
                sf.write(paths[-1], c, SR, subtype="PCM_16")
            write_dir(root / "big", {u: str(paths[i % len(paths)]) for i, u in enumerate(utts)},
                      {u: texts[i % len(texts)] for i, u in enumerate(utts)},
                      {u: len(clips[i % len(clips)]) / SR for i, u in enumerate(utts)})
            shards.export(root / "big", opts=shards.ExportOptions(shard_utts=250))
        for mode in (("in_memory", "streaming") if fmt == "wav" else ("in_memory",)):
            data = make_stage_data(stage("big", window=500), model, str(root), 1,
                             "shards" if mode == "streaming" else "on_the_fly")
            t0, seen = time.perf_counter(), 0
            for batch in loader(data, model, 2):  # 3 epochs: worker start-up amortised
                seen += len(batch["utt_ids"])
                if seen >= 3 * n:
                    break
            key = f"{mode}_{fmt}_utts_per_s" if mode == "in_memory" else "streaming_utts_per_s"
            out[key] = seen / (time.perf_counter() - t0)
            print(f"  {mode:9s} ({fmt} sources): {out[key]:.0f} utterances/s with features (2 workers)", flush=True)
    root = work / "short_wav"
    n_shards = len(shards.load_manifest(root / "big" / "shar")["shards"])
    # files opened in one epoch of the one group (in-process, so the counters see every open)
    opened = {"cuts": 0, "tars": 0}
    real_read, real_audio = shards.read_cuts, shards.ShardAudio

    def read_cuts(*a, **k):
        opened["cuts"] += 1
        return real_read(*a, **k)

    class Counted(real_audio):
        def __init__(self, path):
            opened["tars"] += 1
            super().__init__(path)

    shards.read_cuts, shards.ShardAudio = read_cuts, Counted
    try:
        data = make_stage_data(stage("big", window=500), model, str(root), 1, "shards")
        seen = 0
        for batch in loader(data, model, 0):
            seen += len(batch["utt_ids"])
            if seen >= n:
                break
    finally:
        shards.read_cuts, shards.ShardAudio = real_read, real_audio
    out.update(shards=n_shards, cut_files_opened=opened["cuts"], tars_opened=opened["tars"])
    print(f"  one epoch: {opened['cuts']} cut files and {opened['tars']} audio tars opened, {n_shards} shards",
          flush=True)
    return out


# -- 4: WenetSpeech-like recordings ----------------------------------------------------------------
def long_recordings(work: Path, clips: List[np.ndarray], texts: List[str], minutes: float, n_reco: int
                    ) -> Dict[str, float]:
    from partlib.data import shards
    from partlib.data.audio import AudioReader, concatenate
    from partlib.data.datadir import DataDir
    from partlib.data.streaming import SpeechLengths, StreamPlan, sources_of
    from partlib.models.prompt import PromptLengths
    from partlib.data.examples import TaskSpec

    root = work / "wenet"
    d = root / "train"
    seg_s = 3.0
    if not (d / "utt2dur").is_file():
        (root / "audio").mkdir(parents=True, exist_ok=True)
        wav, segs, text, dur = {}, {}, {}, {}
        rng = random.Random(5)
        for r in range(n_reco):
            picks, total = [], 0.0
            while total < minutes * 60:
                k = rng.randrange(len(clips))
                picks.append(k)
                total += len(clips[k]) / SR + 0.3
            x, _ = concatenate([clips[k] for k in picks], [0.3] * len(picks))
            x = x[:int(minutes * 60 * SR)]
            p = root / "audio" / f"R{r:03d}.flac"
            sf.write(p, x, SR, subtype="PCM_16")
            reco = f"R{r:03d}"
            wav[reco] = str(p)
            for k in range(int(len(x) / SR // seg_s)):
                u = f"{reco}-{k:05d}"
                segs[u] = (reco, k * seg_s, (k + 1) * seg_s)
                text[u], dur[u] = texts[k % len(texts)], seg_s
        DataDir({u: u.split("-")[0] for u in text}, wav_scp=wav, segments=segs, text=text,
                utt2lang={u: "zh" for u in text}, utt2dur=dur).write(d)
    shutil.rmtree(d / "shar", ignore_errors=True)
    hours = n_reco * minutes / 60
    t0 = time.perf_counter()
    shards.export(d, opts=shards.ExportOptions(shard_mb=256))
    export_s = time.perf_counter() - t0
    dd = DataDir.load(d)
    order = list(dd.utts)
    random.Random(1).shuffle(order)
    reader = AudioReader(dd)
    sample = order[:40]
    t0 = time.perf_counter()
    for u in sample:
        reader[u]
    base_rate = len(sample) / (time.perf_counter() - t0)
    spec = TaskSpec("asr", data=["train"])
    plan = StreamPlan([spec], sources_of([spec], [[d]]), {"asr": 1.0}, 1.0, 1, 2000, (100000, 10**7, 64),
                      PromptLengths(_model(work).prompt), SpeechLengths(np.arange(100001) // 8))
    stream = plan.streams(0, 1)[0]
    tars: Dict[int, shards.ShardAudio] = {}
    t0, n = time.perf_counter(), 0
    while stream.pos.epoch == 0:
        for e, si, shard in stream.next_batch():
            if shard not in tars:
                tars[shard] = shards.ShardAudio(plan.sources[si].shard_path(shard, "recording"))
            tars[shard].load(e.utt)
            n += 1
    stream_rate = n / (time.perf_counter() - t0)
    out = {"hours": hours, "export_x_realtime": hours * 3600 / export_s, "segments": len(order),
           "baseline_segments_per_s": base_rate, "stream_segments_per_s": stream_rate}
    print(f"  {n_reco} x {minutes:.0f} min, {len(order)} segments: export {export_s:.1f} s "
          f"({out['export_x_realtime']:.0f}x real time); reading in training order: AudioReader "
          f"{base_rate:.1f} segments/s, shards {stream_rate:.0f} segments/s ({stream_rate / base_rate:.0f}x)",
          flush=True)
    return out


def _model(work: Path):
    from partlib.models.speech_llm import SpeechLLM

    return SpeechLLM.from_config(tiny_model(work))


# -- 5: bytes per audio hour -----------------------------------------------------------------------
def bytes_per_hour(work: Path, clips: List[np.ndarray], texts: List[str]) -> Dict[str, float]:
    from partlib.data import shards
    from partlib.features.compute import check_feature_config
    from partlib.features.dump import DumpOptions, extract_feats

    root = work / "bytes"
    shutil.rmtree(root, ignore_errors=True)
    seconds = sum(len(c) for c in clips) / SR
    out: Dict[str, float] = {"hours": seconds / 3600}
    for kind, fmt, subtype, ext in (("flac", "WAV", "PCM_16", "wav"), ("mp3", "MP3", "MPEG_LAYER_III", "mp3"),
                                    ("opus", "OGG", "OPUS", "opus")):
        (root / kind).mkdir(parents=True)
        wav, text, dur = {}, {}, {}
        for i, c in enumerate(clips):
            u = f"s{i // 50:03d}-{i:05d}"
            p = root / kind / f"{u}.{ext}"
            sf.write(p, c, SR, format=fmt, subtype=subtype)
            wav[u], text[u], dur[u] = str(p), texts[i], len(c) / SR
        write_dir(root / f"dir_{kind}", wav, text, dur)
        man = json.loads(shards.export(root / f"dir_{kind}").read_text())
        out[f"shards_{kind}_mb_per_h"] = man["bytes"] / 1e6 / out["hours"]
    extract_feats(root / "dir_flac", root / "feats", DumpOptions(feats_type=check_feature_config("whisper_mel", 128)))
    ark = sum(p.stat().st_size for p in (root / "feats").rglob("*.ark"))
    out["float32_128_mb_per_h"] = ark / 1e6 / out["hours"]
    for kind in ("flac", "mp3", "opus"):
        print(f"  shards ({kind:4s}): {out[f'shards_{kind}_mb_per_h']:.1f} MB per audio hour "
              f"({out['float32_128_mb_per_h'] / out[f'shards_{kind}_mb_per_h']:.1f}x smaller than the dumps)")
    print(f"  float32 128-bin log-mel dumps: {out['float32_128_mb_per_h']:.1f} MB per audio hour", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--utts", type=int, default=1_000_000, help="utterances of the simulated large corpus")
    p.add_argument("--minutes", type=float, default=30.0, help="length of each WenetSpeech-like recording")
    p.add_argument("--recordings", type=int, default=3)
    p.add_argument("--work", default=None, help="scratch dir (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the scratch dir")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--data-root", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="data_scale."))
    work.mkdir(parents=True, exist_ok=True)
    if args.child:
        child(args.child, args.data_root, work)
        return
    try:
        rng = random.Random(0)
        texts = [sentence(rng) for _ in range(200)]
        voices = ("en", "de", "fr", "es", "en-us")
        clips = [espeak(t, voices[i % len(voices)]) for i, t in enumerate(texts)]
        (work / "clips").mkdir(exist_ok=True)
        shared = work / "clips" / "shared.flac"  # 0.1 s: a million copies stay a few GB
        sf.write(shared, clips[0][:SR // 10], SR, subtype="PCM_16")
        figures: Dict[str, Dict[str, float]] = {}
        print("1-2. loader memory and time to the first batch", flush=True)
        figures["memory"] = memory(work, args.utts, shared, 0.1)
        m, n = figures["memory"], args.utts
        print(f"  streaming / in-memory at {n}: {m[f'streaming_{n}_mib'] / m[f'in_memory_{n}_mib']:.3f}; "
              f"streaming {n} / {n // 10}: {m[f'streaming_{n}_mib'] / m[f'streaming_{n // 10}_mib']:.2f}")
        print("3. throughput with features, 2 workers", flush=True)
        figures["throughput"] = throughput(work, clips, texts)
        t = figures["throughput"]
        print(f"  streaming / in-memory: {t['streaming_utts_per_s'] / t['in_memory_wav_utts_per_s']:.2f} "
              f"(wav sources), {t['streaming_utts_per_s'] / t['in_memory_flac_utts_per_s']:.2f} (flac sources)")
        print("4. WenetSpeech-like long recordings", flush=True)
        figures["long"] = long_recordings(work, clips, texts, args.minutes, args.recordings)
        print("5. bytes per audio hour", flush=True)
        figures["bytes"] = bytes_per_hour(work, clips, texts)
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    finally:
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
