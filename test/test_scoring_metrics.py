"""WER/CER/BLEU on hand-computed cases, normalisation, diagnostics and the score CLI."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from partlib.common import ConfigError, DataError
from partlib.scoring import bleu, diagnostics, normalize, wer_bleu
from partlib.scoring.align import align
from partlib.scoring.wer import ErrorCounts, score_units
from partlib.bin import score as score_cli


def counts(ref: str, hyp: str, unit: str = "word") -> ErrorCounts:
    return score_units(normalize.units(ref, unit), normalize.units(hyp, unit))[0]


@pytest.mark.parametrize(
    "ref, hyp, expected, rate",
    [
        ("a b c d", "a x c d e", (3, 1, 0, 1), 50.0),        # one substitution, one insertion
        ("a b c", "a c", (2, 0, 1, 0), 100 / 3),              # one deletion
        ("a b c", "a b c", (3, 0, 0, 0), 0.0),                # all correct
        ("a b c", "", (0, 0, 3, 0), 100.0),                   # empty hypothesis
        ("", "", (0, 0, 0, 0), 0.0),                          # both empty
        ("x y", "y x", (1, 0, 1, 1), 100.0),                  # del+ins (6) beats sub+sub (8)
    ],
)
def test_word_error_counts(ref, hyp, expected, rate):
    c = counts(ref, hyp)
    assert (c.corr, c.sub, c.dele, c.ins) == expected
    assert c.rate() == pytest.approx(rate)


def test_empty_reference_with_insertions_has_no_rate():
    c = counts("", "x y")
    assert (c.n, c.ins) == (0, 2) and c.rate() is None


def test_cjk_character_error_rate():
    c = counts("我爱北京", "我爱上海北京", unit="char")
    assert (c.corr, c.sub, c.dele, c.ins) == (4, 0, 0, 2)
    assert c.rate() == pytest.approx(50.0)
    c = counts("我爱北京", "我很爱南京", unit="char")     # insertion + substitution
    assert (c.corr, c.sub, c.dele, c.ins) == (3, 1, 0, 1)


def test_alignment_pairs_and_order():
    ali = align(["a", "b", "c"], ["a", "x", "c", "d"])
    assert ali.pairs == [("a", "a", "C"), ("b", "x", "S"), ("c", "c", "C"), (None, "d", "I")]


def test_bleu_hand_computed():
    # p1..p4 = 5/6, 3/5, 2/4, 1/3, equal lengths (no brevity penalty).
    r = bleu.corpus_score("bleu", ["the cat sat on the mat"], ["the cat sat on a mat"], "en")
    assert r["value"] == pytest.approx(100 * (5 / 6 * 3 / 5 * 1 / 2 * 1 / 3) ** 0.25, abs=1e-6)
    assert "tok:13a" in r["signature"]
    assert bleu.corpus_score("chrf", ["a cat"], ["a cat"], "en")["value"] == pytest.approx(100.0)


def test_bleu_tokenizer_per_language():
    r = bleu.corpus_score("bleu", ["我爱北京天安门"], ["我爱北京天安"], "zh")
    assert "tok:zh" in r["signature"] and 0 < r["value"] < 100   # characters are tokens
    assert bleu.bleu_tokenizer("ja") == "ja-mecab" and bleu.bleu_tokenizer("de") == "13a"


def test_japanese_tokenizer_needs_the_ja_extra():
    if importlib.util.find_spec("MeCab") is None:
        with pytest.raises(ConfigError, match=r"partlib\[ja\]"):
            bleu.corpus_score("bleu", ["猫"], ["猫"], "ja")
    else:
        assert "tok:ja-mecab" in bleu.corpus_score("bleu", ["猫"], ["猫"], "ja")["signature"]


@pytest.mark.parametrize(
    "lang, text, expected",
    [
        ("en", "Hello, World!", "hello world"),
        ("en", "The colour, Mr. Smith", "the color mister smith"),   # Whisper's English rules
        ("de", "Straße, ÄPFEL!", "straße äpfel"),                     # no diacritic stripping
        ("fr", "ＡＢＣ１２３ « oui »", "abc123 oui"),                  # NFKC, P* removed
        ("fr", "a\u00a0b\u2003c  d", "a b c d"),                       # exotic spaces folded
        ("fa", "a\u200bb a\u200cb", "a b ab"),                         # ZWSP splits, ZWNJ removed
        ("hi", "नमस्ते।", "नमस्ते"),                                     # marks kept, danda removed
        ("zh", "你好，世界。", "你好 世界"),
        ("es", "10% €5 😀 ok", "10 5 ok"),                              # symbols removed
    ],
)
def test_normalizer_per_language(lang, text, expected):
    assert normalize.normalize(text, lang) == expected


def test_char_units_are_graphemes_without_spaces():
    assert normalize.chars("你好 世界") == ["你", "好", "世", "界"]
    assert normalize.chars("กิน") == ["กิ", "น"]      # vowel mark stays with its consonant
    assert normalize.normalizer_name("en") == "whisper-english"
    assert normalize.normalizer_name("de") == "part-basic-v1"


def test_wrong_language_detection():
    checker = diagnostics.LanguageChecker(["en", "de"])
    assert checker.is_wrong("this is a sentence in plain english about the weather", "en") is False
    assert checker.is_wrong("das ist ein sehr schönes haus und wir wohnen gerne hier", "en") is True
    assert checker.is_wrong("这是一个关于天气的句子", "de") is True
    assert checker.is_wrong("", "en") is None            # empty text is not judged
    assert checker.is_wrong("anything", "tok") is None   # language unknown to langid


def test_repetition_and_runaway_detection():
    assert diagnostics.repeated_ngram("a b c a b c a b c".split()) == ("a", "b", "c")
    assert diagnostics.repeated_ngram("the the cat".split()) is None
    assert diagnostics.repeated_ngram("x y z w x y z w x y z w".split()) == ("x", "y", "z", "w")
    assert diagnostics.is_degenerate("yes yes yes".split(), "no".split())
    assert not diagnostics.is_degenerate("ha ha ha".split(), "he said ha ha ha".split())
    assert diagnostics.is_runaway("a b c d e f g".split(), "a b c".split())
    assert not diagnostics.is_runaway("a b c d e f".split(), "a b c".split())
    assert diagnostics.is_runaway("a b c".split(), [])


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def asr_files(tmp_path):
    ref = write(tmp_path / "ref", "u1 Hello, World!\nu2 这是一个测试\nu3\nu4 the cat sat\n")
    hyp = write(tmp_path / "hyp", "u1 hello word\nu2 这是一测试试\nu3 extra words\n"
                                  "u4 the the the cat sat sat\n")
    u2l = write(tmp_path / "utt2lang", "u1 en\nu2 zh-CN\nu3 de\nu4 en\n")
    return ref, hyp, u2l


def test_score_cli_asr(asr_files, tmp_path):
    ref, hyp, u2l = asr_files
    out = tmp_path / "out"
    assert score_cli.main(["--ref", str(ref), "--hyp", str(hyp), "--utt2lang", str(u2l), str(out)]) == 0
    res = json.loads((out / "scores.json").read_text(encoding="utf-8"))
    sets = res["sets"]
    assert sets["en"]["primary"] == "wer" and sets["zh"]["primary"] == "cer"
    assert sets["en"]["scores"]["wer"]["counts"] == {"N": 5, "corr": 4, "sub": 1, "del": 0, "ins": 3}
    assert sets["en"]["scores"]["wer"]["value"] == 80.0
    assert sets["zh"]["scores"]["cer"]["counts"] == {"N": 6, "corr": 5, "sub": 0, "del": 1, "ins": 1}
    assert sets["overall"]["primary"] == "mixed"      # words and characters together
    assert sets["overall"]["scores"]["mixed"]["counts"]["N"] == 11
    assert sets["en"]["diagnostics"]["repetition"]["count"] == 1   # "the the the"
    assert sets["de"]["diagnostics"]["wrong_lang"]["count"] == 1  # "extra words" is English
    assert set(res["normalizer"]["asr"]) == {"whisper-english", "part-basic-v1"}
    assert (out / "ref.trn").read_text(encoding="utf-8").splitlines()[1] == "这 是 一 个 测 试 (u2)"
    assert (out / "hyp.trn").read_text(encoding="utf-8").splitlines()[2] == "extra words (u3)"
    result_txt = (out / "result.txt").read_text(encoding="utf-8")
    assert "REF:  hello WORLD\nHYP:  hello WORD\nEval:       S" in result_txt
    assert "| en | 2 | WER | 80.00 |" in (out / "scores.md").read_text(encoding="utf-8")
    first = (out / "scores.json").read_bytes()
    score_cli.main(["--ref", str(ref), "--hyp", str(hyp), "--utt2lang", str(u2l), str(out)])
    assert (out / "scores.json").read_bytes() == first        # deterministic


def test_missing_and_extra_hypotheses(asr_files, tmp_path):
    ref, _, u2l = asr_files
    hyp = write(tmp_path / "hyp2", "u1 hello world\nu3\nu4 the cat sat\nu9 stray\n")
    with pytest.raises(DataError, match="u2") as e:
        wer_bleu.load_inputs(ref, hyp, utt2lang=u2l)
    assert "u9" in str(e.value)
    inputs = wer_bleu.load_inputs(ref, hyp, utt2lang=u2l, allow_missing=True)
    res, _ = wer_bleu.score(inputs)
    assert (res["num_missing"], res["num_extra"]) == (1, 1)
    assert res["sets"]["zh"]["scores"]["cer"]["counts"]["del"] == 6   # missing = empty hypothesis
    out = tmp_path / "o"
    assert score_cli.main(["--ref", str(ref), "--hyp", str(hyp), "--utt2lang", str(u2l), str(out)]) == 1
    assert not (out / "scores.json").exists()


def test_missing_language_is_an_error(asr_files, tmp_path):
    ref, hyp, _ = asr_files
    u2l = write(tmp_path / "u2l", "u1 en\n")
    with pytest.raises(DataError, match="no language"):
        wer_bleu.load_inputs(ref, hyp, utt2lang=u2l)


def test_score_cli_translation(tmp_path):
    ref = write(tmp_path / "ref", "a1 Der Hund schläft.\na2 Ich habe Hunger.\nb1 Es regnet heute.\n")
    hyp = write(tmp_path / "hyp", "a1 Der Hund schläft.\na2 Ich bin hungrig.\nb1 Es regnet heute.\n")
    u2l = write(tmp_path / "utt2lang", "a1 en\na2 en\nb1 fr\n")
    out = tmp_path / "out"
    assert score_cli.main(["--ref", str(ref), "--hyp", str(hyp), "--utt2lang", str(u2l),
                           "--tgt-lang", "de", str(out)]) == 0
    res = json.loads((out / "scores.json").read_text(encoding="utf-8"))
    assert res["task"] == "translation" and set(res["sets"]) == {"en-de", "fr-de", "overall"}
    assert res["sets"]["fr-de"]["scores"]["bleu"]["value"] == pytest.approx(100.0)
    assert res["sets"]["en-de"]["primary"] == "bleu"
    assert 0 < res["sets"]["en-de"]["scores"]["bleu"]["value"] < 100
    assert "tok:13a" in res["sets"]["overall"]["scores"]["bleu"]["signature"]
    assert "nc:6" in res["sets"]["overall"]["scores"]["chrf"]["signature"]
    assert res["sets"]["overall"]["scores"]["wer"]["counts"]["sub"] >= 1   # error rates as well
    assert res["normalizer"]["bleu"].startswith("none")
    assert "BLEU signature" in (out / "scores.md").read_text(encoding="utf-8")


def test_explicit_metrics_and_bad_metric(asr_files):
    ref, hyp, u2l = asr_files
    inputs = wer_bleu.load_inputs(ref, hyp, lang="en")
    res, _ = wer_bleu.score(inputs, metrics="cer,bleu")
    assert res["sets"]["overall"]["primary"] == "cer" and "bleu" in res["sets"]["overall"]["scores"]
    with pytest.raises(ConfigError):
        wer_bleu.score(inputs, metrics="wer,ter")


def test_language_checkers_do_not_interfere():
    diagnostics.LanguageChecker(["fr"]).identify("bonjour à tous")   # restricting one checker ...
    other = diagnostics.LanguageChecker(["en", "de"])
    assert diagnostics.langid_code("de") == "de"   # ... leaves the shared model whole
    assert other.identify("das ist ein sehr schönes haus und wir wohnen gerne hier") == "de"


def test_untranslated_output_counts_as_wrong_language(tmp_path):
    ref = write(tmp_path / "ref", "a1 the weather is very nice today and we go for a walk\n")
    hyp = write(tmp_path / "hyp", "a1 das Wetter ist heute sehr schön und wir gehen spazieren\n")
    res, _ = wer_bleu.score(wer_bleu.load_inputs(ref, hyp, lang="de"), tgt_lang="en")
    assert res["sets"]["de-en"]["diagnostics"]["wrong_lang"]["count"] == 1
    assert "de" in res["sets"]["de-en"]["diagnostics"]["wrong_lang"]["candidates"]


def test_auto_metrics_are_recorded_and_empty_input_fails(asr_files, tmp_path):
    ref, hyp, u2l = asr_files
    res, _ = wer_bleu.score(wer_bleu.load_inputs(ref, hyp, utt2lang=u2l))
    assert res["metrics"] == ["cer", "wer"]
    empty = write(tmp_path / "empty", "")
    with pytest.raises(DataError, match="no utterances"):
        wer_bleu.score(wer_bleu.load_inputs(empty, empty, lang="en"))
