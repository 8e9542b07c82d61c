"""Shar that lhotse itself wrote (``CutSet.to_shar`` of a lhotse CutSet made from a Kaldi data dir
by lhotse's own importer), adopted with ``partlib.bin.adopt_shar``: the examples, audio and features
that streaming yields are the source data dirs', the audio stays in lhotse's tars, training from
them resumes exactly after a kill, and a cut that cannot train is named in one line."""
import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
from lhotse.kaldi import load_kaldi_data_dir

from partlib.common import ConfigError, DataError
from partlib.data import shards
from partlib.data.audio import AudioReader, load_audio
from partlib.data.datadir import DataDir
from partlib.data.examples import TaskSpec, frames_of_seconds
from partlib.data.lhotse_shar import adopt
from partlib.data.streaming import sources_of
from train_fixtures import audio_data, train_cmd, wait_for_checkpoint, weights

N_TRAIN = 12


def _lhotse_cuts(d: Path, other: str, lang: str):
    """The cuts of a Kaldi data dir as lhotse reads it, with the translations into ``other`` where
    lhotse recipes put them: en in the supervision's ``translated_text`` (lhotse's IWSLT'22 recipe),
    de with an English language name and the translations on the cut (partlib's export)."""
    recs, sups, _ = load_kaldi_data_dir(d, sampling_rate=16000)
    tr = DataDir.load(d).translations[other]
    out = []
    for cut in CutSet.from_manifests(recordings=recs, supervisions=sups).trim_to_supervisions():
        sup = cut.supervisions[0]
        if lang == "en":
            sup.custom = {"translated_text": {other: tr[cut.id]}}
        else:
            sup.language = "German"
            cut.custom = {"translations": {"English": tr[cut.id]}}
        out.append(cut)
    return out


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("lhotse_shar")
    audio_data(root / "data", n_train=N_TRAIN, n_dev=2)
    cuts = _lhotse_cuts(root / "data" / "train_en", "de", "en") + _lhotse_cuts(root / "data" / "train_de", "en", "de")
    (root / "lhotse").mkdir()
    # shards of 5: the third holds both languages
    CutSet.from_cuts(cuts).to_shar(root / "lhotse", fields={"recording": "flac"}, shard_size=5)
    res = subprocess.run([sys.executable, "-m", "partlib.bin.adopt_shar", str(root / "lhotse"),
                          str(root / "data" / "train_lh")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    return root


def _stage_data(root: Path, data, features: str):
    from partlib.models.builders import tiny_model_config
    from partlib.models.speech_llm import SpeechLLM
    from partlib.train.schedule import parse_schedule
    from partlib.train.stage_data import make_stage_data

    sched = parse_schedule({"seed": 3, "stages": [{
        "name": "s", "max_steps": 1, "batch": {"max_frames": 300, "max_tokens": 2000}, "sampling": {"window": 7},
        "tasks": [{"task": t, "data": data} for t in ("asr", "s2tt")],
        "trainable": {"encoder": "full", "adapter": "full", "llm": "frozen"}}]})
    model = SpeechLLM.from_config(tiny_model_config(root / "models", lora=False))
    return make_stage_data(sched.stages[0], model, str(root / "data"), 3, features), model


def _fields(e):  # the example without the data dir's name in its key
    return e.utt, e.task, e.src_lang, e.tgt_lang, e.num_frames, e.src_text, e.target, e.n_tokens


def test_adopted_shards_stream_the_source_data_dirs_examples_and_audio(root):
    from partlib.data.shards import ShardAudio
    from partlib.features.compute import compute_features
    from partlib.train.loader import StreamDataset

    lh = root / "data" / "train_lh"
    man = json.loads((lh / "shar" / "manifest.json").read_text())
    assert man["adopted_from"] == str(root / "lhotse") and man["translations"] == ["de", "en"]
    assert {k: v["utterances"] for k, v in man["languages"].items()} == {"en": N_TRAIN, "de": N_TRAIN}
    assert [r["utterances"] for r in man["shards"]] == [5, 5, 5, 5, 4]
    assert man["shards"][2]["languages"] == {"de": 3, "en": 2}
    # the audio is lhotse's, in place: no tar under the adopted dir, each shard's tar one of lhotse's
    assert not list(lh.rglob("*.tar")) and sorted(os.listdir(lh)) == ["shar"]
    assert [r["files"]["recording"]["path"] for r in man["shards"]] == \
        [str(root / "lhotse" / f"recording.{i:06d}.tar") for i in range(5)]
    # and lhotse still reads the adopted cut files with its own tars
    code = ("import json, sys\nfrom lhotse import CutSet\n"
            f"m = json.load(open({str(lh / 'shar' / 'manifest.json')!r}))\n"
            f"cuts = CutSet.from_shar(fields={{'cuts': [{str(lh / 'shar')!r} + '/' + r['files']['cuts']['path']"
            " for r in m['shards']], 'recording': [r['files']['recording']['path'] for r in m['shards']]})\n"
            "print(json.dumps({c.id: [c.supervisions[0].language, c.load_audio().shape[1]] for c in cuts}))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    dirs = {lang: DataDir.load(root / "data" / f"train_{lang}") for lang in ("en", "de")}
    assert json.loads(res.stdout) == {u: [lang, round(d.utt2dur[u] * 16000)]
                                      for lang, d in dirs.items() for u in d.utts}

    # every example of every epoch and reader split equals the in-memory path's over the Kaldi dirs
    mem, _ = _stage_data(root, ["train_en", "train_de"], "on_the_fly")
    st, model = _stage_data(root, ["train_lh"], "shards")
    want = Counter(map(_fields, mem.examples))
    assert len(want) == 4 * N_TRAIN and st.plan.sizes == {k: sum(len(b) for b in v) for k, v in mem.groups.items()}
    for n_readers in (1, 3):
        got = Counter()
        for reader in range(n_readers):
            for stream in st.plan.streams(reader, n_readers):
                while stream.pos.epoch == 0:  # after a batch, pos.epoch is the batch's epoch
                    batch = stream.next_batch()
                    got.update(_fields(e) for e, _, _ in batch if stream.pos.epoch == 0)
        assert got == want, f"{n_readers} readers"

    # audio: what the shards decode is the data dirs' (16-bit PCM; FLAC is lossless)
    readers = {lang: AudioReader(d) for lang, d in dirs.items()}
    for r in man["shards"]:
        tar = ShardAudio(Path(r["files"]["recording"]["path"]))
        for cut in shards.read_cuts(lh / "shar", r):
            lang = cut["supervisions"][0]["language"]
            assert np.max(np.abs(tar.load(cut["id"]) - readers[lang][cut["id"]]), initial=0) <= 1 / 32768
        tar.close()
    # the loader's batches: the features of the source audio
    batches = list(StreamDataset(st.plan, model.n_mels, 0, 1, 0, 0, 6))
    assert len(batches) == 6
    for b in batches:
        utts, langs = b["utt_ids"], b["src_langs"]
        ref = compute_features([readers[lang][u] for u, lang in zip(utts, langs)], model.n_mels, utts=utts)
        assert [int(n) for n in b["feat_lens"]] == [f.shape[0] for f in ref]
        for i, f in enumerate(ref):
            assert torch.allclose(b["feats"][i, : f.shape[0]], f, atol=1e-4)


def _tiny_shar(tmp: Path, cuts, name: str = "lhotse") -> Path:
    out = tmp / name
    out.mkdir()
    CutSet.from_cuts(cuts).to_shar(out, fields={"recording": "flac"}, shard_size=10)
    return out


def _cut(tmp: Path, utt: str, rate: int = 16000, channels: int = 1, seconds: float = 0.5, **sup) -> MonoCut:
    """A cut of a noise wav at ``rate`` Hz with one supervision (``sup`` overrides its fields)."""
    path = tmp / f"{utt}.wav"
    n = int(rate * seconds)
    sf.write(path, 0.1 * np.random.default_rng(len(utt)).standard_normal((n, channels)), rate, subtype="PCM_16")
    cut = Recording.from_file(path, recording_id=utt).to_cut()
    fields = dict(id=utt, recording_id=utt, start=0.0, duration=seconds, text="a dog runs", language="en")
    fields.update(sup)
    cut.supervisions = [SupervisionSegment(**fields)]
    return cut


def test_other_rates_are_resampled_and_changed_lhotse_files_are_named(tmp_path):
    lh = _tiny_shar(tmp_path, [_cut(tmp_path, "a8k", rate=8000, seconds=0.55), _cut(tmp_path, "b16k")])
    adopt(lh, tmp_path / "train")
    man = shards.load_manifest(tmp_path / "train" / "shar")
    cuts = {c["id"]: c for c in shards.read_cuts(tmp_path / "train" / "shar", man["shards"][0])}
    assert cuts["a8k"]["custom"]["num_frames"] == frames_of_seconds(0.55) == 55
    tar = shards.ShardAudio(Path(man["shards"][0]["files"]["recording"]["path"]))
    a8k = tar.load("a8k")
    assert len(a8k) == 8800 and np.array_equal(a8k, load_audio(str(tmp_path / "a8k.wav")))  # the same soxr, 16 kHz
    tar.close()
    spec = TaskSpec("asr", data=["train"])
    sources_of([spec], [[tmp_path / "train"]])
    # lhotse re-exported the dir with one more cut: the adoption no longer describes it
    for p in lh.iterdir():
        p.unlink()
    CutSet.from_cuts([_cut(tmp_path, "a8k", rate=8000), _cut(tmp_path, "b16k"), _cut(tmp_path, "c")]).to_shar(
        lh, fields={"recording": "flac"}, shard_size=10)
    stale = (r"adopted the lhotse Shar dir .*lhotse, whose cuts.000000.jsonl.gz has \d+ bytes, \d+ when adopted: "
             r"adopt it again \(python -m partlib.bin.adopt_shar")
    with pytest.raises(ConfigError, match=stale):
        sources_of([spec], [[tmp_path / "train"]])
    adopt(lh, tmp_path / "train")  # adopted again: current
    assert sources_of([spec], [[tmp_path / "train"]])[0].manifest["utterances"] == 3


@pytest.mark.parametrize("case, message", [
    ("no supervision", r"cuts.000000.jsonl.gz:2: utterance 'x': 0 supervisions: partlib trains on one per cut"),
    ("no text", r":2: utterance 'x': no text in the supervision"),
    ("no language", r":2: utterance 'x': no language in the supervision \(adopt_shar --language"),
    ("unknown language", r":2: utterance 'x': unknown language code 'Klingon'"),
    ("two channels", r":2: utterance 'x': a MultiCut of 2 channels: partlib trains on single-channel cuts"),
    ("no audio", r":2: utterance 'x': no audio: the Shar holds a placeholder"),
    ("a translation missing", r":2: utterance 'x': no translation into de, which other cuts of .* have"),
])
def test_a_cut_that_cannot_train_is_named_in_one_line(tmp_path, case, message):
    translated = {"translated_text": {"de": "ein hund läuft"}}
    ok = _cut(tmp_path, "a", custom=translated if case == "a translation missing" else None)
    cut = _cut(tmp_path, "x", channels=2 if case == "two channels" else 1)
    if case == "no supervision":
        cut.supervisions = []
    elif case == "no audio":
        cut.recording = None
    elif case in ("no text", "no language", "unknown language"):
        field, value = {"no text": ("text", " "), "no language": ("language", None),
                        "unknown language": ("language", "Klingon")}[case]
        setattr(cut.supervisions[0], field, value)
    lh = _tiny_shar(tmp_path, [ok, cut])
    with pytest.raises(DataError) as err:
        adopt(lh, tmp_path / "train")
    assert str(err.value).startswith(str(lh / "cuts.000000.jsonl.gz")) and "\n" not in str(err.value)
    assert re.search(message, str(err.value)), str(err.value)
    if case == "no supervision":  # the tool: that line, no traceback
        res = subprocess.run([sys.executable, "-m", "partlib.bin.adopt_shar", str(lh), str(tmp_path / "train")],
                             capture_output=True, text=True)
        assert res.returncode == 1 and "Traceback" not in res.stderr
        assert res.stderr.strip().endswith(f"ERROR] partlib.bin.adopt_shar: {err.value}"), res.stderr
    assert not (tmp_path / "train" / "shar" / "manifest.json").exists()
    if case == "no language":  # stated for the whole dir, the cut trains
        adopt(lh, tmp_path / "train", language="English")
        assert shards.load_manifest(tmp_path / "train" / "shar")["languages"]["en"]["utterances"] == 2


def test_a_kaldi_data_dir_or_a_dir_without_shar_is_refused(root, tmp_path):
    with pytest.raises(ConfigError, match=r"train_en is a Kaldi data dir \(wav.scp\): adopt lhotse shards into a dir"):
        adopt(root / "lhotse", root / "data" / "train_en")
    with pytest.raises(DataError, match="not a lhotse Shar dir"):
        adopt(root / "data", tmp_path / "x")
    lh = tmp_path / "nofields"
    lh.mkdir()
    CutSet.from_cuts([_cut(tmp_path, "a")]).to_shar(lh, fields={}, shard_size=10)
    with pytest.raises(DataError, match=r"no recording.NNNNNN.tar: partlib trains on the audio"):
        adopt(lh, tmp_path / "x")


# -- training --------------------------------------------------------------------------------
@pytest.mark.slow
def test_training_streams_adopted_shards_and_resumes_exactly_after_kill(root):
    from partlib.models.builders import tiny_model_config

    cfg = tiny_model_config(root / "models", lora=False)
    (root / "model.yaml").write_text(yaml.safe_dump(cfg))
    sched = {"seed": 1, "stages": [{
        "name": "s1", "max_steps": 12, "log_interval": 1, "save_interval": 1,
        "optim": {"lr": 3e-3}, "scheduler": {"type": "constant"}, "sampling": {"window": 9},
        "batch": {"max_frames": 300, "max_tokens": 2000},
        "dev": {"data": ["dev_*"], "interval": 6, "metric": "loss", "max_utts": 2},
        "tasks": [{"task": "asr", "data": ["train_lh"]}, {"task": "s2tt", "data": ["train_lh"]}],
        "trainable": {"encoder": "full", "adapter": "full", "llm": "frozen"}}]}
    f = root / "stream.yaml"
    f.write_text(yaml.safe_dump(sched))
    env = dict(os.environ, PART_DEVICE="cpu")
    cmd = lambda exp: train_cmd(root, exp, f) + ["--features", "shards", "--num-workers", "2"]  # noqa: E731
    full, killed = root / "exp" / "full", root / "exp" / "killed"
    res = subprocess.run(cmd(full), env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"streaming {4 * N_TRAIN} examples in 4 groups from 10 shards of 2 exports" in res.stderr  # 2 tasks
    info = json.loads((full / "s1" / "model" / "info.json").read_text())
    assert info["data"]["asr"] == {lang: {"utterances": N_TRAIN, "hours": pytest.approx(
        sum(DataDir.load(root / "data" / f"train_{lang}").utt2dur.values()) / 3600, abs=1e-4)} for lang in ("de", "en")}
    proc = subprocess.Popen(cmd(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_checkpoint(proc, killed / "s1" / "checkpoints" / "latest", "ckpt-000003.pt")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "s1" / "model").exists()
    res = subprocess.run(cmd(killed), env=env, capture_output=True, text=True)
    assert res.returncode == 0 and "resumed from ckpt-" in res.stderr, res.stderr[-3000:]
    a, b = weights(full / "s1" / "model"), weights(killed / "s1" / "model")
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
