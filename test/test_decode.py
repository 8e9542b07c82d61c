"""Decoding with a tiny model trained in the test: batch-invariant greedy search, beam search,
parallel jobs with resume, Kaldi-format outputs, the audio controls and option errors."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from partlib.common import ConfigError
from partlib.data.datadir import DataDir
from partlib.data.dirtools import combine_data_dirs
from partlib.data.kv import read_kv
from partlib.data.batching import collate
from partlib.features.source import FeatureSource
from partlib.infer import control
from partlib.infer.decode import decode_dir, decode_examples, derangement, generate_hyps
from partlib.train.schedule import parse_schedule
from partlib.train.trainer import Trainer
from train_fixtures import speech_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(model, model_dir, root): a tiny model trained on asr + s2tt until its output is sentence-like;
    data/test mixes both languages (12 utterances of 40-75 frames)."""
    from partlib.models.builders import tiny_model_config
    from partlib.models.speech_llm import SpeechLLM

    root = tmp_path_factory.mktemp("decode")
    rng = np.random.default_rng(0)
    for lang, other in (("en", "de"), ("de", "en")):
        speech_dir(root / "data" / f"train_{lang}", lang, range(6), other, rng)
    combine_data_dirs(root / "data" / "test", [root / "data" / "train_en", root / "data" / "train_de"])
    sched = {"seed": 1, "stages": [{
        "name": "s1", "max_steps": 80, "log_interval": 80, "save_interval": 80,
        "optim": {"lr": 3e-3}, "scheduler": {"type": "constant"},
        "batch": {"max_frames": 800, "max_tokens": 4000},
        "tasks": [{"task": "asr", "data": ["train_*"]}, {"task": "s2tt", "data": ["train_*"]}],
        "trainable": {"encoder": "full", "adapter": "full", "llm": "full"}}]}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model_dir = Trainer(parse_schedule(sched), tiny_model_config(root / "models", lora=False), root / "exp",
                            data_root=str(root / "data"), tensorboard=False).run()[0]
    finally:
        torch.set_num_threads(threads)
    return SpeechLLM.from_pretrained(model_dir), model_dir, root


@pytest.fixture(scope="module")
def greedy(trained, tmp_path_factory):
    """Greedy ASR hypotheses of data/test at batch size 1, and the output dir."""
    model, _, root = trained
    out = tmp_path_factory.mktemp("greedy_b1")
    return decode_dir(model, root / "data" / "test", out, batch_size=1), out


def _check_kaldi_outputs(out: Path, data: Path, ref_of=None) -> dict:
    """hyp/ref/utt2lang are C-sorted Kaldi files covering exactly the data dir's utterances."""
    d = DataDir.load(data)
    hyp = read_kv(out / "hyp", allow_empty=True, check_sorted=True)
    ref = read_kv(out / "ref", check_sorted=True)
    utt2lang = read_kv(out / "utt2lang", check_sorted=True)
    assert list(hyp) == list(ref) == list(utt2lang) == d.utts
    assert ref == (ref_of if ref_of is not None else d.text)
    assert utt2lang == d.utt2lang
    return hyp


def test_greedy_is_batch_invariant(trained, greedy, tmp_path):
    model, _, root = trained
    h1, out1 = greedy
    h16 = decode_dir(model, root / "data" / "test", tmp_path, batch_size=16)
    assert h16 == h1
    assert (out1 / "hyp").read_bytes() == (tmp_path / "hyp").read_bytes()
    # the model was trained: its output is not one constant string, and some of it is right
    assert len(set(h1.values())) >= 4
    text = DataDir.load(root / "data" / "test").text
    assert sum(h1[u] == text[u] for u in h1) >= 2, h1
    assert _check_kaldi_outputs(out1, root / "data" / "test") == h1
    assert not (out1 / "tgt_lang").exists()


def test_beam_search(trained, tmp_path):
    model, _, root = trained
    hyps = decode_dir(model, root / "data" / "test", tmp_path, num_beams=3, batch_size=4)
    assert _check_kaldi_outputs(tmp_path, root / "data" / "test") == hyps
    assert all(isinstance(h, str) for h in hyps.values()) and any(hyps.values())
    assert '"num_beams": 3' in (tmp_path / "decode.json").read_text()


def test_outputs_in_trouble_are_decoded_again_with_beams(trained, tmp_path):
    model, _, root = trained
    data = root / "data" / "test"
    examples = decode_examples(model, data, "asr", None)
    source = FeatureSource([DataDir.load(data)], model.n_mels, "auto")
    trouble = control.Trouble({"asr": {"en": 5.0, "de": 5.0}}, rate_factor=2.0, beams=3)  # bound: 10 tokens/s

    def alone(e, **opts):
        batch = collate([e], source.load([(e.dir_index, e.utt)]))
        batch["targets"] = None
        return model.hypotheses(batch, max_new_tokens=12, **opts)[0]

    greedy = {e.key: alone(e) for e in examples}
    expected = {}
    for e in examples:
        h = greedy[e.key]
        why = (["budget"] if not h.ended else []) + (["rate"] if h.n_tokens / max(1.0, e.num_frames / 100) > 10 else [])
        if why:
            expected[e.key] = why
    assert 0 < len(expected) < len(examples)  # both kinds present
    decoded = generate_hyps(model, examples, source, batch_size=5, trouble=trouble, max_new_tokens=12)
    assert decoded.troubles == expected
    for e in examples:
        want = alone(e, num_beams=3) if e.key in expected else greedy[e.key]
        assert decoded.hyps[e.key] == " ".join(want.text.split()), e.key
    assert generate_hyps(model, examples, source, max_new_tokens=12).troubles == {}
    with pytest.raises(ConfigError, match="greedy"):
        generate_hyps(model, examples, source, trouble=trouble, num_beams=2)
    # a decode dir lists them, counted in decode.json
    decode_dir(model, data, tmp_path, trouble=trouble, max_new_tokens=12, batch_size=5)
    utt = {e.key: e.utt for e in examples}
    assert read_kv(tmp_path / "troubles") == {utt[k]: ",".join(v) for k, v in sorted(expected.items())}
    counts = json.loads((tmp_path / "decode.json").read_text())["redecode"]["counts"]
    assert counts == {"redecoded": len(expected), "budget": sum("budget" in v for v in expected.values()),
                      "rate": sum("rate" in v for v in expected.values()), "repeat": 0}


def test_s2tt_writes_tgt_lang(trained, tmp_path):
    model, _, root = trained
    data = root / "data" / "train_de"
    hyps = decode_dir(model, data, tmp_path, task="s2tt", tgt_lang="en")
    assert (tmp_path / "tgt_lang").read_text() == "en\n"
    assert _check_kaldi_outputs(tmp_path, data, ref_of=DataDir.load(data).translations["en"]) == hyps


def test_option_errors(trained, tmp_path):
    model, _, root = trained
    with pytest.raises(ConfigError, match="tgt-lang"):
        decode_dir(model, root / "data" / "train_de", tmp_path / "a", task="s2tt")
    with pytest.raises(ConfigError, match="control for speech tasks"):
        decode_dir(model, root / "data" / "train_de", tmp_path / "b", task="t2tt", tgt_lang="en", audio="shuffled")
    with pytest.raises(ConfigError, match="audio must be"):
        decode_dir(model, root / "data" / "train_de", tmp_path / "c", audio="silence")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_shuffled_audio_feeds_another_utterances_features(trained, greedy, tmp_path):
    model, _, root = trained
    real, _ = greedy
    utts = DataDir.load(root / "data" / "test").utts
    perm = derangement(len(utts), seed=3)
    assert not np.any(perm == np.arange(len(utts)))
    shuffled = decode_dir(model, root / "data" / "test", tmp_path, audio="shuffled", seed=3)
    assert _check_kaldi_outputs(tmp_path, root / "data" / "test") == shuffled
    # Within one language the prompt is the same for every utterance, so (greedy search being batch
    # invariant) utterance i decodes exactly like the utterance whose features it was given.
    lang = DataDir.load(root / "data" / "test").utt2lang
    same = [(u, utts[j]) for u, j in zip(utts, perm) if lang[u] == lang[utts[j]]]
    assert same
    assert all(shuffled[u] == real[v] for u, v in same)
    assert any(shuffled[u] != real[u] for u in utts)


def test_no_audio_control(trained, tmp_path):
    model, _, root = trained
    data = root / "data" / "test"
    hyps = decode_dir(model, data, tmp_path, audio="none")
    assert _check_kaldi_outputs(tmp_path, data) == hyps
    assert '"audio": "none"' in (tmp_path / "decode.json").read_text()
    # without speech the prompt is all there is: one output per language
    lang = DataDir.load(data).utt2lang
    for code in ("en", "de"):
        assert len({h for u, h in hyps.items() if lang[u] == code}) == 1


def _cli(model_dir: Path, data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "partlib.bin.decode", "--model-dir", str(model_dir), "--data-dir", str(data),
           "--threads", "1", *extra, str(out)]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)


@pytest.mark.slow
def test_cli_parallel_jobs_match_one_job_and_resume(trained, greedy, tmp_path):
    _, model_dir, root = trained
    real, out1 = greedy
    data = root / "data" / "test"
    out = tmp_path / "nj2"
    res = _cli(model_dir, data, out, "--nj", "2", "--cmd", "utils/run.pl")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "hyp").read_bytes() == (out1 / "hyp").read_bytes()
    for name in ("ref", "utt2lang"):
        assert (out / name).read_bytes() == (out1 / name).read_bytes()
    logs = sorted((out / "log").glob("decode.*.log"))
    assert [p.name for p in logs] == ["decode.1.log", "decode.2.log"]
    assert '"num_utts": 12' in (out / "decode.json").read_text()
    # a finished decode is not redone
    stamps = {p: p.stat().st_mtime_ns for p in logs + [out / "hyp"]}
    res = _cli(model_dir, data, out, "--nj", "2", "--cmd", "utils/run.pl")
    assert res.returncode == 0 and "already done" in res.stderr
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # after a crash that left one job finished, only the other job decodes again
    split = sorted(out.glob("split*"))[0]
    (out / "hyp").unlink()
    (split / "2" / "hyp").unlink()
    kept = (split / "1" / "hyp").stat().st_mtime_ns
    res = _cli(model_dir, data, out, "--nj", "2", "--cmd", "utils/run.pl")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (split / "1" / "hyp").stat().st_mtime_ns == kept
    assert (split / "2" / "hyp").is_file()
    assert (out / "hyp").read_bytes() == (out1 / "hyp").read_bytes()


@pytest.mark.slow
def test_decode_sets_one_process_and_parallel_jobs_agree(trained, greedy, tmp_path):
    """decode_sets names each decode dir by the task registry's layout, equals single decodes, and
    with --nj 2 (part.sh --decode_nj 2) gives the same files through parallel jobs, its decoding
    options (here --max-new-tokens) reaching every job."""
    _, model_dir, root = trained
    real, out1 = greedy
    specs = "asr:test s2tt:train_de:en"
    base = [sys.executable, "-m", "partlib.bin.decode_sets", "--model-dir", str(model_dir), "--data-root",
            str(root / "data"), "--decodes", specs, "--threads", "1"]
    one, jobs = tmp_path / "one", tmp_path / "jobs"
    for out, extra in ((one, []), (jobs, ["--nj", "2", "--cmd", "utils/run.pl"])):
        res = subprocess.run([*base, "--max-new-tokens", "6", "--redecode", "--script-mask", *extra, str(out)],
                             cwd=REPO, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-3000:]
        assert sorted(p.name for p in out.glob("decode_*")) == ["decode_test_asr", "decode_train_de_to_en_s2tt"]
    for name in ("decode_test_asr", "decode_train_de_to_en_s2tt"):
        for f in ("hyp", "ref", "utt2lang", "troubles"):
            assert (jobs / name / f).read_bytes() == (one / name / f).read_bytes(), (name, f)
        opts = [json.loads((d / name / "decode.json").read_text()) for d in (one, jobs)]
        assert opts[0]["max_new_tokens"] == opts[1]["max_new_tokens"] == 6 and opts[0]["script_mask"] is True
        assert opts[0]["redecode"] == opts[1]["redecode"] and opts[0]["redecode"]["counts"]["redecoded"] == len(
            read_kv(one / name / "troubles", allow_empty=True))
    assert (one / "decode_train_de_to_en_s2tt" / "tgt_lang").read_text().split() == ["en"]
    assert (one / "decode_test_asr" / "ref").read_bytes() == (out1 / "ref").read_bytes()
    bad = subprocess.run([*base[:-2], "--decodes", "s2tt:train_de", str(tmp_path / "bad")], cwd=REPO,
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "needs a target language" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_s2tt_without_tgt_lang_fails(trained, tmp_path, caplog):
    from partlib.bin.decode import main

    _, model_dir, root = trained
    out = tmp_path / "st"
    assert main(["--model-dir", str(model_dir), "--data-dir", str(root / "data" / "train_de"), "--task", "s2tt",
                 str(out)]) == 1
    assert "needs --tgt-lang" in caplog.text
    assert not (out / "hyp").exists()
