"""Tiny training corpora shared by the trainer and decoding tests: Kaldi data dirs with dumped
features (or audio) that carry the sentence identity, so that a tiny model learns them in a few steps."""
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, List

import kaldiio
import numpy as np
import soundfile as sf

from partlib.data.datadir import DataDir

SENTENCES = {
    "en": ["the cat sleeps", "a dog runs", "the bird sings", "a fish swims", "the cat runs", "a bird sleeps"],
    "de": ["die katze schläft", "ein hund läuft", "der vogel singt", "ein fisch schwimmt", "die katze läuft",
           "ein vogel schläft"],
}


def speech_dir(path: Path, lang: str, idx: Iterable[int], other: str, rng: np.random.Generator,
               n_mels: int = 80) -> None:
    """Write a data dir of sentences ``idx`` of ``lang`` (translations into ``other`` in text.<other>)
    with dumped ``n_mels``-bin features (``feats_type`` whisper_mel N): a fixed pattern per sentence
    plus noise, 40 + 7·i frames long."""
    idx = list(idx)
    utts = [f"spk{lang}-{i:03d}" for i in idx]
    feats = {}
    for u, i in zip(utts, idx):
        base = np.random.default_rng(i).standard_normal((1, n_mels)).astype(np.float32)
        feats[u] = base + 0.1 * rng.standard_normal((40 + 7 * i, n_mels)).astype(np.float32)
    path.mkdir(parents=True)
    kaldiio.save_ark(str(path / "feats.ark"), feats, scp=str(path / "feats_raw.scp"))
    scp = dict(line.split(maxsplit=1) for line in (path / "feats_raw.scp").read_text().splitlines())
    (path / "feats_raw.scp").unlink()
    DataDir({u: f"spk{lang}" for u in utts}, feats_scp=scp,
            text={u: SENTENCES[lang][i] for u, i in zip(utts, idx)}, utt2lang={u: lang for u in utts},
            translations={other: {u: SENTENCES[other][i] for u, i in zip(utts, idx)}},
            utt2num_frames={u: feats[u].shape[0] for u in utts}, meta={"feats_type": f"whisper_mel {n_mels}"}).write(path)


def speech_data(root: Path, n_train: int, n_dev: int, seed: int = 0, n_mels: int = 80) -> None:
    """``root/data/{train,dev}_{en,de}``: speech dirs with en<->de translations."""
    rng = np.random.default_rng(seed)
    for lang, other in (("en", "de"), ("de", "en")):
        speech_dir(root / "data" / f"train_{lang}", lang, range(n_train), other, rng, n_mels)
        speech_dir(root / "data" / f"dev_{lang}", lang, range(n_dev), other, rng, n_mels)


def audio_dir(path: Path, lang: str, idx: Iterable[int], other: str, rng: np.random.Generator) -> None:
    """A data dir of sentences ``idx`` of ``lang`` (mod 6) with 16 kHz wav files: a tone whose pitch
    and length (0.4-0.9 s) follow the sentence, plus noise; utt2dur, text.<other>."""
    idx = list(idx)
    utts = [f"spk{lang}-{i:03d}" for i in idx]
    wav, dur = {}, {}
    (path / "wav").mkdir(parents=True)
    for u, i in zip(utts, idx):
        n = 1600 * (4 + i % 6)
        tone = np.sin(2 * np.pi * (200 + 50 * (i % 6)) * np.arange(n) / 16000)
        sf.write(path / "wav" / f"{u}.wav", (0.3 * tone + 0.02 * rng.standard_normal(n)).astype(np.float32),
                 16000, subtype="PCM_16")
        wav[u], dur[u] = str(path / "wav" / f"{u}.wav"), n / 16000
    DataDir({u: f"spk{lang}" for u in utts}, wav_scp=wav, text={u: SENTENCES[lang][i % 6] for u, i in zip(utts, idx)},
            utt2lang={u: lang for u in utts}, utt2dur=dur,
            translations={other: {u: SENTENCES[other][i % 6] for u, i in zip(utts, idx)}}).write(path)


def audio_data(root: Path, n_train: int, n_dev: int, seed: int = 0) -> None:
    """``root/{train,dev}_{en,de}``: audio dirs with en<->de translations."""
    rng = np.random.default_rng(seed)
    for lang, other in (("en", "de"), ("de", "en")):
        audio_dir(root / f"train_{lang}", lang, range(n_train), other, rng)
        audio_dir(root / f"dev_{lang}", lang, range(n_dev), other, rng)


def train_cmd(root: Path, exp: Path, sched_file: Path, threads: int = 1) -> List[str]:
    """``partlib.bin.train`` on ``root``'s model.yaml and data (one thread, no TensorBoard)."""
    return [sys.executable, "-m", "partlib.bin.train", "--schedule", str(sched_file), "--model-config",
            str(root / "model.yaml"), "--data-root", str(root / "data"), "--exp-dir", str(exp),
            "--threads", str(threads), "--no-tensorboard"]


def weights(model_dir: Path) -> dict:
    """Every tensor of an exported model."""
    from partlib.models.speech_llm import SpeechLLM

    return {k: v.detach().clone() for k, v in SpeechLLM.from_pretrained(model_dir).state_dict().items()}


def wait_for_checkpoint(proc: subprocess.Popen, latest: Path, name: str, timeout: float = 120.0) -> None:
    """Poll until the ``latest`` pointer of a running training names checkpoint ``name`` or later;
    fails if the training ended first (it must still be running to be killed mid-way)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if latest.is_file() and latest.read_text().strip() >= name:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed; lengthen the run"


def free_port() -> int:
    """A TCP port free on this machine now (for a process group's MASTER_PORT)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_ranks(target: Callable, *args: Any, results: int = 2, world: int = 2, timeout: float = 120.0) -> List[Any]:
    """Run ``target(rank, port, out, *args)`` in ``world`` spawned processes that share a free port;
    return the ``results`` items they put on the queue ``out`` (plain Python values: tensors would
    travel as shared memory of a process that has exited), after every process exited cleanly."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=target, args=(rank, port, out, *args)) for rank in range(world)]
    for proc in procs:
        proc.start()
    got = [out.get(timeout=timeout) for _ in range(results)]
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0, f"rank {procs.index(proc)} exited with {proc.exitcode}"
    return got
