"""BLEU and chrF through sacrebleu's public API: corpus scores, and the per-sentence statistics
the paired bootstrap re-scores resamples from, equal to sacrebleu's own corpus scores digit for
digit, and the bootstrap numbers of the private-API implementation unchanged."""
from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest
import sacrebleu

from partlib.scoring import bleu, bootstrap

from test_scoring_compare import WORDS, corrupt, make_decode_dir

CORPORA = {
    "en": (["the cat sat on the mat .", "a dog ran home", "", "Hello, world!"],
           ["the cat sat on a mat .", "a dog ran to the house", "something", "hello world"]),
    "zh": (["我爱北京天安门", "今天天气很好", "", "猫"], ["我爱北京天安", "今天天气不错", "你好", "狗"]),
}


def test_the_module_uses_no_private_sacrebleu_name():
    tree = ast.parse(Path(bleu.__file__).read_text(encoding="utf-8"))
    private = [f"line {n.lineno}: .{n.attr}" for n in ast.walk(tree)
               if isinstance(n, ast.Attribute) and n.attr.startswith("_") and not n.attr.startswith("__")]
    assert private == []


@pytest.mark.parametrize("lang", sorted(CORPORA))
@pytest.mark.parametrize("name, reference", [("bleu", lambda lang: sacrebleu.BLEU(tokenize=bleu.bleu_tokenizer(lang))),
                                             ("chrf", lambda lang: sacrebleu.CHRF())])
def test_scores_from_sentence_statistics_equal_sacrebleu_corpus_scores(lang, name, reference):
    hyps, refs = CORPORA[lang]
    rng = random.Random(1)
    for _ in range(5):  # resamples, with repeated sentences, as the bootstrap draws them
        idx = [rng.randrange(len(hyps)) for _ in hyps]
        h, r = [hyps[i] for i in idx], [refs[i] for i in idx]
        expected = reference(lang).corpus_score(h, [r]).score
        assert bleu.score_from_stats(name, bleu.sentence_stats(name, h, r, lang).sum(0), lang) == expected
        assert bleu.corpus_score(name, h, r, lang)["value"] == expected


def test_signatures():
    hyps, refs = CORPORA["en"]
    assert "tok:13a" in bleu.corpus_score("bleu", hyps, refs, "en")["signature"]
    assert "tok:zh" in bleu.corpus_score("bleu", hyps, refs, "zh")["signature"]
    assert "nc:6|nw:0" in bleu.corpus_score("chrf", hyps, refs, "en")["signature"]


def test_paired_bootstrap_numbers_are_those_of_the_private_api_implementation(tmp_path):
    """The numbers below were printed by the implementation that called sacrebleu's private
    ``_extract_corpus_statistics`` / ``_compute_score_from_stats``, on the same data."""
    rng = random.Random(0)
    refs = {f"u{k:03d}": " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12))) for k in range(80)}
    good = {u: corrupt(t, rng, 0.05) for u, t in refs.items()}
    bad = {u: corrupt(t, rng, 0.4) for u, t in refs.items()}
    a = make_decode_dir(tmp_path / "a", refs, good, tgt_lang="de")
    b = make_decode_dir(tmp_path / "b", refs, bad, tgt_lang="de")
    got = bootstrap.compare_dirs(a, b, n_bootstrap=200, seed=3)["sets"]["en-de"]
    common = {"p_value": 0.0, "n_bootstrap": 200, "seed": 3, "lower_is_better": False, "num_utts": 80}
    assert got == {
        "bleu": {"metric": "bleu", "a": 88.04857750281117, "b": 32.83655695661995, "diff": 55.21202054619122,
                 "ci95": [49.7190484440219, 60.58952413887797], **common},
        "chrf": {"metric": "chrf", "a": 91.71720895689809, "b": 53.47044210524413, "diff": 38.24676685165396,
                 "ci95": [33.88066561548233, 42.658649189935595], **common}}
