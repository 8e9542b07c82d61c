"""Bad input to the user-facing tools, as a new user gives it: every case ends with its exit status
(1: one line naming the input; 2: argparse's usage line naming the option), no traceback and nothing
written. Also: a model refuses what it was not trained on (info.json), and outputs get the file
modes a plain ``open`` / ``mkdir`` would (umask respected)."""
import logging
import os
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from partlib.bin import datadir, export, filter_data, plan, results, score, transcribe
from partlib.common import ConfigError, atomic_write, replace_dir
from partlib.infer.transcribe import Transcriber
from partlib.models import card
from partlib.models.builders import tiny_model_config
from partlib.models.speech_llm import SpeechLLM
from partlib.train import layout

torch.set_num_threads(1)

# what the default recipe's model knows, in the shape training exports it: asr and lid in en and de,
# speech translation from English into four languages
INFO = {"stage": "s", "experiment": "t",
        "tasks": [{"task": "asr", "weight": 1.0}, {"task": "s2tt", "weight": 1.0}, {"task": "lid", "weight": 0.1}],
        "data": {"asr": {"de": {"utterances": 2, "hours": 0.1}, "en": {"utterances": 2, "hours": 0.1}},
                 "s2tt": {"en": {"utterances": 2, "hours": 0.1}},
                 "lid": {"de": {"utterances": 2, "hours": 0.1}, "en": {"utterances": 2, "hours": 0.1}}},
        "languages": ["de", "en"], "target_languages": ["de", "es", "fr", "zh"],
        "directions": {"s2tt": {"en": ["de", "es", "fr", "zh"]}}}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Inputs of every case, relative to this folder: exp/s/model (an exported stage model with
    INFO), nolid/ (the same model without lid data), audio, Kaldi files, configs."""
    root = tmp_path_factory.mktemp("bad_inputs")
    torch.manual_seed(0)
    cfg = tiny_model_config(root / "pretrained", lora=False)
    model = SpeechLLM.from_config(cfg)

    def exported(out: Path, info: dict) -> None:
        def write(tmp: Path) -> None:
            model.save_pretrained(tmp, self_contained=True)
            card.write(tmp, info, model.config)
        layout.write_exported(out, write)

    exported(root / "exp" / "s" / "model", INFO)
    exported(root / "nolid", {**INFO, "data": {k: v for k, v in INFO["data"].items() if k != "lid"}})
    t = np.arange(16000) / 16000
    sf.write(root / "speech.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    (root / "broken.wav").write_bytes(b"RIFF not really")
    (root / "wav.scp").write_text("u1 speech.wav\nu2\n")
    (root / "ref").write_text("u1 a b c\nu2 d e\n")
    (root / "hyp").write_text("u1 a b c\n")
    (root / "model.yaml").write_text(yaml.safe_dump(cfg))
    stage = {"name": "s1", "max_steps": 2, "tasks": [{"task": "asr", "data": ["train_*"]}],
             "trainable": {"encoder": "frozen", "adapter": "full", "llm": "frozen"}}
    (root / "schedule.yaml").write_text(yaml.safe_dump({"seed": 1, "stages": [stage]}))
    bad = root / "data" / "unsorted"
    bad.mkdir(parents=True)
    (bad / "text").write_text("b-2 x\na-1 y\n")
    (bad / "utt2spk").write_text("b-2 b\na-1 a\n")
    (bad / "spk2utt").write_text("a a-1\nb b-2\n")
    (bad / "wav.scp").write_text("b-2 speech.wav\na-1 speech.wav\n")
    (root / "notes").mkdir()
    (root / "notes" / "todo").write_text("keep me\n")
    return root


M = "exp/s/model"
T = ["--model", M, "--output", "out.txt"]
# (id, tool, argv, exit status, what the message must name). The first group went wrong before:
# untrained task/language/direction (decoded without a word), --beam 0 (a ZeroDivisionError),
# --batch-size -1 (ran).
CASES = [
    ("untrained_direction", transcribe, [*T, "--task", "s2tt", "--src-lang", "en", "--tgt-lang", "ja", "speech.wav"],
     1, ["s2tt en->ja", "en->de, en->es, en->fr, en->zh", "--allow-untrained"]),
    ("untrained_source", transcribe, [*T, "--src-lang", "fr", "speech.wav"], 1, ["asr from language fr", "de, en"]),
    ("untrained_s2tt_source", transcribe, [*T, "--task", "s2tt", "--src-lang", "de", "--tgt-lang", "en",
                                           "speech.wav"], 1, ["s2tt from language de", "source languages: en"]),
    ("no_lid_model", transcribe, ["--model", "nolid", "--output", "out.txt", "speech.wav"], 1,
     ["nolid", "not trained on the lid task", "give the source language"]),
    ("beam_0", transcribe, [*T, "--beam", "0", "speech.wav"], 2, ["--beam", "'0'"]),
    ("batch_size_negative", transcribe, [*T, "--batch-size", "-1", "speech.wav"], 2, ["--batch-size", "'-1'"]),
    ("threads_0", transcribe, [*T, "--threads", "0", "speech.wav"], 2, ["--threads"]),  # ran with torch's default
    # these behaved already (exit 1 before for --max-segment 0; now a usage error)
    ("max_segment_0", transcribe, [*T, "--max-segment", "0", "speech.wav"], 2, ["--max-segment"]),
    ("max_new_tokens_text", transcribe, [*T, "--max-new-tokens", "ten", "speech.wav"], 2, ["--max-new-tokens"]),
    ("missing_audio", transcribe, [*T, "--src-lang", "en", "nosuch.wav"], 1, ["nosuch.wav"]),
    ("broken_audio", transcribe, [*T, "--src-lang", "en", "broken.wav"], 1, ["broken.wav"]),
    ("bad_wav_scp_line", transcribe, [*T, "--src-lang", "en", "--wav-scp", "wav.scp"], 1, ["wav.scp:2"]),
    ("missing_model", transcribe, ["--model", "nosuch_model", "--output", "out.txt", "--src-lang", "en",
                                   "speech.wav"], 1, ["nosuch_model"]),
    ("unknown_language", transcribe, [*T, "--src-lang", "xx", "speech.wav"], 1, ["'xx'"]),
    ("s2tt_without_target", transcribe, [*T, "--task", "s2tt", "--src-lang", "en", "speech.wav"], 1,
     ["s2tt needs a target language (--tgt-lang)"]),
    ("subtitles_of_two", transcribe, [*T, "--output-format", "srt", "speech.wav", "speech.wav"], 2,
     ["--output-format srt"]),
    ("score_missing_hyp_file", score, ["--ref", "ref", "--hyp", "nosuch_hyp", "--lang", "en", "scored"], 1,
     ["nosuch_hyp"]),
    ("score_missing_hypothesis", score, ["--ref", "ref", "--hyp", "hyp", "--lang", "en", "scored"], 1, ["u2"]),
    ("score_unknown_metric", score, ["--ref", "ref", "--hyp", "ref", "--lang", "en", "--metrics", "wre", "scored"],
     1, ["wre"]),
    ("plan_missing_schedule", plan, ["--model-config", "model.yaml", "--schedule", "nosuch.yaml", "--output",
                                     "plan.txt"], 1, ["nosuch.yaml"]),
    ("plan_unknown_key", plan, ["--model-config", "model.yaml", "--schedule", "schedule.yaml", "--set",
                                "stages.0.max_stepz=3", "--output", "plan.txt"], 1, ["max_stepz"]),
    ("plan_gpus_0", plan, ["--model-config", "model.yaml", "--schedule", "schedule.yaml", "--gpus", "0",
                           "--output", "plan.txt"], 2, ["--gpus"]),
    ("export_not_a_model", export, ["notes", "exported"], 1, ["notes", "not an exported stage model"]),
    ("export_over_other_folder", export, ["exp/s", "notes"], 1, ["notes", "not overwritten"]),
    ("validate_unsorted", datadir, ["validate", "--no-feats", "data/unsorted"], 1, ["data/unsorted", "sorted"]),
    ("split_into_0", datadir, ["split", "data/unsorted", "0"], 2, ["argument n", "'0'"]),
    ("filter_missing_src", filter_data, ["nosuch_dir", "filtered"], 1, ["nosuch_dir"]),
    ("filter_max_dur_0", filter_data, ["--max-dur", "0", "data/unsorted", "filtered"], 2, ["--max-dur"]),
    ("results_missing_exp", results, ["nosuch_exp", "--out", "RESULTS.md"], 1, ["nosuch_exp"]),
    ("results_empty_system", results, ["exp", "--systems", "=Label", "--out", "RESULTS.md"], 1, ["--systems"]),
    ("results_bootstrap_0", results, ["exp", "--n-bootstrap", "0", "--out", "RESULTS.md"], 2, ["--n-bootstrap"]),
]


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*")}


@pytest.mark.parametrize("tool, argv, status, names", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(work, tool, argv, status, names, monkeypatch, capsys, caplog):
    monkeypatch.chdir(work)
    before = _tree(work)
    caplog.set_level(logging.INFO)
    try:
        code = tool.main(list(argv))
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    err = capsys.readouterr().err
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert code == status, (err, caplog.text)
    assert "Traceback" not in err + caplog.text and not any(r.exc_info for r in caplog.records)
    if status == 1:  # one line, from the tool's cli wrapper
        assert len(errors) == 1 and "\n" not in errors[0].getMessage(), caplog.text
        message = errors[0].getMessage()
    else:  # argparse: the usage, then one error line
        assert not errors and err.startswith("usage: "), err
        message = err.strip().splitlines()[-1]
        assert ": error: " in message, err
    for name in names:
        assert name in message, message
    assert _tree(work) == before  # nothing written, nothing removed


def _info_folder(work: Path, tmp_path: Path, info: dict) -> Path:
    """A copy of the test model whose info.json is ``info`` (links to the weights)."""
    folder = tmp_path / "model"
    folder.mkdir()
    for p in (work / M).iterdir():
        if p.name not in (card.INFO, card.CARD):
            (folder / p.name).symlink_to(p)
    card.write(folder, info, {})
    return folder


def test_api_refuses_or_warns_and_checks_the_identified_language(work, tmp_path, caplog, capsys):
    model = Transcriber(work / M)
    wav = work / "speech.wav"
    with pytest.raises(ConfigError, match=r"s2tt en->ja \(its s2tt directions: en->de, en->es, en->fr, en->zh\)"):
        model(wav, task="s2tt", src_lang="en", tgt_lang="ja")
    with pytest.raises(ConfigError, match=r"num_beams must be >= 1, got 8, 60000, 0"):
        model(wav, src_lang="en", num_beams=0)
    with pytest.raises(ConfigError, match="num_beams must be >= 1"):
        model(wav, src_lang="en", batch_size=0)
    trained = model(wav, task="s2tt", src_lang="en", tgt_lang="de", max_new_tokens=2)[0]
    caplog.clear()
    # allowed: the same decode as any other, with a warning naming what was not trained
    anyway = Transcriber(work / M, allow_untrained=True)
    out = anyway(wav, task="s2tt", src_lang="EN", tgt_lang="ja", max_new_tokens=2)[0]
    assert out.tgt_lang == "ja" and out.language == "en" and isinstance(out.text, str)
    assert "s2tt en->ja" in caplog.text and "decoding anyway" in caplog.text
    assert anyway(wav, task="s2tt", src_lang="en", tgt_lang="de", max_new_tokens=2)[0].text == trained.text
    caplog.clear()
    assert transcribe.main(["--model", str(work / M), "--task", "s2tt", "--src-lang", "en", "--tgt-lang", "ja",
                            "--max-new-tokens", "2", "--allow-untrained", str(wav)]) == 0
    assert capsys.readouterr().out == out.text + "\n"
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"{work / M}: the model was not trained on s2tt en->ja (its s2tt directions: en->de, en->es, en->fr, "
        f"en->zh); decoding anyway (allow_untrained)"]
    # an identified language the model has no direction for is refused, naming the input
    only_de = {**INFO, "directions": {"s2tt": {"de": ["en"]}},
               "data": {**INFO["data"], "s2tt": {"de": {"utterances": 1, "hours": 0.1}}}}
    lid_model = Transcriber(_info_folder(work, tmp_path, only_de))
    lid_model.identify = lambda feats, batch_size, groups=None: ["en"] * (max(groups) + 1)
    with pytest.raises(ConfigError, match=f"{wav} was identified as en: the model was not trained on s2tt from "
                                          f"language en"):
        lid_model(wav, task="s2tt", tgt_lang="de")
    lid_model.identify = lambda feats, batch_size, groups=None: ["de"] * (max(groups) + 1)
    assert lid_model(wav, task="s2tt", tgt_lang="en", max_new_tokens=2)[0].language == "de"


def test_older_folders_decode_with_a_warning(work, tmp_path, caplog):
    # exported before directions were recorded: every target counts for every source
    older = {k: v for k, v in INFO.items() if k != "directions"}
    assert card.trained_on(older)["s2tt"] == {"en": ["de", "es", "fr", "zh"]}
    assert card.untrained(older, "s2tt", "en", "ja").startswith("the model was not trained on s2tt en->ja")
    assert card.untrained(older, "s2tt", "en", "fr") is None and card.untrained(older, "asr", "de", None) is None
    assert card.untrained(INFO, "lm", "en", None) == "the model was not trained on task lm (its tasks: asr, lid, s2tt)"
    assert "- translation directions: s2tt en->de, en->es, en->fr, en->zh\n" in card.render(INFO, {})
    # no provenance at all: decoded, with a warning when loaded
    folder = _info_folder(work, tmp_path, {"stage": "s"})
    assert card.trained_on(card.read_info(folder)) is None
    caplog.clear()
    out = Transcriber(folder)(work / "speech.wav", task="s2tt", src_lang="en", tgt_lang="ja", max_new_tokens=2)
    assert out[0].tgt_lang == "ja" and "names no training data" in caplog.text


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


DIR = 0o1000000  # marks a directory's mode in _modes


def _modes(root: Path) -> set:
    """The modes of ``root`` and everything in it, directories' marked with ``DIR``."""
    return {stat.S_IMODE(p.lstat().st_mode) | (DIR if p.is_dir() else 0) for p in [root, *root.rglob("*")]}


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_outputs_get_the_modes_of_open_and_mkdir(work, tmp_path, umask, mask, monkeypatch, capsys):
    umask(mask)
    file_mode, dir_mode = 0o666 & ~mask, 0o777 & ~mask
    monkeypatch.chdir(work)
    atomic_write(tmp_path / "a.txt", "x")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == file_mode
    (tmp_path / "a.txt").chmod(0o640)  # a plain open keeps an existing file's mode
    atomic_write(tmp_path / "a.txt", "y")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
    # a directory assembled privately (mkdtemp, mkstemp) is an output like any other once in place
    tmp = Path(tempfile.mkdtemp(dir=tmp_path))
    (tmp / "sub").mkdir(mode=0o700)
    os.close(tempfile.mkstemp(dir=tmp / "sub")[0])
    (tmp / "run.sh").write_text("#!/bin/sh\n")
    (tmp / "run.sh").chmod(0o700)
    replace_dir(tmp, tmp_path / "placed")
    assert _modes(tmp_path / "placed") == {file_mode, 0o777 & ~mask, dir_mode | DIR}
    assert stat.S_IMODE((tmp_path / "placed" / "run.sh").stat().st_mode) == 0o777 & ~mask
    out = tmp_path / "exported"
    assert export.main(["exp/s", str(out)]) == 0
    assert _modes(out) == {file_mode, dir_mode | DIR}
    sub = tmp_path / "sub.srt"
    assert transcribe.main(["--model", str(out), "--src-lang", "en", "--max-new-tokens", "2", "--output-format",
                            "srt", "--output", str(sub), "speech.wav"]) == 0
    assert stat.S_IMODE(sub.stat().st_mode) == file_mode
    capsys.readouterr()
