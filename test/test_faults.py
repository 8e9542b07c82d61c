"""Fault injection: each case builds one bad input or interrupts one run, runs a partlib CLI as users
do (``python -m partlib.bin.<tool>``) and checks the exit status (1 for bad input, 75 for a run
stopped by SIGTERM, 0 for a run that recovers: a resume after ``kill -9`` or from a damaged
checkpoint), a message naming the file, key or utterance, no traceback, and every earlier output
unchanged; runs that recover must end exactly where an uninterrupted run ends.

To add a case, append a :class:`Case` to :data:`CASES`: a name, a function that builds the bad
input under the case's ``tmp_path`` and returns the :class:`Run` (the command, the paths whose
files must not change, the paths that must not appear, a full disk to inject, a signal to send,
a check after the run), the exit status and the message.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from partlib.bin import EXIT_BAD_INPUT, EXIT_PREEMPTED
from partlib.data.datadir import DataDir
from test_config import MODEL, MODEL_TYPOS, SCHEDULE_TYPOS, schedule_file
from train_fixtures import audio_dir as tone_dir, speech_data, speech_dir, weights

REPO = Path(__file__).resolve().parents[1]
# like a machine without internet: a hub id that is not in the cache fails at once (no retries)
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "UTF-8"}


# ------------------------------------------------------------------------------ shared helpers
def tree_digest(paths: Sequence[Path]) -> Dict[str, str]:
    """sha256 of every file under ``paths`` (files or directories), keyed by path."""
    out = {}
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def assert_no_traceback(res: subprocess.CompletedProcess) -> None:
    for stream in (res.stdout, res.stderr):
        assert "Traceback" not in stream, stream[-3000:]


@dataclass(frozen=True)
class Run:
    """One case's command (after ``python -m``) and what it must leave alone."""

    args: List[str]
    protected: Sequence[Path]  # every file under these has the same bytes after the run (and no file is added)
    absent: Sequence[Path] = ()  # none of these exists after the run
    env: Mapping[str, str] = field(default_factory=dict)
    enospc: Optional[str] = None  # files named like this fail with ENOSPC at their first write (fault_inject.py)
    interrupt: Optional[Tuple[Callable[[], bool], int]] = None  # send the signal once the predicate holds
    after: Callable[[], None] = lambda: None  # more checks once the run ended (e.g. the same weights as a reference)


def run_cli(args: Sequence[str], env: Mapping[str, str] = {}) -> subprocess.CompletedProcess:
    """``python -m <args>`` from the repository root, as the recipes run the tools."""
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env={**ENV, **env}, capture_output=True,
                          text=True, timeout=300)


def run_case(run: Run) -> subprocess.CompletedProcess:
    """Run a case's command, with its full disk injected and its signal sent."""
    prefix = [str(REPO / "test" / "fault_inject.py"), "--enospc", run.enospc, "-m"] if run.enospc else ["-m"]
    cmd, env = [sys.executable, *prefix, *run.args], {**ENV, **run.env}
    if run.interrupt is None:
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    ready, sig = run.interrupt
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(ready, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Poll ``ready()`` while ``proc`` runs; it must still run when ``ready()`` holds."""
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None and ready(), "the run ended before the point of the fault; lengthen it"


def kill9_at(args: Sequence[str], ready: Callable[[], bool], seed: int, spread: float,
             last: Optional[Callable[[], bool]] = None) -> None:
    """Start ``python -m args``, wait for ``ready()``, then ``kill -9`` it after a delay drawn from
    ``[0, spread)`` seconds with ``seed``: a seeded random point of the work. ``last()``, where
    given, ends the delay early: on a fast machine the whole rest of the work can take less than
    the delay, and a kill after the process ended would test nothing."""
    proc = subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_until(ready, proc)
    deadline = time.time() + float(np.random.default_rng(seed).uniform(0, spread))
    while time.time() < deadline and not (last is not None and last()):
        time.sleep(0.002)
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the run ended (status {proc.returncode}) before the kill"


class Shared:
    """Inputs that several cases read and none changes, built on first use, once per session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.seconds: Dict[str, float] = {}  # wall time of each uninterrupted reference run

    @functools.cached_property
    def model_config(self) -> dict:
        """A model config of a tiny Whisper encoder and Qwen2 LLM saved under the root."""
        from partlib.models.builders import tiny_model_config

        return tiny_model_config(self.root / "models", lora=False)

    @functools.cached_property
    def model_dir(self) -> Path:
        """A saved SpeechLLM (random weights) of :attr:`model_config`."""
        from partlib.models.speech_llm import SpeechLLM

        SpeechLLM.from_config(self.model_config).save_pretrained(self.root / "model")
        return self.root / "model"

    @functools.cached_property
    def trained(self) -> Path:
        """``train/``: feature dirs (``data/``), a tone audio dir (``audio/``), ``model.yaml``,
        :data:`SCHEDULE` (``schedule.yaml``) and the references of the recovering cases, each made
        by an uninterrupted run, timed in :attr:`seconds`: the trained experiment (``ref/``),
        ``audio``'s features (``ref_feats/``) and an ASR decode of ``data/dev_en`` by the trained
        model (``ref_decode/``)."""
        from partlib.models.builders import tiny_model_config

        root = self.root / "train"
        speech_data(root, n_train=6, n_dev=3)
        tone_dir(root / "audio", "en", range(FEATS_UTTS), "de", np.random.default_rng(0))
        (root / "model.yaml").write_text(yaml.safe_dump(tiny_model_config(root / "models", lora=False)))
        (root / "schedule.yaml").write_text(yaml.safe_dump(SCHEDULE))
        for name, args_of in (("ref", train_args), ("ref_feats", feats_args), ("ref_decode", decode_args)):
            start = time.time()
            res = run_cli(args_of(root, root / name))
            self.seconds[name] = time.time() - start
            assert res.returncode == 0, res.stderr[-3000:]
        return root

    @functools.cached_property
    def pretrained(self) -> Path:
        """``pretrain/``: what the pretraining cases read — speech dirs (``data/``), the encoder's
        architecture and options (``arch.json``, ``encoder.yaml``), text dirs (``text_*``), a tokenizer
        (``tok/``) and the LM's options (``lm.yaml``) — and their uninterrupted runs (``ref_encoder/``,
        ``ref_llm/``), timed in :attr:`seconds`."""
        from partlib.bin import train_tokenizer
        from test_encoder_pretrain import ARCH
        from test_tokenizer_lm import PAIRS, _text_dir

        root = self.root / "pretrain"
        speech_data(root, n_train=6, n_dev=2)
        (root / "arch.json").write_text(json.dumps(ARCH))
        (root / "encoder.yaml").write_text(yaml.safe_dump(ENCODER_PRETRAIN))
        rows = [{"de": d, "en": e} for d, e, _ in PAIRS]
        for lang in ("de", "en"):
            _text_dir(root / f"text_{lang}", lang, rows)
        assert train_tokenizer.main(["--vocab-size", "400", "--min-frequency", "1", "--langs", "en de",
                                     str(root / "text_de"), str(root / "text_en"), str(root / "tok")]) == 0
        (root / "lm.yaml").write_text(yaml.safe_dump(LM_PRETRAIN))
        for name, args_of in (("ref_encoder", encoder_pretrain_args), ("ref_llm", lm_pretrain_args)):
            start = time.time()
            res = run_cli(args_of(root, root / name))
            self.seconds[name] = time.time() - start
            assert res.returncode == 0, res.stderr[-3000:]
        return root

    def protected(self) -> List[Path]:
        """What the training cases read: they must change none of it."""
        root = self.trained
        return [root / "data", root / "audio", root / "model.yaml", root / "schedule.yaml", root / "ref"]


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path, Shared], Run]
    message: str  # a substring of stderr; "{tmp}" stands for the case's tmp_path
    status: int = EXIT_BAD_INPUT


# ------------------------------------------------------------------------------ input builders
UTTS = ("a-1", "a-2", "b-1")


def audio_dir(tmp: Path) -> Path:
    """``tmp/src``: three utterances of 16 kHz wavs (0.5, 0.6, 0.7 s) in ``tmp/wav``."""
    (tmp / "wav").mkdir(parents=True)
    wav = {}
    for i, utt in enumerate(UTTS):
        n = 8000 + 1600 * i
        sf.write(tmp / "wav" / f"{utt}.wav", 0.1 * np.sin(np.arange(n) / 10).astype(np.float32), 16000)
        wav[utt] = str(tmp / "wav" / f"{utt}.wav")
    DataDir({u: u.split("-")[0] for u in UTTS}, wav_scp=wav, text={u: "hello" for u in UTTS}).write(tmp / "src")
    return tmp / "src"


def earlier_output(path: Path) -> Path:
    """An output directory as an earlier successful run left it."""
    path.mkdir(parents=True)
    (path / "text").write_text("a-1 earlier\n")
    (path / "utt2spk").write_text("a-1 a\n")
    return path


def filter_data(edit: Callable[[Path, Path], None]) -> Callable[[Path, Shared], Run]:
    """filter_data of the audio dir after ``edit(src, tmp)``; src and an earlier dst are protected."""
    def build(tmp: Path, shared: Shared) -> Run:
        src = audio_dir(tmp)
        edit(src, tmp)
        dst = earlier_output(tmp / "dst")
        return Run(["partlib.bin.filter_data", str(src), str(dst)], [src, dst])
    return build


def extract_feats(edit: Callable[[Path, Path], None], *options: str) -> Callable[[Path, Shared], Run]:
    """extract_feats of the audio dir after ``edit(src, tmp)`` into a new dir, which must get no feats.scp."""
    def build(tmp: Path, shared: Shared) -> Run:
        src = audio_dir(tmp)
        edit(src, tmp)
        out = tmp / "dump"
        return Run(["partlib.bin.extract_feats", *options, str(src), str(out)], [src], absent=[out / "feats.scp"])
    return build


def write(name: str, content: bytes) -> Callable[[Path, Path], None]:
    def edit(src: Path, tmp: Path) -> None:
        (src / name).write_bytes(content)
    return edit


def wav_value(utt: str, value: str) -> Callable[[Path, Path], None]:
    """wav.scp of ``utt`` set to ``value`` ("{tmp}" stands for tmp)."""
    def edit(src: Path, tmp: Path) -> None:
        scp = dict(line.split(maxsplit=1) for line in (src / "wav.scp").read_text().splitlines())
        scp[utt] = value.replace("{tmp}", str(tmp))
        (src / "wav.scp").write_text("".join(f"{u} {v}\n" for u, v in scp.items()))
    return edit


def audio_file(utt: str, samples: np.ndarray = None, raw: bytes = None) -> Callable[[Path, Path], None]:
    """The wav of ``utt`` replaced by float ``samples`` or by ``raw`` bytes."""
    def edit(src: Path, tmp: Path) -> None:
        path = tmp / "wav" / f"{utt}.wav"
        if raw is not None:
            path.write_bytes(raw)
        else:
            sf.write(path, samples, 16000, subtype="FLOAT")
    return edit


def every_audio_bad(src: Path, tmp: Path) -> None:
    for utt in UTTS:
        (tmp / "wav" / f"{utt}.wav").write_bytes(b"not audio " * 20)


def segments(src: Path, tmp: Path) -> None:
    """One recording a-1 (0.5 s) cut into two segments; the second ends at 4.5 s."""
    files = {"wav.scp": f"a-1 {tmp}/wav/a-1.wav\n", "segments": "a-1-x a-1 0 0.3\na-1-y a-1 0.3 4.5\n",
             "text": "a-1-x hello\na-1-y world\n", "utt2spk": "a-1-x a\na-1-y a\n", "spk2utt": "a a-1-x a-1-y\n"}
    for name, content in files.items():
        (src / name).write_text(content)


def train(schedule_edit=lambda cfg: None,
          model: Callable[[Path, Shared], dict] = lambda tmp, shared: MODEL) -> Callable[[Path, Shared], Run]:
    """partlib.bin.train of the template schedule changed by ``schedule_edit`` and the model config
    ``model(tmp, shared)``; the configs and an earlier exp dir (its config.yaml) are protected."""
    def build(tmp: Path, shared: Shared) -> Run:
        sched = schedule_file(tmp, schedule_edit)
        model_yaml = tmp / "model.yaml"
        model_yaml.write_text(yaml.safe_dump(model(tmp, shared)))
        exp = tmp / "exp"
        exp.mkdir()
        (exp / "config.yaml").write_text("earlier: run\n")
        return Run(["partlib.bin.train", "--schedule", str(sched), "--model-config", str(model_yaml),
                    "--exp-dir", str(exp), "--data-root", str(tmp / "data"), "--device", "cpu"],
                   [sched, model_yaml, exp])
    return build


def model_typo(change: dict) -> Callable[[Path, Shared], dict]:
    return lambda tmp, shared: {**MODEL, **change}


def model_path(section: str, name: str) -> Callable[[Path, Shared], dict]:
    """The tiny model config with ``<section>.path`` set to ``name`` ("{tmp}" stands for tmp)."""
    def model(tmp: Path, shared: Shared) -> dict:
        cfg = shared.model_config
        return {**cfg, section: {**cfg[section], "path": name.replace("{tmp}", str(tmp))}}
    return model


def decode(edit_data: Callable[[Path], None] = lambda data: None,
           model: Callable[[Path, Shared], Path] = lambda tmp, shared: shared.model_dir) -> Callable[[Path, Shared], Run]:
    """partlib.bin.decode (ASR) of a dumped-feature dir changed by ``edit_data(dir)`` with the model
    dir ``model(tmp, shared)``; data, model and an earlier partial output dir are protected."""
    def build(tmp: Path, shared: Shared) -> Run:
        data = tmp / "data"
        speech_dir(data, "en", range(3), "de", np.random.default_rng(0))
        edit_data(data)
        model_dir = model(tmp, shared)
        out = tmp / "decode"
        out.mkdir()
        (out / "ref").write_text("earlier ref\n")
        protected = [data, out] + ([model_dir] if model_dir.exists() else [])
        return Run(["partlib.bin.decode", "--model-dir", str(model_dir), "--data-dir", str(data), "--threads", "1",
                    str(out)], protected)
    return build


def feats_entry(utt_index: int, offset: int = None) -> Callable[[Path], None]:
    """feats.scp line ``utt_index`` (0-based) pointed at ``offset``."""
    def edit(data: Path) -> None:
        lines = (data / "feats.scp").read_text().splitlines()
        utt, value = lines[utt_index].split()
        lines[utt_index] = f"{utt} {value.rsplit(':', 1)[0]}:{offset}"
        (data / "feats.scp").write_text("\n".join(lines) + "\n")
    return edit


def truncate_ark(data: Path) -> None:
    ark = data / "feats.ark"
    with open(ark, "r+b") as f:
        f.truncate(ark.stat().st_size - 100)


def copied_model(edit: Callable[[Path], None]) -> Callable[[Path, Shared], Path]:
    """A copy of the shared model dir changed by ``edit(dir)``."""
    def model(tmp: Path, shared: Shared) -> Path:
        path = tmp / "model"
        shutil.copytree(shared.model_dir, path)
        edit(path)
        return path
    return model


def config_encoder(path: str) -> Callable[[Path], None]:
    def edit(model_dir: Path) -> None:
        cfg = yaml.safe_load((model_dir / "config.yaml").read_text())
        cfg["encoder"]["path"] = path.replace("{tmp}", str(model_dir.parent))
        (model_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    return edit


# ------------------------------------------------------------- training, features, decoding: interrupted
SCHEDULE = {"seed": 1, "stages": [{
    "name": "s1", "max_steps": 8, "log_interval": 1, "save_interval": 1,
    "optim": {"lr": 3e-3}, "scheduler": {"type": "constant"},
    "batch": {"max_frames": 400, "max_tokens": 2000, "max_utts": 4},
    "tasks": [{"task": "asr", "data": ["train_*"]}],
    "trainable": {"encoder": "full", "adapter": "full", "llm": "frozen"}}]}


def train_args(root: Path, exp: Path, data: Optional[Path] = None) -> List[str]:
    return ["partlib.bin.train", "--schedule", str(root / "schedule.yaml"), "--model-config", str(root / "model.yaml"),
            "--data-root", str(data or root / "data"), "--exp-dir", str(exp), "--threads", "1", "--device", "cpu",
            "--no-tensorboard"]


FEATS_UTTS = 2000  # enough audio that a kill can fall at many points of writing its features


def feats_args(root: Path, out: Path) -> List[str]:
    return ["partlib.bin.extract_feats", "--num-mel-bins", "80", str(root / "audio"), str(out)]


def decode_args(root: Path, out: Path) -> List[str]:
    return ["partlib.bin.decode", "--model-dir", str(root / "ref" / "s1" / "model"), "--data-dir",
            str(root / "data" / "dev_en"), "--threads", "1", "--max-new-tokens", "6", str(out)]


def checkpoint_reached(exp: Path, step: int) -> Callable[[], bool]:
    latest = exp / "s1" / "checkpoints" / "latest"
    return lambda: latest.is_file() and latest.read_text().strip() >= f"ckpt-{step:06d}.pt"


def same_weights(a: Path, b: Path) -> Callable[[], None]:
    def check() -> None:
        wa, wb = weights(a), weights(b)
        assert [k for k in wa if not torch.equal(wa[k], wb[k])] == [], f"{b} differs from the uninterrupted {a}"
    return check


def resumes_exactly(root: Path, exp: Path) -> Callable[[], None]:
    """The run that recovered ends with the uninterrupted reference's parameters."""
    return same_weights(root / "ref" / "s1" / "model", exp / "s1" / "model")


def train_killed(seed: int) -> Callable[[Path, Shared], Run]:
    """Training killed (-9) at a seeded random point, then run again: it resumes exactly."""
    def build(tmp: Path, shared: Shared) -> Run:
        root, exp = shared.trained, tmp / "exp"
        steps = SCHEDULE["stages"][0]["max_steps"]
        step = int(np.random.default_rng(seed).integers(1, steps))
        kill9_at(train_args(root, exp), checkpoint_reached(exp, step), seed, 0.3, last=checkpoint_reached(exp, steps - 1))
        return Run(train_args(root, exp), shared.protected(), after=resumes_exactly(root, exp))
    return build


def train_sigterm(tmp: Path, shared: Shared) -> Run:
    """SIGTERM in training: a checkpoint, status 75, no model; the same command resumes exactly."""
    root, exp = shared.trained, tmp / "exp"

    def after() -> None:
        assert not (exp / "s1" / "model").exists()
        res = run_cli(train_args(root, exp))
        assert res.returncode == 0 and "resumed from ckpt-" in res.stderr, res.stderr[-3000:]
        resumes_exactly(root, exp)()
    return Run(train_args(root, exp), shared.protected(), interrupt=(checkpoint_reached(exp, 3), signal.SIGTERM),
               after=after)


ENCODER_PRETRAIN = {"steps": 30, "lr": 3e-3, "warmup": 2, "max_frames": 300, "log_interval": 10,
                    "save_interval": 1, "dev_interval": 10, "tempo": [0.9, 1.1],
                    "specaug": {"freq_width": 4, "time_width_ratio": 0.05}}
LM_PRETRAIN = {"hidden": 32, "layers": 1, "heads": 2, "kv_heads": 1, "intermediate": 64, "steps": 30, "batch": 4,
               "lr": 5e-3, "warmup": 2, "save_interval": 1, "num_translate_examples": 0}


def encoder_pretrain_args(root: Path, out: Path) -> List[str]:
    data = root / "data"
    return ["partlib.bin.pretrain_encoder", "--arch", str(root / "arch.json"), "--train", str(data / "train_en"),
            str(data / "train_de"), "--dev", str(data / "dev_en"), "--config", str(root / "encoder.yaml"),
            "--threads", "1", str(out)]


def lm_pretrain_args(root: Path, out: Path) -> List[str]:
    return ["partlib.bin.pretrain_lm", "--tokenizer", str(root / "tok"), "--data", str(root / "text_de"),
            str(root / "text_en"), "--config", str(root / "lm.yaml"), "--threads", "1", str(out)]


def same_safetensors(a: Path, b: Path) -> Callable[[], None]:
    """Every tensor of every ``*.safetensors`` file of ``b`` equals ``a``'s, bit for bit."""
    def check() -> None:
        from safetensors.torch import load_file

        files = sorted(f.name for f in a.glob("*.safetensors"))
        assert files and files == sorted(f.name for f in b.glob("*.safetensors"))
        for name in files:
            wa, wb = load_file(str(a / name)), load_file(str(b / name))
            assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), f"{b / name} differs from {a}"
        assert not b.with_name(b.name + ".checkpoints").exists(), "checkpoints left after a complete run"
    return check


def pretrain_killed(args_of: Callable[[Path, Path], List[str]], ref: str, steps: int,
                    seed: int) -> Callable[[Path, Shared], Run]:
    """Pretraining killed (-9) at a seeded random point after its first checkpoint, then run again:
    it resumes and ends with the uninterrupted run's weights."""
    def build(tmp: Path, shared: Shared) -> Run:
        root, out = shared.pretrained, tmp / "out"
        latest = tmp / "out.checkpoints" / "latest"

        def reached(step: int) -> Callable[[], bool]:
            return lambda: latest.is_file() and latest.read_text().strip() >= f"ckpt-{step:06d}.pt"
        step = int(np.random.default_rng(seed).integers(1, steps - 1))
        kill9_at(args_of(root, out), reached(step), seed, 0.3, last=reached(steps - 1))
        return Run(args_of(root, out), [p for p in root.iterdir()], after=same_safetensors(root / ref, out))
    return build


def damaged_checkpoint(how: str) -> Callable[[Path, Shared], Run]:
    """Training killed after checkpoint 4, whose file is then altered or cut: the run reports it by
    name, resumes from the previous checkpoint and still ends exactly."""
    def build(tmp: Path, shared: Shared) -> Run:
        root, exp = shared.trained, tmp / "exp"
        kill9_at(train_args(root, exp), checkpoint_reached(exp, 4), 0, 0.0)
        latest = exp / "s1" / "checkpoints" / "latest"
        bad = latest.parent / latest.read_text().strip()
        data = bytearray(bad.read_bytes())
        if how == "altered":
            data[len(data) // 2] ^= 0x55
        else:
            del data[len(data) // 2:]
        bad.write_bytes(bytes(data))
        return Run(train_args(root, exp), shared.protected(), after=resumes_exactly(root, exp))
    return build


def checkpoint_on_full_disk(tmp: Path, shared: Shared) -> Run:
    """The disk fills while checkpoint 3 is written: the error names it, checkpoint 2 stays the
    newest, intact; with space again the same command resumes exactly."""
    root, exp = shared.trained, tmp / "exp"

    def after() -> None:
        ck = exp / "s1" / "checkpoints"
        assert (ck / "latest").read_text() == "ckpt-000002.pt\n"
        assert not list(ck.glob(".*.tmp")) and not (exp / "s1" / "model").exists()
        res = run_cli(train_args(root, exp))
        assert res.returncode == 0 and "resumed from ckpt-000002.pt" in res.stderr, res.stderr[-3000:]
        resumes_exactly(root, exp)()
    return Run(train_args(root, exp), shared.protected(), enospc=".ckpt-000003.pt.*", after=after)


def nan_features(tmp: Path, shared: Shared) -> Run:
    """Two of every three training utterances have NaN features: every batch holds one, so a 4-step
    stage would skip all 4, fewer than nan_patience (5) in a row, which alone let such a run pass;
    the non-finite budget (5% of the 4 steps) fails the stage at its first skip, no model exported."""
    root, data, exp = shared.trained, tmp / "data", tmp / "exp"
    shutil.copytree(root / "data", data)
    for lang in ("en", "de"):
        d = data / f"train_{lang}"
        feats = dict(kaldiio.load_scp(str(d / "feats.scp")))
        for i, utt in enumerate(sorted(feats)):
            if i % 3:
                feats[utt] = np.full_like(feats[utt], np.nan)
        (d / "feats.ark").unlink()
        kaldiio.save_ark(str(d / "feats.ark"), feats, scp=str(d / "feats.scp"))
    return Run(train_args(root, exp, data) + ["--set", "stages.0.max_steps=4"], [data, *shared.protected()],
               absent=[exp / "s1" / "model"])


def same_features(ref: Path, got: Path) -> None:
    a, b = dict(kaldiio.load_scp(str(ref / "feats.scp"))), dict(kaldiio.load_scp(str(got / "feats.scp")))
    assert a.keys() == b.keys() and all(np.array_equal(a[u], b[u]) for u in a), f"{got} differs from {ref}"


def same_hyps(ref: Path, got: Path) -> None:
    assert (got / "hyp").read_text() == (ref / "hyp").read_text(), f"{got} differs from {ref}"


Progress = Callable[[Shared, Path, float], Callable[[], bool]]


def features_written(shared: Shared, out: Path, fraction: float) -> Callable[[], bool]:
    """Feature dumping into ``out`` has written ``fraction`` of the uninterrupted run's ark bytes."""
    total = sum(p.stat().st_size for p in (shared.trained / "ref_feats" / "data").glob("*.ark"))
    return lambda: sum(p.stat().st_size for p in (out / "data").glob("*.ark")) >= fraction * total


def time_elapsed(ref: str) -> Progress:
    """``fraction`` of the wall time of the uninterrupted run ``ref`` has passed (from now)."""
    def reached(shared: Shared, out: Path, fraction: float) -> Callable[[], bool]:
        start, limit = time.time(), fraction * shared.seconds[ref]
        return lambda: time.time() - start > limit
    return reached


def killed_then_rerun(args_of: Callable[[Path, Path], List[str]], ref: str, same: Callable[[Path, Path], None],
                      progress: Progress, seed: int) -> Callable[[Path, Shared], Run]:
    """``args_of(root, out)`` (feature dumping, decoding) killed (-9) at a seeded random point, when
    ``progress`` says it has done 20-80% of the uninterrupted run's work (a fixed delay would fall
    after the end on a fast machine), then run again: ``same(root / ref, out)``, the uninterrupted output."""
    def build(tmp: Path, shared: Shared) -> Run:
        root, out = shared.trained, tmp / "out"
        fraction = float(np.random.default_rng(seed).uniform(0.2, 0.8))
        kill9_at(args_of(root, out), progress(shared, out, fraction), seed, 0.0)
        return Run(args_of(root, out), shared.protected(), after=lambda: same(root / ref, out))
    return build


def full_disk(pattern: str, build: Callable[[Path, Shared], Tuple[List[str], List[Path]]]) -> Callable[[Path, Shared], Run]:
    """``build`` gives a command and its earlier outputs; files named like ``pattern`` fail with ENOSPC."""
    def make(tmp: Path, shared: Shared) -> Run:
        args, earlier = build(tmp, shared)
        return Run(args, [*earlier, *shared.protected()], enospc=pattern)
    return make


def results_md(tmp: Path, shared: Shared) -> Tuple[List[str], List[Path]]:
    old = tmp / "RESULTS.md"
    old.write_text("# RESULTS\nearlier results\n")
    return ["partlib.bin.results", str(REPO / "egs/mini_synth/part1/results/part_seed1"), "--out", str(old)], [old]


def shards(tmp: Path, shared: Shared) -> Tuple[List[str], List[Path]]:
    return ["partlib.bin.export_shards", "--out-dir", str(tmp / "shar"), str(shared.trained / "audio")], []


def decode_output(tmp: Path, shared: Shared) -> Tuple[List[str], List[Path]]:
    earlier = tmp / "earlier_decode"
    shutil.copytree(shared.trained / "ref_decode", earlier)
    return decode_args(shared.trained, tmp / "decode"), [earlier]


def features(tmp: Path, shared: Shared) -> Tuple[List[str], List[Path]]:
    return feats_args(shared.trained, tmp / "feats"), []


# ------------------------------------------------------------------------------------- the table
NAN = np.full(4000, np.nan, np.float32)
SCP = "{tmp}/data/feats.scp"
ARK = "{tmp}/data/feats.ark"
# the ark of decode()'s data dir, from its layout: train_fixtures.speech_dir writes 40 + 7·i frames of
# 80 float32 bins per utterance "spken-00i", each entry "<key> " "\0B" "FM " "\4" rows "\4" cols data
ENTRIES = [len("spken-000 ") + 15 + (40 + 7 * i) * 80 * 4 for i in range(3)]
ARK_SIZE = sum(ENTRIES)
LAST_OFFSET = sum(ENTRIES[:2]) + len("spken-000 ")

CASES: List[Case] = [
    # --- bad data dirs
    Case("missing_data_dir", filter_data(lambda src, tmp: shutil.rmtree(src)), "{tmp}/src: no such data directory"),
    Case("corrupt_audio", extract_feats(audio_file("a-2", raw=b"RIFF garbage " * 10)),
         "{tmp}/wav/a-2.wav: utterance 'a-2': cannot decode audio"),
    Case("empty_audio", extract_feats(audio_file("a-2", samples=np.zeros(0, np.float32))),
         "{tmp}/wav/a-2.wav: utterance 'a-2': empty audio"),
    Case("nan_audio", extract_feats(audio_file("b-1", samples=NAN)),
         "{tmp}/wav/b-1.wav: utterance 'b-1': audio contains NaN or Inf samples"),
    Case("failing_pipe", extract_feats(wav_value("a-1", "cat {tmp}/wav/gone.wav |")),
         "utterance 'a-1': command exited with code 1: 'cat {tmp}/wav/gone.wav'"),
    Case("non_utf8_text", filter_data(write("text", b"a-1 hello\na-2 caf\xe9\nb-1 hello\n")),
         "{tmp}/src/text:2: utterance 'a-2': not valid UTF-8"),
    Case("duplicate_keys", filter_data(write("text", b"a-1 hello\na-2 hello\na-2 again\nb-1 hello\n")),
         "{tmp}/src/text:3: utterance 'a-2': duplicate key"),
    Case("unsorted_keys", filter_data(write("text", b"a-2 hello\na-1 hello\nb-1 hello\n")),
         "{tmp}/src/text:2: utterance 'a-1': not sorted"),
    Case("text_and_wav_scp_keys_differ", filter_data(write("text", b"a-1 hello\na-2 hello\nb-2 hello\n")),
         "{tmp}/src/text:3: utterance 'b-2': utterance ids differ from those of utt2spk"),
    Case("segment_past_recording_end", filter_data(segments),
         "{tmp}/src/segments:2: utterance 'a-1-y': segment [0.3, 4.5] s (4.2 s) ends 4 s after the end of "
         "recording 'a-1' (0.5 s long; up to 0.5 s is tolerated)"),
    Case("skip_bad_with_every_utterance_bad", extract_feats(every_audio_bad, "--skip-bad"),
         "{tmp}/src: 3 of 3 utterances were skipped as bad (--skip-bad)"),
    # --- bad configs: the typo tables of test_config, each through the training CLI
    *(Case(f"schedule_typo_{i}", train(schedule_edit=edit), "{tmp}/conf/schedule_part.yaml: " + message)
      for i, (edit, message) in enumerate(SCHEDULE_TYPOS)),
    *(Case(f"model_config_typo_{i}", train(model=model_typo(change)), "{tmp}/model.yaml: " + message)
      for i, (change, message) in enumerate(MODEL_TYPOS)),
    # --- bad feature archives
    Case("missing_ark", decode(lambda data: (data / "feats.ark").unlink()),
         f"{SCP}:1: utterance 'spken-000': feature archive {ARK} does not exist"),
    Case("truncated_ark", decode(truncate_ark), f"{SCP}:3: utterance 'spken-002': {ARK} is truncated: the matrix at "
                                                f"offset {LAST_OFFSET} needs {ARK_SIZE} bytes, the file has {ARK_SIZE - 100}"),
    Case("offset_past_end_of_ark", decode(feats_entry(1, 99999)),
         f"{SCP}:2: utterance 'spken-001': offset 99999 is past the end of {ARK} ({ARK_SIZE} bytes)"),
    # --- bad model dirs
    Case("missing_encoder_dir_in_model_config", train(model=model_path("encoder", "{tmp}/no_whisper")),
         "encoder.path: model directory {tmp}/no_whisper does not exist"),
    Case("missing_llm_dir_in_model_config", train(model=model_path("llm", "{tmp}/no_llm")),
         "llm.path: model directory {tmp}/no_llm does not exist"),
    Case("hub_id_not_in_cache", train(model=model_path("llm", "partlib-test/not-cached")),
         "llm.path: 'partlib-test/not-cached' is neither a local directory nor in the Hugging Face cache"),
    Case("missing_model_dir", decode(model=lambda tmp, shared: tmp / "no_model"),
         "--model-dir: model directory {tmp}/no_model does not exist"),
    Case("model_dir_without_adapter", decode(model=copied_model(lambda d: (d / "adapter.safetensors").unlink())),
         "{tmp}/model: incomplete model directory: No such file or directory: {tmp}/model/adapter.safetensors"),
    Case("saved_model_names_a_missing_encoder", decode(model=copied_model(config_encoder("{tmp}/gone/whisper"))),
         "encoder.path: model directory {tmp}/gone/whisper does not exist"),
    Case("nan_features_in_training", nan_features,
         "stage s1: 1 step(s) skipped for a non-finite loss or gradient by step 0, more than nan_max_fraction = "
         "0.05 of 4 steps"),
    # --- interrupted runs
    *(Case(f"train_kill9_{seed}", train_killed(seed), "stage s1: resumed from ckpt-", status=0) for seed in (1, 2)),
    Case("train_sigterm", train_sigterm, "stage s1: stopped by SIGTERM after step", status=EXIT_PREEMPTED),
    Case("encoder_pretrain_kill9", pretrain_killed(encoder_pretrain_args, "ref_encoder", ENCODER_PRETRAIN["steps"], 1),
         "encoder CTC pretraining: resumed from ckpt-", status=0),
    Case("lm_pretrain_kill9", pretrain_killed(lm_pretrain_args, "ref_llm", LM_PRETRAIN["steps"], 1),
         "LM pretraining: resumed from ckpt-", status=0),
    Case("checkpoint_altered", damaged_checkpoint("altered"), ".pt: corrupt or truncated checkpoint", status=0),
    Case("checkpoint_truncated", damaged_checkpoint("truncated"), ".pt: corrupt or truncated checkpoint", status=0),
    *(Case(f"feats_kill9_{seed}", killed_then_rerun(feats_args, "ref_feats", same_features, features_written, seed),
           f"wrote features of {FEATS_UTTS} utterances", status=0) for seed in (1, 2)),
    *(Case(f"decode_kill9_{seed}", killed_then_rerun(decode_args, "ref_decode", same_hyps, time_elapsed("ref_decode"), seed),
           "decoded 3 utterances", status=0) for seed in (1, 2)),
    # --- full disks: the error names the file, the earlier one stays
    Case("full_disk_checkpoint", checkpoint_on_full_disk,
         "cannot write {tmp}/exp/s1/checkpoints/ckpt-000003.pt: No space left on device"),
    Case("full_disk_features", full_disk("*.ark", features), "cannot write {tmp}/feats/data/whisper_mel_80.1.ark: No space left"),
    Case("full_disk_shards", full_disk(".recording.*", shards),
         "cannot write shard 0 ({tmp}/shar/shards/cuts.000000.jsonl.gz, {tmp}/shar/shards/recording.000000.tar): No "
         "space left on device"),
    Case("full_disk_decode_output", full_disk(".hyp.*", decode_output), "cannot write {tmp}/decode/hyp: No space left"),
    Case("full_disk_results_md", full_disk(".RESULTS.md.*", results_md), "cannot write {tmp}/RESULTS.md: No space left"),
]


@pytest.fixture(scope="session")
def shared(tmp_path_factory) -> Shared:
    return Shared(tmp_path_factory.mktemp("shared"))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fault(case: Case, tmp_path: Path, shared: Shared) -> None:
    run = case.build(tmp_path, shared)
    before = tree_digest(run.protected)
    assert before, "a case must protect some files"
    res = run_case(run)
    assert res.returncode == case.status, res.stderr[-3000:]
    message = case.message.replace("{tmp}", str(tmp_path))
    # a failure says it in an error line; a stop or a recovery in the log
    level = {EXIT_BAD_INPUT: "[ERROR]", EXIT_PREEMPTED: "[WARNING]"}.get(case.status, "")
    lines = [line for line in res.stderr.splitlines() if level in line]
    assert any(message in line for line in lines), f"expected {message!r} in a {level} line of:\n{res.stderr[-3000:]}"
    assert_no_traceback(res)
    assert tree_digest(run.protected) == before, "an earlier output or an input was changed"
    assert not [p for p in run.absent if p.exists()]
    run.after()
