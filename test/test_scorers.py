"""The scorer registry and the scores.json reader: a metric family registered in this file is
scored into scores.json and scores.md, compared and tabulated in RESULTS.md with no other file
edited; a scores.json a reader cannot use is one error naming the file and the key."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from partlib import tasks
from partlib.bin import score_decode_dirs
from partlib.common import ConfigError, DataError
from partlib.scoring import bootstrap, scorers
from partlib.scoring.results import build_results
from partlib.scoring.scores import read_scores, write_scores


class ExactMatch(scorers.Scorer):
    """A toy metric family: the share of hypotheses equal to their reference."""

    name = "exact"
    metrics = ("exact_match",)
    higher_is_better = {"exact_match": True}

    def score(self, inputs, *, tgt_lang, normalizer, labels):
        utts = [SimpleNamespace(utt=u, src_lang=inputs.utt2lang[u], ref=inputs.refs[u], hyp=inputs.hyps[u],
                                correct=inputs.refs[u] == inputs.hyps[u]) for u in inputs.refs]

        def section(group):
            value = 100.0 * sum(u.correct for u in group) / len(group)
            return {"num_utts": len(group), "primary": "exact_match", "scores": {"exact_match": {"value": value}}}

        sets = {lang: section([u for u in utts if u.src_lang == lang]) for lang in {u.src_lang for u in utts}}
        return {"task": "exact", "tgt_lang": None, "num_utts": len(utts), "sets": {**sets, "overall": section(utts)}}, utts

    def stats(self, utts, metric, tgt_lang):
        return np.asarray([(float(u.correct), 1.0) for u in utts]).reshape(len(utts), 2)


@pytest.fixture
def echo_task():
    scorers.register(ExactMatch())
    task = tasks.register(tasks.Task("echo", speech=True, cross_lingual=False, template="Repeat the {src_lang} speech.",
                                      target=lambda u: (None, u.text), title="Echo (echo)", scorer="exact",
                                      fields=("src_lang", "speech")))
    yield task
    tasks.unregister("echo")
    scorers.unregister("exact")


def _decode_dir(path: Path, hyps) -> Path:
    refs = {"de1": "eins zwei", "de2": "drei", "fr1": "un deux", "fr2": "trois"}
    path.mkdir(parents=True)
    for name, table in (("ref", refs), ("hyp", hyps), ("utt2lang", {u: u[:2] for u in refs})):
        (path / name).write_text("".join(f"{u} {table[u]}\n" for u in sorted(table)), encoding="utf-8")
    (path / "decode.json").write_text(json.dumps({"task": "echo"}), encoding="utf-8")
    return path


def test_a_scorer_registered_in_a_test_scores_compares_and_tabulates(tmp_path, echo_task):
    exp = tmp_path / "exp" / "sys"
    d = _decode_dir(exp / "s1" / "decode_test_echo", {"de1": "eins zwei", "de2": "vier", "fr1": "un deux", "fr2": "trois"})
    assert score_decode_dirs.main([str(d)]) == 0
    scores = read_scores(d)
    assert (scores.task, scores.overall.primary, scores.overall.value()) == ("exact", "exact_match", 75.0)
    assert {k: s.value() for k, s in scores.sets.items()} == {"de": 50.0, "fr": 100.0, "overall": 75.0}
    md = (d / "scores.md").read_text(encoding="utf-8")
    assert md.splitlines()[2:] == ["| set | #utts | EXACT_MATCH |", "|---|---|---|", "| de | 2 | 50.00 |",
                                   "| fr | 2 | 100.00 |", "| overall | 4 | 75.00 |"]
    same = bootstrap.compare_dirs(d, d, n_bootstrap=20)["sets"]["overall"]["exact_match"]
    assert (same["a"], same["diff"], same["p_value"], same["lower_is_better"]) == (75.0, 0.0, 1.0, False)
    text = build_results([exp])
    assert "### Echo (echo): exact_match" in text
    assert "| test / de | **50.00** |" in text and "| test / all | **75.00** |" in text


def test_registry_errors():
    with pytest.raises(ConfigError, match="unknown scorer 'nosuch'; known scorers: error_rate, translation, accuracy"):
        scorers.get("nosuch")
    with pytest.raises(ConfigError, match="already registered"):
        scorers.register(scorers.AccuracyScorer())
    bad = type("Bad", (scorers.Scorer,), {"name": "bad", "metrics": ("wer",), "higher_is_better": {"wer": True}})
    with pytest.raises(ConfigError, match="wer of scorer 'error_rate' have the other direction"):
        scorers.register(bad())
    task = tasks.Task("x", speech=True, cross_lingual=False, template="", target=lambda u: None, title="x",
                      scorer="nosuch")
    with pytest.raises(ConfigError, match="task x: unknown scorer 'nosuch'"):
        scorers.of_task(task)
    assert [scorers.higher_is_better(m) for m in ("wer", "mixed", "bleu", "accuracy")] == [False, False, True, True]


@pytest.mark.parametrize("text, key", [
    ('{"sets": {"overall": {"scores": {}}}}', "sets.overall.primary"),
    ('{"sets": {"overall": {"primary": "wer", "scores": {"wer": {"value": "x"}}}}}', "sets.overall.scores.wer.value"),
    ('{"sets": {"de": {"primary": "wer", "scores": {}}}}', "sets.overall"),
    ('{"sets": []}', "sets is not a dict"),
    ("[1]", "not a JSON object"),
    ("{", "invalid JSON"),
])
def test_a_bad_scores_json_names_the_file_and_the_key(tmp_path, text, key):
    f = tmp_path / "scores.json"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as e:
        read_scores(f)
    assert str(e.value).startswith(f"{f}: ") and key in str(e.value)


def test_write_scores_refuses_what_a_reader_could_not_read(tmp_path):
    good = {"task": "asr", "sets": {"overall": {"primary": "wer", "scores": {"wer": {"value": 12.345678}}}}}
    write_scores(tmp_path, good)
    assert json.loads((tmp_path / "scores.json").read_text(encoding="utf-8"))["sets"]["overall"]["scores"] == {
        "wer": {"value": 12.3457}}
    with pytest.raises(DataError, match="no key sets.overall.primary"):
        write_scores(tmp_path, {"sets": {"overall": {"scores": {}}}})
    assert read_scores(tmp_path).overall.value() == 12.3457  # the earlier file is intact


def test_a_schedule_with_a_task_of_an_unknown_scorer_is_refused_before_training():
    from partlib.train.schedule import parse_schedule

    tasks.register(tasks.Task("typo", speech=True, cross_lingual=False, template="Repeat the {src_lang} speech.",
                              target=lambda u: (None, u.text), title="Typo", scorer="exct",
                              fields=("src_lang", "speech")))
    try:
        with pytest.raises(ConfigError, match="task typo: unknown scorer 'exct'; known scorers: error_rate"):
            parse_schedule({"stages": [{"name": "s", "max_steps": 1, "tasks": [{"task": "typo", "data": ["x"]}]}]})
    finally:
        tasks.unregister("typo")
