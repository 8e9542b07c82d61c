"""Paired bootstrap: a system against itself, and a clearly better system."""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Dict, Optional

import pytest

from partlib.bin import compare as compare_cli
from partlib.common import DataError
from partlib.scoring import bootstrap, decode_dir

WORDS = "the a cat dog sat ran on under mat tree house red big small old new".split()


def make_decode_dir(path: Path, refs: Dict[str, str], hyps: Dict[str, str], lang: str = "en",
                    tgt_lang: Optional[str] = None) -> Path:
    path.mkdir(parents=True)
    (path / "ref").write_text("".join(f"{u} {t}\n" for u, t in sorted(refs.items())), encoding="utf-8")
    (path / "hyp").write_text("".join(f"{u} {t}\n" for u, t in sorted(hyps.items())), encoding="utf-8")
    (path / "utt2lang").write_text("".join(f"{u} {lang}\n" for u in sorted(refs)), encoding="utf-8")
    if tgt_lang:
        (path / "tgt_lang").write_text(tgt_lang + "\n", encoding="utf-8")
    return path


def corrupt(text: str, rng: random.Random, p: float) -> str:
    return " ".join(rng.choice(WORDS) if rng.random() < p else w for w in text.split())


@pytest.fixture
def systems(tmp_path):
    rng = random.Random(0)
    refs = {f"u{k:03d}": " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12))) for k in range(80)}
    good = {u: corrupt(t, rng, 0.05) for u, t in refs.items()}
    bad = {u: corrupt(t, rng, 0.4) for u, t in refs.items()}
    return refs, good, bad


def test_system_against_itself(tmp_path, systems):
    refs, good, _ = systems
    a = make_decode_dir(tmp_path / "a", refs, good)
    res = bootstrap.compare_dirs(a, a, n_bootstrap=300, seed=1)
    r = res["sets"]["overall"]["wer"]
    assert r["diff"] == 0 and r["ci95"] == [0.0, 0.0] and r["p_value"] == pytest.approx(1.0)


def test_clearly_better_system_asr(tmp_path, systems):
    refs, good, bad = systems
    a = make_decode_dir(tmp_path / "a", refs, good)
    b = make_decode_dir(tmp_path / "b", refs, bad)
    r = bootstrap.compare_dirs(a, b, n_bootstrap=300, seed=0)["sets"]["en"]["wer"]
    assert r["diff"] < 0 and r["ci95"][1] < 0 and r["p_value"] < 0.05
    assert r["a"] < r["b"]
    # Same seed, same answer.
    assert bootstrap.compare_dirs(a, b, n_bootstrap=300, seed=0)["sets"]["en"]["wer"] == r


def test_clearly_better_system_bleu(tmp_path, systems):
    refs, good, bad = systems
    a = make_decode_dir(tmp_path / "a", refs, good, tgt_lang="de")
    b = make_decode_dir(tmp_path / "b", refs, bad, tgt_lang="de")
    res = bootstrap.compare_dirs(a, b, n_bootstrap=200, seed=0)
    assert set(res["sets"]) == {"en-de", "overall"}
    full = decode_dir.score_decode_dir(a)[0]["sets"]["overall"]["scores"]
    for m in ("bleu", "chrf"):
        r = res["sets"]["overall"][m]
        assert r["diff"] > 0 and r["ci95"][0] > 0 and r["p_value"] < 0.05
        assert r["a"] == pytest.approx(full[m]["value"])   # statistics re-scoring = sacrebleu
    same = bootstrap.compare_dirs(a, a, n_bootstrap=200, seed=0)["sets"]["overall"]["bleu"]
    assert same["diff"] == 0 and same["p_value"] == pytest.approx(1.0)


def test_resample_weights_are_paired_draws():
    w = bootstrap.resample_weights(7, 50, seed=3)
    assert w.shape == (50, 7) and (w.sum(1) == 7).all()


def test_compare_cli_and_mismatched_sets(tmp_path, systems, capsys):
    refs, good, bad = systems
    a = make_decode_dir(tmp_path / "a", refs, good)
    b = make_decode_dir(tmp_path / "b", dict(list(refs.items())[:-1]), dict(list(bad.items())[:-1]))
    with pytest.raises(DataError, match="differ"):
        bootstrap.compare_dirs(a, b, n_bootstrap=10)
    assert compare_cli.main([str(a), str(a), "--n-bootstrap", "50", "--out", str(tmp_path / "c.json")]) == 0
    assert "| overall | WER |" in capsys.readouterr().out
    assert json.loads((tmp_path / "c.json").read_text())["sets"]["overall"]["wer"]["p_value"] == 1.0
