"""Training-step throughput and memory: dynamic (length-bucketed) vs fixed-count batches, and peak
memory with the LLM frozen, under LoRA and fully trainable.

Batches are built with the training data code (``partlib.data.batching.make_batches`` bounded by
encoder frames and LLM tokens, ``collate``) and fed straight to ``SpeechLLM.forward`` + backward;
features are loaded before the clock starts, so the numbers are the model's. The fixed-count
baseline uses the same examples in random order, cut into batches of the dynamic batches' mean size.
Peak memory is measured in a fresh subprocess per trainable setting (model build + AdamW steps on
the largest dynamic batches): the peak resident set size during the steps (Linux VmHWM, reset just
before them) and its growth over the resident size before the first step.

Default: a tiny model (real Whisper/Qwen2 architectures at toy sizes) and a synthetic data dir with
CommonVoice-like durations (lognormal, median 4 s, mostly 2-8 s) and dumped random features.

    python bench/train_step.py [--model-config M.yaml] [--data-dir D] [--num-utts 240]
        [--max-frames 6000] [--threads 1] [--llm-hidden 32]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import yaml

from partlib.data.datadir import DataDir
from partlib.data.batching import collate, make_batches, padding_fraction
from partlib.data.examples import Example, TaskSpec, build_examples
from partlib.features.source import FeatureSource
from partlib.models.prompt import PromptLengths

WORDS = ("the cat dog bird fish runs sleeps sings swims a big small red green blue house tree river "
         "stone light night day water fire").split()
LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "layers": "all"}
TRAINABLE = {
    "llm frozen": {"encoder": "full", "adapter": "full", "llm": "frozen"},
    "llm LoRA": {"encoder": "full", "adapter": "full", "llm": {"lora": LORA}},
    "llm full": {"encoder": "full", "adapter": "full", "llm": "full"},
}


def synth_data_dir(path: Path, num_utts: int, seed: int = 0, lang: str = "en", n_mels: int = 80) -> None:
    """Write a data dir of ``num_utts`` utterances with CommonVoice-like durations (lognormal,
    median 4 s, clipped to 1.5-12 s), random sentences of about 2.5 words/s, and dumped features
    in which each word is a fixed random pattern (plus noise) over its share of the frames."""
    import kaldiio

    rng = np.random.default_rng(seed)
    patterns = np.random.default_rng(1234).standard_normal((len(WORDS), n_mels)).astype(np.float32)
    durs = np.clip(rng.lognormal(np.log(4.0), 0.35, num_utts), 1.5, 12.0)
    feats, text, utt2spk = {}, {}, {}
    for i, dur in enumerate(durs):
        utt = f"spk{i % 8}-{i:05d}"
        frames = int(dur * 100)
        words = rng.integers(0, len(WORDS), max(1, int(round(dur * 2.5))))
        rows = np.repeat(words, -(-frames // len(words)))[:frames]
        feats[utt] = patterns[rows] + 0.3 * rng.standard_normal((frames, n_mels)).astype(np.float32)
        text[utt] = " ".join(WORDS[w] for w in words)
        utt2spk[utt] = f"spk{i % 8}"
    path.mkdir(parents=True, exist_ok=True)
    kaldiio.save_ark(str(path / "feats.ark"), feats, scp=str(path / "feats_raw.scp"))
    scp = dict(line.split(maxsplit=1) for line in (path / "feats_raw.scp").read_text().splitlines())
    (path / "feats_raw.scp").unlink()
    DataDir(utt2spk, feats_scp=scp, text=text, utt2lang={u: lang for u in utt2spk},
            utt2num_frames={u: f.shape[0] for u, f in feats.items()},
            meta={"feats_type": f"whisper_mel {n_mels}"}).write(path)


def tiny_config(work_dir: Path, llm_hidden: int) -> dict:
    """A tiny model config (see partlib.models.builders); ``llm_hidden`` widens the LLM."""
    from partlib.models import builders

    cfg = builders.tiny_model_config(work_dir, lora=False)
    if llm_hidden != 32:
        builders.build_tiny_llm(cfg["llm"]["path"], hidden_size=llm_hidden, intermediate_size=2 * llm_hidden)
    return cfg


def asr_examples(model, data_dir: Path) -> List[Example]:
    """One ASR example per utterance, with the model's prompt and speech lengths."""
    d = DataDir.load(data_dir)
    return build_examples(TaskSpec("asr", 1.0, [str(data_dir)]), [d], PromptLengths(model.prompt),
                          model.speech_embed_length)


def fixed_count_batches(examples: Sequence[Example], size: int, seed: int) -> List[List[Example]]:
    """Examples in random order, ``size`` per batch (the conventional sampler)."""
    order = np.random.default_rng(seed).permutation(len(examples))
    shuffled = [examples[int(i)] for i in order]
    return [shuffled[i:i + size] for i in range(0, len(shuffled), size)]


def collated(model, data_dir: Path, batches: Sequence[Sequence[Example]]) -> List[Dict]:
    """Model batch dicts with features loaded (outside the timed region)."""
    source = FeatureSource([DataDir.load(data_dir)], model.n_mels)
    return [collate(b, source.load([(e.dir_index, e.utt) for e in b])) for b in batches]


def train_steps(model, batches: Sequence[Dict], optimizer=None) -> float:
    """Seconds for forward + backward (+ optimizer step) over ``batches``, loss normalised per token."""
    t0 = time.perf_counter()
    for batch in batches:
        out = model(batch)
        (out["loss_sum"] / max(1, out["n_tokens"])).backward()
        if optimizer is not None:
            optimizer.step()
        model.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> int:
    """Reset the peak-RSS counter where Linux allows it (``/proc/self/clear_refs``); return the
    current RSS in kB (the peak so far where it cannot be reset)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kb("VmRSS")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_rss() -> int:
    """Peak resident set size in kB since the last :func:`reset_peak_rss` (or process start)."""
    try:
        return _status_kb("VmHWM")
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def memory_child(cfg_path: str, data_dir: str, setting: str, max_frames: int, max_tokens: int, steps: int) -> None:
    """(Subprocess) build the model, set ``setting`` trainable, run AdamW steps; print JSON."""
    from partlib.models.speech_llm import SpeechLLM

    model = SpeechLLM.from_config(yaml.safe_load(Path(cfg_path).read_text()))
    model.apply_trainable(TRAINABLE[setting])
    model.train()
    batches = make_batches(asr_examples(model, Path(data_dir)), max_frames, max_tokens, 10**9)
    # the largest batches first: peak memory is reached within the first steps
    batches = sorted(batches, key=lambda b: -len(b) * max(e.num_frames for e in b))[:steps]
    data = collated(model, Path(data_dir), batches)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    before = reset_peak_rss()
    train_steps(model, data, opt)
    peak = peak_rss()
    print(json.dumps({"trainable": sum(p.numel() for p in params), "total": sum(p.numel() for p in model.parameters()),
                      "peak_kb": peak, "growth_kb": peak - before}))


def peak_memory(cfg_path: Path, data_dir: Path, setting: str, args: argparse.Namespace) -> Dict:
    """Run :func:`memory_child` in a fresh interpreter and return its JSON."""
    cmd = [sys.executable, __file__, "--model-config", str(cfg_path), "--data-dir", str(data_dir),
           "--threads", str(args.threads), "--max-frames", str(args.max_frames), "--max-tokens", str(args.max_tokens),
           "--memory-child", setting]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"memory run '{setting}' failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def throughput(model, data_dir: Path, batches: List[List[Example]], repeats: int) -> Tuple[float, float, float]:
    """(steps/s, real frames/s, seconds) of forward+backward over ``batches``; best of ``repeats``."""
    data = collated(model, data_dir, batches)
    train_steps(model, data[:2])  # warm-up
    secs = min(train_steps(model, data) for _ in range(repeats))
    frames = sum(e.num_frames for b in batches for e in b)
    return len(batches) / secs, frames / secs, secs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-config", help="model YAML (default: a tiny model built in a temp dir)")
    p.add_argument("--data-dir", help="a data dir with dumped features (default: synthetic)")
    p.add_argument("--num-utts", type=int, default=240, help="utterances of the synthetic data dir")
    p.add_argument("--max-frames", type=int, default=6000, help="dynamic batches: padded encoder frames")
    p.add_argument("--max-tokens", type=int, default=4000, help="dynamic batches: padded LLM tokens")
    p.add_argument("--repeats", type=int, default=2, help="epochs timed per setting (the best is kept)")
    p.add_argument("--mem-steps", type=int, default=3, help="steps per memory run")
    p.add_argument("--llm-hidden", type=int, default=32, help="width of the default tiny LLM")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--memory-child", choices=sorted(TRAINABLE), help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    if args.memory_child:
        memory_child(args.model_config, args.data_dir, args.memory_child, args.max_frames, args.max_tokens,
                     args.mem_steps)
        return

    from partlib.models.speech_llm import SpeechLLM

    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        tmp_path = Path(tmp)
        if args.model_config:
            cfg_path = Path(args.model_config)
            what_model = str(cfg_path)
        else:
            cfg_path = tmp_path / "model.yaml"
            cfg_path.write_text(yaml.safe_dump(tiny_config(tmp_path / "models", args.llm_hidden)))
            what_model = f"tiny model built in a temp dir (LLM width {args.llm_hidden}, random weights)"
        if args.data_dir:
            data_dir = Path(args.data_dir)
            what_data = str(data_dir)
        else:
            data_dir = tmp_path / "data"
            synth_data_dir(data_dir, args.num_utts, args.seed)
            what_data = f"synthetic: {args.num_utts} utts, lognormal durations (median 4 s), random features"
        model = SpeechLLM.from_config(yaml.safe_load(cfg_path.read_text()))
        model.apply_trainable(TRAINABLE["llm frozen"])
        model.train()
        examples = asr_examples(model, data_dir)
        secs = np.array([e.num_frames for e in examples]) / 100
        print(f"model: {what_model}\ndata:  {what_data}")
        print(f"       {len(examples)} utts, {secs.sum():.0f} s of audio, duration p10/p50/p90 = "
              f"{np.percentile(secs, 10):.1f}/{np.percentile(secs, 50):.1f}/{np.percentile(secs, 90):.1f} s")
        print(f"torch threads: {torch.get_num_threads()} (interop {torch.get_num_interop_threads()}), "
              f"torch {torch.__version__}; shared machines give noisy numbers\n")

        dynamic = make_batches(examples, args.max_frames, args.max_tokens, 10**9)
        order = np.random.default_rng(args.seed).permutation(len(dynamic))
        dynamic = [dynamic[int(i)] for i in order]
        size = max(1, round(len(examples) / len(dynamic)))
        fixed = fixed_count_batches(examples, size, args.seed)
        print("forward+backward over one epoch, LLM frozen (encoder + adapter train)")
        print(f"{'batching':<28}{'batches':>8}{'mean utts':>10}{'pad frames':>11}{'pad tokens':>11}"
              f"{'steps/s':>9}{'frames/s':>10}")
        rates = {}
        for name, batches in ((f"dynamic (<= {args.max_frames} frames)", dynamic),
                              (f"fixed count ({size} utts)", fixed)):
            pf, pt = padding_fraction(batches)
            sps, fps, _ = throughput(model, data_dir, batches, args.repeats)
            rates[name] = fps
            print(f"{name:<28}{len(batches):>8}{len(examples) / len(batches):>10.1f}{pf:>10.1%} {pt:>10.1%} "
                  f"{sps:>9.2f}{fps:>10.0f}")
        a, b = rates.values()
        print(f"dynamic / fixed frames/s: {a / b:.2f}x\n")

        print(f"peak memory during {args.mem_steps} AdamW steps on the largest dynamic batches (fresh process each)")
        print(f"{'setting':<14}{'trainable':>12}{'total':>12}{'peak RSS MB':>13}{'growth MB':>11}")
        for setting in TRAINABLE:
            m = peak_memory(cfg_path, data_dir, setting, args)
            print(f"{setting:<14}{m['trainable']:>12,}{m['total']:>12,}{m['peak_kb'] / 1024:>13.1f}"
                  f"{m['growth_kb'] / 1024:>11.1f}")


if __name__ == "__main__":
    main()
