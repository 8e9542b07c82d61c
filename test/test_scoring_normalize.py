"""Normaliser schemes of WER/CER scoring: ours-as-Whisper against the ``whisper-normalizer``
package on every miniature test set's references, CER languages, and the ``--normalizer`` option
through the scorers (scores.json, score_decode_dirs, paired bootstrap)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Set, Tuple

import pytest
from whisper_normalizer.basic import BasicTextNormalizer
from whisper_normalizer.english import EnglishTextNormalizer

from corpora_mini import reference_texts
from partlib.bin import score as score_cli
from partlib.bin import score_decode_dirs
from partlib.common import ConfigError
from partlib.data import langs
from partlib.data.corpora.base import clean_text
from partlib.data.kv import read_kv
from partlib.scoring import bootstrap, normalize, scores
from partlib.scoring.decode_dir import recorded_normalizer

REPO = Path(__file__).resolve().parents[1]
PAPER_LANGS = ("zh", "en", "ja", "ko", "yue", "de", "fr", "ru", "es", "it")


def mini_synth_references() -> Set[Tuple[str, str]]:
    """(language, text) of the references of the committed mini_synth decodes (ASR and S2TT)."""
    out = set()
    for d in (REPO / "egs" / "mini_synth" / "part1" / "results").glob("*/*/decode_*"):
        if not (d / "ref").is_file() or d.name.endswith("_lid"):
            continue
        tgt = (d / "tgt_lang").read_text().split()[0] if (d / "tgt_lang").is_file() else None
        u2l = read_kv(d / "utt2lang")
        out |= {(tgt or u2l[u], text) for u, text in read_kv(d / "ref", allow_empty=True).items()}
    return out


def all_references() -> Set[Tuple[str, str]]:
    """Every miniature reference, as in the corpus files and as written to data dirs."""
    refs = {(langs.canonical(code), t) for code, t in reference_texts()}
    refs |= {(lang, clean_text(t)) for lang, t in refs}
    return refs | mini_synth_references()


def test_miniature_corpora_hold_the_paper_languages():
    assert {lang for lang, _ in all_references()} >= set(PAPER_LANGS)


def test_whisper_scheme_equals_the_whisper_normalizer_package():
    basic, english = BasicTextNormalizer(), EnglishTextNormalizer()
    refs = all_references()
    assert len(refs) > 100
    per_lang: Dict[str, int] = {}
    for lang, text in sorted(refs):
        expected = english(text) if lang == "en" else basic(text)
        assert normalize.normalize(text, lang, "whisper") == expected, (lang, text)
        per_lang[lang] = per_lang.get(lang, 0) + 1
    assert all(per_lang[lang] >= 3 for lang in PAPER_LANGS), per_lang


def test_cer_units_equal_whispers_split_letters():
    """CER on normalised text = Whisper's split_letters=True convention (graphemes, no spaces)."""
    split = BasicTextNormalizer(split_letters=True)
    for lang, text in all_references():
        if langs.uses_cer(lang):
            assert normalize.chars(normalize.normalize(text, lang, "whisper")) == split(text).split(), text


@pytest.mark.parametrize("text, expected", [
    # brackets and parentheses dropped with their content; full-width parentheses are not ASCII
    # ones (NFKC comes after the bracket rule), so their content stays
    ("[웃음] 정말요? (네) 좋아요…", " 정말요 좋아요 "),
    ("今日落雨（黃雨）[雜音]", "今日落雨 黃雨 "),
    ("a [b> c <d] e", "a c e"),                      # either closer ends either opener
    # NFKC composes half-width kana with its voicing mark; a mark left alone becomes a space
    ("ﾃﾞｰﾀ", "データ"),
    ("ｶ\u3099", "ガ"),
    ("e\u0301", "é"),
    ("नमस्ते", "नमस त "),                             # Whisper's known flaw: vowel signs -> spaces
    ("5㎒ ＡＢＣ", "5mhz abc"),                       # NFKC, then lowercase again
    ("x\u200by", "x\u200by"),                         # format characters are kept
])
def test_whisper_basic_by_hand(text, expected):
    assert normalize.whisper_basic_normalize(text) == expected


def test_schemes_and_names():
    assert normalize.SCHEMES == ("part-basic-v1", "whisper") and normalize.DEFAULT_SCHEME == "part-basic-v1"
    assert normalize.normalizer_name("en") == "whisper-english"
    assert normalize.normalizer_name("ko") == "part-basic-v1"
    assert normalize.normalizer_name("en", "whisper") == "whisper-english-exact"
    assert normalize.normalizer_name("yue", "whisper") == "whisper-basic"
    # ours keeps bracketed text and strips the ends; Whisper's drops it
    assert normalize.normalize("Er sagte (leise) [Lachen] Ja!", "de") == "er sagte leise lachen ja"
    assert normalize.normalize("Er sagte (leise) [Lachen] Ja!", "de", "whisper") == "er sagte ja "
    with pytest.raises(ConfigError, match="unknown normalizer 'nfkc'.*part-basic-v1, whisper"):
        normalize.normalize("x", "de", "nfkc")


def test_cer_languages_are_the_papers():
    assert [l for l in PAPER_LANGS if langs.uses_cer(l)] == ["zh", "ja", "ko", "yue"]
    assert langs.uses_cer("zh-CN") and langs.uses_cer("yue_hant_hk") and langs.uses_cer("ko_kr")
    assert langs.uses_cer("th")  # other languages written without spaces stay CER
    # Korean is scored by characters but written, joined and split with spaces
    assert not langs.no_space("ko") and langs.join_texts(["안녕", "하세요"], "ko") == "안녕 하세요"
    from partlib.tasks import split_for_lm
    assert split_for_lm("오늘 날씨 좋다 정말", "ko") == ("오늘 날씨", "좋다 정말")


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_score_cli_records_the_scheme_and_scores_korean_by_cer(tmp_path):
    ref = _write(tmp_path / "ref", "k1 [웃음] 정말요?\nd1 Er sagte (leise) Ja.\n")
    hyp = _write(tmp_path / "hyp", "k1 정말요\nd1 er sagte ja\n")
    u2l = _write(tmp_path / "utt2lang", "k1 ko\nd1 de\n")
    base = ["--ref", str(ref), "--hyp", str(hyp), "--utt2lang", str(u2l)]
    assert score_cli.main(base + [str(tmp_path / "ours")]) == 0
    assert score_cli.main(base + ["--normalizer", "whisper", str(tmp_path / "whisper")]) == 0
    ours = json.loads((tmp_path / "ours" / "scores.json").read_text(encoding="utf-8"))
    whisper = json.loads((tmp_path / "whisper" / "scores.json").read_text(encoding="utf-8"))
    # ours keeps the bracketed words: 웃음 (2 characters) and leise (1 word) are deleted
    assert ours["sets"]["ko"]["primary"] == "cer"
    assert ours["sets"]["ko"]["scores"]["cer"]["counts"] == {"N": 5, "corr": 3, "sub": 0, "del": 2, "ins": 0}
    assert ours["sets"]["de"]["scores"]["wer"]["counts"] == {"N": 4, "corr": 3, "sub": 0, "del": 1, "ins": 0}
    assert whisper["sets"]["ko"]["scores"]["cer"]["value"] == whisper["sets"]["de"]["scores"]["wer"]["value"] == 0.0
    assert ours["normalizer"]["scheme"] == "part-basic-v1" and set(ours["normalizer"]["asr"]) == {"part-basic-v1"}
    assert whisper["normalizer"]["scheme"] == "whisper" and set(whisper["normalizer"]["asr"]) == {"whisper-basic"}
    assert whisper["sets"]["ko"]["normalizer"] == "whisper-basic"
    assert "WER/CER normalisation (scheme whisper): whisper-basic:" in (
        tmp_path / "whisper" / "scores.md").read_text(encoding="utf-8")
    assert (tmp_path / "whisper" / "ref.trn").read_text(encoding="utf-8").splitlines()[1] == "정 말 요 (k1)"
    with pytest.raises(SystemExit):  # a usage error (argparse's choices)
        score_cli.main(base + ["--normalizer", "nfkc", str(tmp_path / "bad")])


def _decode_dir(path: Path, refs: Dict[str, str], hyps: Dict[str, str], lang: str) -> Path:
    path.mkdir(parents=True)
    for name, table in (("ref", refs), ("hyp", hyps), ("utt2lang", {u: lang for u in refs})):
        _write(path / name, "".join(f"{u} {table[u]}\n" for u in sorted(table)))
    _write(path / "decode.json", json.dumps({"task": "asr"}))
    return path


def test_decode_dirs_rescore_when_the_scheme_changes_and_bootstrap_follows_it(tmp_path):
    refs = {"u1": "Er sagte (leise) Ja.", "u2": "Guten Morgen [Lachen]."}
    a = _decode_dir(tmp_path / "a" / "decode_test_de_asr", refs, {"u1": "er sagte ja", "u2": "guten morgen"}, "de")
    b = _decode_dir(tmp_path / "b" / "decode_test_de_asr", refs, {"u1": "er sagte ja", "u2": "guten abend"}, "de")

    def wer(d: Path) -> float:
        return json.loads((d / "scores.json").read_text())["sets"]["de"]["scores"]["wer"]["value"]

    assert score_decode_dirs.main([str(a), str(b)]) == 0
    assert recorded_normalizer(a) == "part-basic-v1" and wer(a) == pytest.approx(200 / 7, abs=1e-4)   # leise, lachen
    stamp = (a / "scores.json").stat().st_mtime_ns
    assert score_decode_dirs.main([str(a)]) == 0                  # up to date: left alone
    assert (a / "scores.json").stat().st_mtime_ns == stamp
    assert score_decode_dirs.main(["--normalizer", "whisper", str(a), str(b)]) == 0   # another scheme: rescored
    assert recorded_normalizer(a) == "whisper" and wer(a) == 0.0 and wer(b) == 20.0
    # the significance test re-scores both dirs with the scheme A's scores.json records
    overall = bootstrap.compare_dirs(a, b, n_bootstrap=20)["sets"]["overall"]["wer"]
    assert (overall["a"], overall["b"]) == (0.0, 20.0)
    ours = bootstrap.compare_dirs(a, b, n_bootstrap=20, normalizer="part-basic-v1")["sets"]["overall"]["wer"]
    assert ours["a"] == pytest.approx(200 / 7) and ours["b"] == pytest.approx(300 / 7)


def test_old_scores_json_without_scheme_reads_as_ours():
    assert scores.recorded_scheme({"normalizer": {"asr": {}, "bleu": "none"}}) == "part-basic-v1"


def test_part_sh_checks_the_normalizer_before_any_work(tmp_path):
    for name in ("part.sh", "path.sh", "cmd.sh"):
        (tmp_path / name).symlink_to(REPO / "egs" / "TEMPLATE" / "part1" / name)
    (tmp_path / "utils").symlink_to(REPO / "utils")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    def part_sh(normalizer: str) -> subprocess.CompletedProcess:
        return subprocess.run(["./part.sh", "--train_sets", "x", "--stop_stage", "0", "--normalizer", normalizer],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    bad = part_sh("nfkc")
    assert bad.returncode == 2 and "invalid choice: 'nfkc'" in bad.stderr
    assert part_sh("whisper").returncode == 0
