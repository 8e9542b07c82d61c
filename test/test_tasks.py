"""The task registry: lookups, the decode-dir layout, the ``lid`` task and its accuracy scoring,
and a toy task registered here that trains, decodes and scores with no other file edited."""
import json
from pathlib import Path

import pytest

from partlib import tasks
from partlib.bin import decode as decode_cli
from partlib.bin import score_decode_dirs
from partlib.bin import tasks as tasks_cli
from partlib.common import ConfigError
from partlib.data.datadir import DataDir
from partlib.data.kv import read_kv
from partlib.data.examples import TaskSpec, build_examples
from partlib.scoring import bootstrap
from partlib.scoring.decode_dir import score_decode_dir, write_outputs
from partlib.scoring.results import build_results
from partlib.train.quick_eval import quick_scores
from partlib.train.schedule import parse_schedule
from train_fixtures import SENTENCES, speech_data


def test_builtin_tasks_and_lookups():
    assert tasks.names() == ["asr", "s2tt", "t2tt", "lm", "tlid", "lid"]
    assert tasks.names(speech=True) == ["asr", "s2tt", "lid"]
    assert tasks.names(cross_lingual=True) == ["s2tt", "t2tt"]
    assert tasks.names(scored=True) == ["asr", "s2tt", "t2tt", "lid"]
    assert tasks.dev_metric_names() == ["loss", "accuracy", "bleu", "wer"]
    from partlib.train.dev_eval import higher_is_better

    assert [m for m in tasks.dev_metric_names() if higher_is_better(m)] == ["accuracy", "bleu"]
    with pytest.raises(ConfigError, match="does not fit the scorer"):
        tasks.register(tasks.Task("bad", speech=True, cross_lingual=False, template="x", target=lambda u: None,
                                  title="x", scorer="accuracy", dev_metric="wer"))
    with pytest.raises(ConfigError, match="unknown task 'summarise'; known tasks: asr, s2tt"):
        tasks.get("summarise")
    with pytest.raises(ConfigError, match="already registered"):
        tasks.register(tasks.get("asr"))
    assert tasks.get("lid").needs() == ["wav.scp|feats.scp", "utt2num_frames|utt2dur", "utt2lang"]
    assert tasks.get("t2tt").needs() == ["utt2lang", "text", "text.<tgt>"]


def test_decode_dir_layout():
    assert tasks.decode_dir_name("asr", "test_de") == "decode_test_de_asr"
    assert tasks.decode_dir_name("s2tt", "test_de", "en") == "decode_test_de_to_en_s2tt"
    assert tasks.parse_decode_dir("decode_test_de_to_en_s2tt") == ("test_de_to_en", "s2tt")
    assert tasks.parse_decode_dir("decode_cv15_zh-CN_test_lid") == ("cv15_zh-CN_test", "lid")
    assert tasks.parse_decode_dir("decode_test_de_lm") is None  # lm is not decoded
    assert tasks.parse_decode_spec("s2tt:test_de:en") == ("s2tt", "test_de", "en")
    assert tasks.parse_decode_spec("lid:test_de") == ("lid", "test_de", None)
    for bad, msg in (("s2tt:test_de", "needs a target language"), ("asr:test_de:en", "within-language"),
                     ("lm:text_de", "training-only"), ("test_de", "expected"), ("xx:test_de", "unknown task")):
        with pytest.raises(ConfigError, match=msg):
            tasks.parse_decode_spec(bad)


def test_tasks_cli(capsys):
    assert tasks_cli.main(["list", "--speech", "--within"]) == 0
    assert capsys.readouterr().out.split() == ["asr", "lid"]
    # free text (the output controls apply): not lid, whose answer is one of a closed label set
    assert tasks_cli.main(["list", "--speech", "--free-text"]) == 0
    assert capsys.readouterr().out.split() == ["asr", "s2tt"]
    assert tasks_cli.main(["decodes", "asr:test_en", "s2tt:test_de:en"]) == 0
    assert capsys.readouterr().out.splitlines() == ["asr test_en - decode_test_en_asr",
                                                    "s2tt test_de en decode_test_de_to_en_s2tt"]
    assert tasks_cli.main(["decodes", "s2tt:test_de"]) == 1


def test_lid_template_may_not_name_the_language():
    with pytest.raises(ConfigError, match=r"\['src_lang'\] are not allowed"):
        tasks.check_template(tasks.get("lid"), "Is this {src_lang}?")
    tasks.check_template(tasks.get("lid"), "Which language?\n{speech}")


def test_lid_examples_need_no_transcript(tmp_path):
    utts = ["a1", "a2", "b1"]
    DataDir({u: u[0] for u in utts}, feats_scp={u: f"x.ark:{i}" for i, u in enumerate(utts)},
            utt2lang={"a1": "de", "a2": "de", "b1": "zh"}, utt2num_frames={u: 100 for u in utts}).write(tmp_path / "d")
    d = DataDir.load(tmp_path / "d")
    exs = build_examples(TaskSpec("lid", 1.0, ["d"]), [d], lambda task, rows: [len(r[3]) for r in rows], lambda f: f // 8)
    assert [(e.utt, e.target, e.src_lang, e.tgt_lang, e.num_frames) for e in exs] == [
        ("a1", "German", "de", "de", 100), ("a2", "German", "de", "de", 100), ("b1", "Chinese", "zh", "zh", 100)]
    with pytest.raises(ConfigError, match="no 'text' file"):
        build_examples(TaskSpec("asr", 1.0, ["d"]), [d], lambda task, rows: [1] * len(rows), lambda f: f)


def _decode_dir(path: Path, refs, hyps, langs, task: str) -> Path:
    path.mkdir(parents=True)
    for name, table in (("ref", refs), ("hyp", hyps), ("utt2lang", langs)):
        (path / name).write_text("".join(f"{u} {table[u]}\n" for u in sorted(table)))
    (path / "decode.json").write_text(json.dumps({"task": task}))
    return path


def test_accuracy_scores_and_confusion(tmp_path):
    refs = {"u1": "German", "u2": "German", "u3": "English", "u4": "English", "u5": "Chinese", "u6": "Chinese"}
    hyps = {"u1": "german.", "u2": "English", "u3": "English", "u4": "the cat", "u5": "Chinese", "u6": "French"}
    langs = {"u1": "de", "u2": "de", "u3": "en", "u4": "en", "u5": "zh", "u6": "zh"}
    d = _decode_dir(tmp_path / "decode_test_lid", refs, hyps, langs, "lid")
    result, utts = score_decode_dir(d)
    sets = result["sets"]
    # 3 of 6 correct ("german." is the label German); per language 1/2 each
    assert sets["overall"]["scores"]["accuracy"] == {"value": 50.0, "counts": {"N": 6, "corr": 3}}
    assert [sets[k]["scores"]["accuracy"]["value"] for k in ("de", "en", "zh")] == [50.0, 50.0, 50.0]
    conf = result["confusion"]
    # "French" is no reference but a language name (lid's closed label set): a column of its own
    assert conf["labels"] == ["Chinese", "English", "German"]
    assert conf["columns"] == ["Chinese", "English", "French", "German", "(other)"]
    assert conf["counts"] == {"German": {"German": 1, "English": 1}, "English": {"English": 1, "(other)": 1},
                              "Chinese": {"Chinese": 1, "French": 1}}
    write_outputs(d, result, utts)
    md = (d / "scores.md").read_text()
    assert "| overall | 6 | 50.00 | 3 |" in md and "| German | 0 | 1 | 0 | 1 | 0 |" in md
    same = bootstrap.compare_dirs(d, d, n_bootstrap=50)["sets"]["overall"]["accuracy"]
    assert same["diff"] == 0.0 and same["p_value"] == 1.0 and not same["lower_is_better"]
    assert quick_scores([type("E", (), {"key": u, "task": "lid", "tgt_lang": langs[u], "target": refs[u]})
                         for u in refs], hyps) == {"accuracy": 50.0}


def test_lid_table_in_results(tmp_path):
    exp = tmp_path / "exp" / "sys"
    d = _decode_dir(exp / "stage1" / "decode_test_lid", {"u1": "German", "u2": "English"},
                    {"u1": "German", "u2": "German"}, {"u1": "de", "u2": "en"}, "lid")
    write_outputs(d, *score_decode_dir(d))
    text = build_results([exp])
    assert "### Language identification (lid): accuracy (%)" in text
    assert "| test / de | **100.00** |" in text and "| test / all | **50.00** |" in text


# ----------------------------------------------------------------------------- a toy task, end to end
@pytest.fixture
def reversed_words():
    """Speech -> its transcript's words in reverse order, scored by error rate."""
    task = tasks.register(tasks.Task(
        "rev", speech=True, cross_lingual=False, template="Say the {src_lang} words backwards.",
        target=lambda u: (None, " ".join(reversed(u.text.split()))), title="Reversed words (rev)",
        scorer="error_rate", dev_metric="wer", fields=("src_lang", "speech")))
    yield task
    tasks.unregister("rev")


@pytest.mark.slow
def test_a_task_registered_in_a_test_trains_decodes_and_scores(tmp_path, reversed_words, capsys, caplog):
    from partlib.models.builders import tiny_model_config
    from partlib.train.trainer import Trainer

    speech_data(tmp_path, n_train=6, n_dev=3)
    cfg = tiny_model_config(tmp_path / "models", lora=False)
    sched = parse_schedule({"seed": 1, "stages": [{
        "name": "s1", "max_steps": 6, "log_interval": 1, "save_interval": 3, "optim": {"lr": 3e-3},
        "scheduler": {"type": "constant"}, "batch": {"max_frames": 400, "max_tokens": 2000},
        "tasks": [{"task": "rev", "data": ["train_*"]}, {"task": "asr", "data": ["train_*"], "weight": 0.5}],
        "trainable": {"encoder": "full", "adapter": "full", "llm": "frozen"},
        "dev": {"data": ["dev_*"], "metric": "wer", "best_n": 1}}]})
    exp = tmp_path / "exp" / "toy"
    caplog.set_level("INFO", logger="partlib.train")
    model_dir = Trainer(sched, cfg, exp, data_root=str(tmp_path / "data"), tensorboard=False).run()[0]
    assert (model_dir / "done").is_file()
    dev = [r.getMessage() for r in caplog.records if ": dev " in r.getMessage()]
    assert dev and " wer " in dev[-1]  # the quick dev decode reports the toy task's metric

    out = exp / "s1" / tasks.decode_dir_name("rev", "dev_de")
    assert decode_cli.main(["--model-dir", str(model_dir), "--data-dir", str(tmp_path / "data" / "dev_de"),
                            "--task", "rev", "--max-new-tokens", "4", str(out)]) == 0
    ref = read_kv(out / "ref")
    assert ref == {f"spkde-{i:03d}": " ".join(reversed(SENTENCES["de"][i].split())) for i in range(3)}
    assert set(read_kv(out / "hyp", allow_empty=True)) == set(ref)
    assert score_decode_dirs.main([str(out)]) == 0
    overall = json.loads((out / "scores.json").read_text())["sets"]["overall"]
    counts = overall["scores"]["wer"]["counts"]
    assert counts["N"] == sum(len(r.split()) for r in ref.values())
    assert overall["scores"]["wer"]["value"] == pytest.approx(
        100.0 * (counts["sub"] + counts["del"] + counts["ins"]) / counts["N"], abs=1e-3)
    text = build_results([exp])
    assert "### Reversed words (rev): WER / CER (%)" in text
    assert f"| dev_de / all (WER) | **{overall['scores']['wer']['value']:.2f}** |" in text
    assert tasks_cli.main(["list", "--speech"]) == 0 and "rev" in capsys.readouterr().out.split()
