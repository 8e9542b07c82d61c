"""Shard export (Lhotse Shar) and the streaming loader: the format Lhotse reads, atomic and
resumable export, long recordings decoded once, original bytes kept, the same examples as the
in-memory path, epoch semantics, disjoint readers, exact resume of streaming training."""
import gzip
import hashlib
import json
import os
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

from partlib.common import ConfigError, DataError
from partlib.data import shards
from partlib.data.audio import AudioReader, load_audio
from partlib.data.datadir import DataDir
from partlib.data.examples import TaskSpec
from partlib.data.streaming import StreamPlan, sources_of
from train_fixtures import audio_data, train_cmd, wait_for_checkpoint, weights as _weights


def _no_text(task, rows):
    """Text lengths for plans whose batches these tests never build."""
    return [0] * len(rows)


REPO = Path(__file__).resolve().parents[1]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _export(d: Path, **kw) -> dict:
    shards.export(d, opts=shards.ExportOptions(shard_utts=kw.pop("shard_utts", 10)), **kw)
    return json.loads((d / "shar" / "manifest.json").read_text())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    audio_data(root / "data", n_train=24, n_dev=3)
    for lang in ("en", "de"):
        _export(root / "data" / f"train_{lang}")
    return root


def test_export_is_lhotse_shar_with_the_data_dirs_audio_and_metadata(data):
    d = data / "data" / "train_en"
    man = json.loads((d / "shar" / "manifest.json").read_text())
    dd = DataDir.load(d)
    assert man["utterances"] == 24 and [r["utterances"] for r in man["shards"]] == [10, 10, 4]
    assert man["languages"]["en"]["hours"] == pytest.approx(sum(dd.utt2dur.values()) / 3600, abs=1e-4)
    assert man["source_hash"] == shards.source_hash(d) and man["translations"] == ["de"]
    for r in man["shards"]:
        for f in r["files"].values():
            assert _sha(d / "shar" / f["path"]) == f["sha256"] and (d / "shar" / f["path"]).stat().st_size == f["bytes"]
    # Lhotse's own reader, in a process that must not load torchaudio; audio as the data dir's
    code = ("import json, sys\nfrom lhotse import CutSet\n"
            f"cuts = CutSet.from_shar(in_dir={str(d / 'shar' / 'shards')!r})\n"
            "out = {c.id: [c.supervisions[0].text, c.supervisions[0].language, c.custom['translations'],"
            " c.custom['num_frames'], c.load_audio()[0].tolist()] for c in cuts}\n"
            "assert 'torchaudio' not in sys.modules\nprint(json.dumps(out))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout)
    reader = AudioReader(dd)
    assert sorted(got) == dd.utts
    for utt, (text, lang, tr, frames, samples) in got.items():
        assert (text, lang, tr) == (dd.text[utt], "en", {"de": dd.translations["de"][utt]})
        assert frames == round(dd.utt2dur[utt] * 16000) // 160
        assert np.array_equal(np.asarray(samples, np.float32), reader[utt])  # 16-bit PCM: FLAC is lossless


def test_rerun_keeps_complete_shards_finishes_a_partial_export_and_jobs_agree(data, tmp_path):
    d = data / "data" / "train_de"
    out = d / "shar"
    before = json.loads((out / "manifest.json").read_text())
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    # a kill while shard 1 was written: its completion record and tar gone, a temp file left
    (out / "manifest.json").unlink()
    (out / "done" / "000001.json").unlink()
    (out / "shards" / "recording.000001.tar").rename(out / "shards" / ".recording.000001.tar.tmp")
    after = _export(d)
    assert after == before  # byte-identical shards: same checksums
    assert not list((out / "shards").glob(".*"))  # the temp file of the killed export is gone
    for p in (out / "shards").glob("*.000000.*"):
        assert p.stat().st_mtime_ns == mtimes[p], f"{p.name} was rewritten"
    # other bounds: every shard of the new plan is rewritten (none of the old records passes)
    four = _export(d, shard_utts=4)
    assert [r["utterances"] for r in four["shards"]] == [4] * 6 and four["utterances"] == 24
    assert sorted(c["id"] for r in four["shards"] for c in shards.read_cuts(out, r)) == DataDir.load(d).utts
    assert _export(d) == before and len(list((out / "shards").iterdir())) == 6  # back: 3 shards, old ones removed
    # the same export by two jobs through the job runner
    other = tmp_path / "jobs"
    shards.export(d, other, shards.ExportOptions(shard_utts=10), nj=2, cmd=str(REPO / "utils" / "run.pl"))
    assert [r["files"] for r in json.loads((other / "manifest.json").read_text())["shards"]] == \
        [r["files"] for r in before["shards"]]
    # a changed data dir: the manifest no longer matches and every shard is written again
    dd = DataDir.load(d)
    copy = tmp_path / "train_de"
    dd.text = {u: t + " x" for u, t in dd.text.items()}
    dd.write(copy)
    m1 = _export(copy)
    dd.text = {u: t + " y" for u, t in dd.text.items()}
    dd.write(copy)
    m2 = _export(copy)
    assert m1["source_hash"] != m2["source_hash"]
    assert all(a["files"]["cuts"]["sha256"] != b["files"]["cuts"]["sha256"] for a, b in zip(m1["shards"], m2["shards"]))


def test_a_bad_data_dir_stops_with_a_named_error_and_no_manifest(data, tmp_path):
    dd = DataDir.load(data / "data" / "train_en")
    utts = dd.utts
    dd.wav_scp = dict(dd.wav_scp, **{utts[15]: str(tmp_path / "gone.wav")})
    dd.write(tmp_path / "bad")
    res = subprocess.run([sys.executable, "-m", "partlib.bin.export_shards", "--shard-utts", "10",
                          str(tmp_path / "bad")], capture_output=True, text=True)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert f"gone.wav: utterance '{utts[15]}': audio file not found" in res.stderr
    assert not (tmp_path / "bad" / "shar" / "manifest.json").exists()
    assert not list((tmp_path / "bad" / "shar" / "shards").glob(".*tmp"))  # no temp file left
    dd.utt2dur = None
    dd.write(tmp_path / "nodur")
    with pytest.raises(DataError, match="no utt2num_frames or utt2dur"):
        shards.export(tmp_path / "nodur")
    with pytest.raises(ConfigError, match="no complete shard export"):
        shards.load_manifest(tmp_path / "bad" / "shar")


def test_long_recordings_are_decoded_once_and_compressed_clips_keep_their_bytes(tmp_path, monkeypatch):
    import partlib.data.audio as audio
    from corpora_mini import make_wenetspeech, write_mp3
    from partlib.data.audio import write_utt2dur
    from partlib.data.corpora.wenetspeech import prepare_wenetspeech

    rng = np.random.default_rng(1)
    wav, segs = {}, {}
    for r in range(2):
        p = tmp_path / f"rec{r}.flac"
        sf.write(p, (0.1 * rng.standard_normal(16000 * 20)).astype(np.float32), 16000, subtype="PCM_16")
        wav[f"rec{r}"] = str(p)
        segs.update({f"rec{r}-{k:02d}": (f"rec{r}", 3.0 * k, 3.0 * k + 2.5) for k in range(6)})
    long = tmp_path / "long"
    DataDir({u: u[:4] for u in segs}, wav_scp=wav, segments=segs, text={u: "x" for u in segs},
            utt2lang={u: "zh" for u in segs}, utt2dur={u: 2.5 for u in segs}).write(long)
    prepare_wenetspeech(make_wenetspeech(tmp_path / "w"), tmp_path / "wd", "L", eval_subsets=())
    wenet = tmp_path / "wd" / "wenetspeech_train_l"
    write_utt2dur(wenet)
    calls = []
    real = audio.decode
    monkeypatch.setattr(audio, "decode", lambda value, key=None: calls.append(value) or real(value, key))
    for d, n_recordings in ((long, 2), (wenet, 2)):
        calls.clear()
        man = _export(d, shard_utts=4)
        dd = DataDir.load(d)
        assert man["utterances"] == len(dd) and len(calls) == n_recordings == len(set(calls))
        reader = AudioReader(dd)
        for r in man["shards"]:
            tar = shards.ShardAudio(d / "shar" / r["files"]["recording"]["path"])
            for cut in shards.read_cuts(d / "shar", r):
                assert np.max(np.abs(tar.load(cut["id"]) - reader[cut["id"]])) <= 1 / 32768
    assert [len(r["languages"]) and r["utterances"] for r in json.loads((long / "shar" / "manifest.json").read_text())["shards"]] == [6, 6]
    # short mp3 clips: the shard holds the original bytes
    mp3 = {f"c{i}": tmp_path / f"c{i}.mp3" for i in range(3)}
    for p in mp3.values():
        write_mp3(p, seconds=0.5)
    clips = tmp_path / "clips"
    DataDir({u: "s" for u in mp3}, wav_scp={u: str(p) for u, p in mp3.items()}, text={u: "x" for u in mp3},
            utt2lang={u: "de" for u in mp3}, utt2dur={u: 0.5 for u in mp3}).write(clips)
    man = _export(clips)
    import tarfile

    with tarfile.open(clips / "shar" / man["shards"][0]["files"]["recording"]["path"]) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if not m.name.endswith(".json")}
    assert members == {f"{u}.mp3": p.read_bytes() for u, p in mp3.items()}
    tar = shards.ShardAudio(clips / "shar" / man["shards"][0]["files"]["recording"]["path"])
    assert np.array_equal(tar.load("c1"), load_audio(str(mp3["c1"])))


def _stage_data(root: Path, features: str, tasks=("asr", "s2tt"), window: int = 7, world_size: int = 1):
    from partlib.models.builders import tiny_model_config
    from partlib.models.speech_llm import SpeechLLM
    from partlib.train.schedule import parse_schedule
    from partlib.train.stage_data import make_stage_data

    cfg = tiny_model_config(root / "models", lora=False)
    sched = parse_schedule({"seed": 3, "stages": [{
        "name": "s", "max_steps": 1, "batch": {"max_frames": 300, "max_tokens": 2000}, "sampling": {"window": window},
        "tasks": [{"task": t, "data": ["train_*"]} for t in tasks],
        "trainable": {"encoder": "full", "adapter": "full", "llm": "frozen"}}]})
    return make_stage_data(sched.stages[0], SpeechLLM.from_config(cfg), str(root / "data"), 3, features, world_size)


def _epochs(stream, n: int, world_size: int = 1):
    """The examples of the stream's first ``n`` epochs (after each batch, ``pos.epoch`` is its epoch);
    every batch within its rank's share of the stage's global budget (300 frames, 2000 tokens, 256
    utterances over ``world_size`` ranks)."""
    out = [[] for _ in range(n + 1)]
    while stream.pos.epoch < n:
        batch = [e for e, _, _ in stream.next_batch()]
        assert batch and len(batch) * max(e.num_frames for e in batch) <= 300 // world_size
        assert len(batch) * max(e.n_tokens for e in batch) <= 2000 // world_size and len(batch) <= 256 // world_size
        out[stream.pos.epoch] += batch
    return out[:n]


def _fields(e):
    return e.key, e.task, e.src_lang, e.tgt_lang, e.num_frames, e.src_text, e.target, e.n_tokens


def test_streaming_gives_the_in_memory_examples_readers_split_them_and_epochs_repeat(data):
    mem = _stage_data(data, "on_the_fly")
    st = _stage_data(data, "shards")
    assert st.plan.sizes == {k: sum(len(b) for b in v) for k, v in mem.groups.items()}
    assert np.array_equal(st.plan.mixture.probs, mem.sampler.probs)
    want = Counter(map(_fields, mem.examples))
    two_ranks = _stage_data(data, "shards", world_size=2).plan
    assert (st.plan.limits, two_ranks.limits) == ((300, 2000, 256), (150, 1000, 128))
    # 8 and 16 readers > 3 shards per group: shards are split into strided slices (16: of the shards of
    # 10, 10 and 4 utterances, six slices each, the last shard's two empty ones dropped); 8 and 16
    # readers as 2 ranks x 4 and 8 workers: batches of half the budget, the same examples
    for world, n_readers in ((1, 1), (1, 3), (1, 8), (1, 16), (2, 8), (2, 16)):
        plan = st.plan if world == 1 else two_ranks
        got = [Counter(), Counter()]
        for reader in range(n_readers):
            for stream in plan.streams(reader, n_readers):
                epochs = _epochs(stream, 2, world)
                for i, exs in enumerate(epochs):
                    got[i].update(map(_fields, exs))
                if n_readers == 1:  # a stream that runs dry starts its next epoch in another order
                    assert [e.key for e in epochs[0]] != [e.key for e in epochs[1]]
                    assert [e.key for e in epochs[0]] != sorted(e.key for e in epochs[0])  # shuffled
        # over the readers, every epoch holds each example exactly once (pieces are dealt anew)
        assert got[0] == want and got[1] == want, f"{world} rank(s), {n_readers} readers"
    # more readers than utterance slices: each reader still streams (slices repeat among readers)
    for reader in (0, 17, 31):
        for stream in st.plan.streams(reader, 32):
            assert all(_epochs(stream, 3))
    # a stream's position restores exactly, mid-window
    a, b = st.plan.streams(1, 3)[2], st.plan.streams(1, 3)[2]
    for _ in range(5):
        a.next_batch()
    b.restore(a.state())
    assert [[_fields(e) for e, _, _ in a.next_batch()] for _ in range(6)] == \
        [[_fields(e) for e, _, _ in b.next_batch()] for _ in range(6)]


def test_stale_or_missing_exports_are_named(data, tmp_path):
    spec = TaskSpec("asr", data=["x"])
    with pytest.raises(ConfigError, match="no complete shard export"):
        sources_of([spec], [[data / "data" / "dev_en"]])
    d = tmp_path / "train_en"
    DataDir.load(data / "data" / "train_en").write(d)
    os.symlink(data / "data" / "train_en" / "shar", d / "shar")
    sources_of([spec], [[d]])
    (d / "utt2dur").write_text((d / "utt2dur").read_text().replace(" 0.4\n", " 0.41\n", 1))
    with pytest.raises(ConfigError, match="exported from an earlier state"):
        sources_of([spec], [[d]])
    with pytest.raises(ConfigError, match="window"):
        StreamPlan([spec], [], {"asr": 1.0}, 1.0, 0, 0, (1, 1, 1), _no_text, len)


# -- streaming training ------------------------------------------------------------------------
def _train_cmd(root: Path, exp: Path, sched: Path, workers: int):
    return train_cmd(root, exp, sched) + ["--features", "shards", "--num-workers", str(workers)]


@pytest.fixture(scope="module")
def trained(data):
    from partlib.models.builders import tiny_model_config

    cfg = tiny_model_config(data / "models", lora=False)
    (data / "model.yaml").write_text(yaml.safe_dump(cfg))
    sched = {"seed": 1, "stages": [{
        "name": "s1", "max_steps": 10, "log_interval": 1, "save_interval": 1, "accum_grad": 2,
        "optim": {"lr": 3e-3}, "scheduler": {"type": "constant"}, "sampling": {"window": 9},
        "batch": {"max_frames": 300, "max_tokens": 2000},
        "specaug": {"freq_masks": 1, "freq_width": 5, "time_masks": 1, "time_width_ratio": 0.1},
        "dev": {"data": ["dev_*"], "interval": 5, "metric": "loss", "max_utts": 4},
        "tasks": [{"task": "asr", "data": ["train_*"]}, {"task": "s2tt", "data": ["train_*"]}],
        "trainable": {"encoder": "full", "adapter": "full", "llm": "frozen"}}]}
    f = data / "stream.yaml"
    f.write_text(yaml.safe_dump(sched))
    return f


def _kill_and_resume(root, sched, exp, cmd, env, ckpt="ckpt-000004.pt"):
    proc = subprocess.Popen(cmd(exp), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_checkpoint(proc, exp / "s1" / "checkpoints" / "latest", ckpt)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (exp / "s1" / "model").exists()
    res = subprocess.run(cmd(exp), env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_training_resumes_exactly_after_kill(data, trained, workers):
    env = dict(os.environ, PART_DEVICE="cpu")
    cmd = lambda exp: _train_cmd(data, exp, trained, workers)  # noqa: E731
    full, killed = data / "exp" / f"full{workers}", data / "exp" / f"killed{workers}"
    res = subprocess.run(cmd(full), env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "streaming 96 examples in 4 groups from 12 shards" in res.stderr
    res = _kill_and_resume(data, trained, killed, cmd, env)
    assert "resumed from ckpt-" in res.stderr
    a, b = _weights(full / "s1" / "model"), _weights(killed / "s1" / "model")
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    info = json.loads((full / "s1" / "model" / "info.json").read_text())
    assert info["data"]["asr"]["en"]["utterances"] == 24 and info["target_languages"] == ["de", "en"]
    if workers == 2:  # another layout cannot continue this data order
        ckpts = sorted((killed / "s1" / "checkpoints").glob("ckpt-*.pt"))
        state = torch.load(ckpts[0], weights_only=False)
        assert state["loader"]["layout"] == [1, 2] and state["loader"]["streams"]
        other = data / "exp" / "relayout"
        (other / "s1" / "checkpoints").mkdir(parents=True)
        for p in [ckpts[0], ckpts[0].parent / "latest"]:
            (other / "s1" / "checkpoints" / p.name).write_bytes(p.read_bytes())
        (other / "s1" / "checkpoints" / "latest").write_text(ckpts[0].name + "\n")
        res = subprocess.run(_train_cmd(data, other, trained, 0), env=env, capture_output=True, text=True)
        assert res.returncode != 0 and "Traceback" not in res.stderr
        assert "laid out for 1 process(es) x 2 reader(s)" in res.stderr
        # the same layout but another window: the saved positions do not apply
        changed = data / "stream_window.yaml"
        sched = yaml.safe_load(trained.read_text())
        sched["stages"][0]["sampling"]["window"] = 8
        changed.write_text(yaml.safe_dump(sched))
        res = subprocess.run(_train_cmd(data, other, changed, 2), env=env, capture_output=True, text=True)
        assert res.returncode != 0 and "Traceback" not in res.stderr
        assert "streaming data changed since this checkpoint" in res.stderr
        # an example longer than the token bound, found in a worker: the message, not the worker's traceback
        res = subprocess.run(_train_cmd(data, data / "exp" / "tokens", trained, 2) + ["--set", "stages.0.batch.max_tokens=30"],
                             env=env, capture_output=True, text=True)
        assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr[-2000:]
        assert "batch.max_tokens=30 is smaller than the longest example" in res.stderr


@pytest.mark.slow
def test_two_process_streaming_resumes_exactly(data, trained):
    env = dict(os.environ, PART_DEVICE="cpu")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29541"]
    cmd = lambda exp: torchrun + _train_cmd(data, exp, trained, 2)[1:]  # noqa: E731  (2 ranks x 2 workers)
    full, killed = data / "exp" / "ddp_full", data / "exp" / "ddp_killed"
    res = subprocess.run(cmd(full), env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    _kill_and_resume(data, trained, killed, cmd, env)
    a, b = _weights(full / "s1" / "model"), _weights(killed / "s1" / "model")
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    state = torch.load(killed / "s1" / "checkpoints" / "ckpt-000010.pt", weights_only=False)
    assert state["loader"]["layout"] == [2, 2] and set(state["loader"]["streams"]) == {0, 1, 2, 3}


def test_cut_files_are_gzip_jsonl_of_lhotse_cuts(data):
    r = json.loads((data / "data" / "train_en" / "shar" / "manifest.json").read_text())["shards"][0]
    with gzip.open(data / "data" / "train_en" / "shar" / r["files"]["cuts"]["path"], "rt") as f:
        from lhotse import MonoCut

        cut = MonoCut.from_dict(json.loads(f.readline()))
    assert cut.supervisions[0].language == "en" and cut.recording.sampling_rate == 16000


def test_a_direction_without_translations_is_named_before_streaming(data):
    spec = TaskSpec("s2tt", data=["train_en"], directions=["en-fr"])
    with pytest.raises(ConfigError, match=r"en->fr: train_en has no text.fr \(translations present: \['de'\]\)"):
        StreamPlan([spec], sources_of([spec], [[data / "data" / "train_en"]]), {"s2tt": 1.0}, 1.0, 0, 10,
                   (300, 2000, 10), _no_text, len)


def test_plan_time_errors_and_a_task_that_makes_nothing(data, tmp_path):
    en = data / "data" / "train_en"
    spec = TaskSpec("asr", data=["train_en"], langs=["fr"])
    with pytest.raises(ConfigError, match=r"task 'asr' has no examples .* for languages \['fr'\]"):
        StreamPlan([spec], sources_of([spec], [[en]]), {"asr": 1.0}, 1.0, 0, 10, (300, 2000, 10), _no_text, len)
    spec = TaskSpec("asr", data=["train_en"])
    with pytest.raises(ConfigError, match=r"batch.max_frames=50 is smaller than the longest utterance .* \(90 frames\)"):
        StreamPlan([spec], sources_of([spec], [[en]]), {"asr": 1.0}, 1.0, 0, 10, (50, 2000, 10), _no_text, len)
    a, b = (StreamPlan([spec], sources_of([spec], [[en]]), {"asr": 1.0}, 1.0, 0, w, (300, 2000, 10),
                       _no_text, len).fingerprint() for w in (10, 11))
    assert a != b
    # the per-rank bounds are part of the data order: the same budget over 2 ranks is another one
    # (a checkpoint streamed with full-budget batches per rank does not resume into halved ones)
    halved = StreamPlan([spec], sources_of([spec], [[en]]), {"asr": 1.0}, 1.0, 0, 10, (300, 2000, 10),
                        _no_text, len, world_size=2)
    assert halved.limits == (150, 1000, 5) and halved.fingerprint() != a
    with pytest.raises(ConfigError, match=r"batch.max_frames=160 \(80 per rank of 2\) is smaller than the longest"):
        StreamPlan([spec], sources_of([spec], [[en]]), {"asr": 1.0}, 1.0, 0, 10, (160, 2000, 10), _no_text,
                   len, world_size=2)
    with pytest.raises(ConfigError, match="batch.max_utts=3 bounds a micro-batch over all 4 ranks"):
        StreamPlan([spec], sources_of([spec], [[en]]), {"asr": 1.0}, 1.0, 0, 10, (300, 2000, 3), _no_text,
                   len, world_size=4)
    # one-word texts: the lm task makes no example of any of them; streaming says so instead of spinning
    utts = [f"t-{i:02d}" for i in range(5)]
    DataDir({u: "t" for u in utts}, text={u: "word" for u in utts}, utt2lang={u: "en" for u in utts}).write(tmp_path / "words")
    _export(tmp_path / "words")
    from partlib.models.builders import tiny_model_config
    from partlib.models.prompt import PromptLengths
    from partlib.models.speech_llm import SpeechLLM

    model = SpeechLLM.from_config(tiny_model_config(tmp_path / "m", lora=False))
    spec = TaskSpec("lm", data=["words"])
    plan = StreamPlan([spec], sources_of([spec], [[tmp_path / "words"]]), {"lm": 1.0}, 1.0, 0, 2,
                      (300, 2000, 10), PromptLengths(model.prompt), len)
    with pytest.raises(ConfigError, match="task 'lm' makes no examples of the en utterances of reader 0 of 1"):
        plan.streams(0, 1)[0].next_batch()
