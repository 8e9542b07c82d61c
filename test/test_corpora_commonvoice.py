"""Common Voice 15 preparation (egs/commonvoice15/part1/local/data.sh) on a miniature release."""
from __future__ import annotations

import numpy as np
import pytest

from corpora_mini import (REPO, SPK_A, SPK_B, SPK_C, conf_value, cv_row, default_cv15, make_cv15, read_file,
                          recipe_copy, run_data_sh)
from partlib.common import DataError
from partlib.data.audio import load_audio
from partlib.data.corpora.base import clean_text, shorten_ids
from partlib.data.corpora.tsv import read_tsv

A, B, C = SPK_A[:20], SPK_B[:20], SPK_C[:20]  # shortest unique prefixes (>= 16 chars)


@pytest.fixture()
def recipe(tmp_path):
    return recipe_copy(tmp_path) / "commonvoice15" / "part1"


def test_tsv_reader_keeps_raw_quotes_and_empty_fields(tmp_path):
    f = tmp_path / "t.tsv"
    f.write_text('client_id\tpath\tsentence\tgender\n'
                 'c1\ta.mp3\t"""Good-bye,"" said the boy."\t\n'
                 'c2\tb.mp3\t"open quote\t\n'
                 'c3\tc.mp3\tback\\\\slash\tmale\n', encoding="utf-8")
    rows = [r for _, r in read_tsv(f, ("path", "sentence"))]
    assert [r["sentence"] for r in rows] == ['"""Good-bye,"" said the boy."', '"open quote', "back\\slash"]
    assert rows[0]["gender"] == "" and len(rows) == 3


def test_tsv_reader_names_missing_column_and_bad_row(tmp_path):
    f = tmp_path / "t.tsv"
    f.write_text("client_id\tsentence\nc1\tx\n", encoding="utf-8")
    with pytest.raises(DataError, match="missing column.*path"):
        list(read_tsv(f, ("client_id", "path")))
    f.write_text("client_id\tpath\nc1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"t\.tsv:2: expected 2"):
        list(read_tsv(f, ("client_id", "path")))


def test_clean_text_and_short_ids():
    assert clean_text("a\u00a0b\u2009 c\u200bd\u200ce  ") == "a b cd\u200ce"
    short = shorten_ids([SPK_A, SPK_B, SPK_C])
    assert short == {SPK_A: A, SPK_B: B, SPK_C: C}
    assert shorten_ids(["abcdef" * 4, "bbbbbb" * 4]) == {"abcdef" * 4: ("abcdef" * 4)[:16],
                                                         "bbbbbb" * 4: "b" * 16}


def test_prepares_every_locale_and_split(tmp_path, recipe):
    root = default_cv15(tmp_path / "cv-corpus-15.0-2023-09-08")
    r = run_data_sh(recipe, ["--locales", "de zh-CN"], {"CV15": str(root)})
    assert r.returncode == 0, r.stderr
    data = recipe / "data"
    assert sorted(p.name for p in data.iterdir()) == sorted(
        f"cv15_{l}_{s}" for l in ("de", "zh-CN") for s in ("train", "dev", "test"))
    d = data / "cv15_de_train"
    assert read_file(d / "text") == [
        f'{A}-common_voice_de_1 """Good-bye,"" said the boy."',
        f"{A}-common_voice_de_2 Hallo Welt!",
        f'{B}-common_voice_de_3 Er sagte: "Nein".']
    assert read_file(d / "utt2spk") == [f"{A}-common_voice_de_1 {A}", f"{A}-common_voice_de_2 {A}",
                                        f"{B}-common_voice_de_3 {B}"]
    assert read_file(d / "spk2utt") == [f"{A} {A}-common_voice_de_1 {A}-common_voice_de_2",
                                        f"{B} {B}-common_voice_de_3"]
    assert read_file(d / "utt2lang") == [f"{u} de" for u in (
        f"{A}-common_voice_de_1", f"{A}-common_voice_de_2", f"{B}-common_voice_de_3")]
    clips = (root / "de" / "clips").resolve()
    assert read_file(d / "wav.scp")[0] == f"{A}-common_voice_de_1 {clips}/common_voice_de_1.mp3"
    assert not (d / "spk2gender").exists()  # speaker B's gender is unknown
    assert read_file(data / "cv15_de_test" / "spk2gender") == [f"{C} f"]
    assert read_file(data / "cv15_zh-CN_test" / "utt2lang") == [f"{C}-common_voice_zh-CN_12 zh"]
    assert "cv15_de_train: kept=3" in r.stdout
    # The mp3 value decodes (48 kHz in the file) to 16 kHz samples.
    x = load_audio(f"{clips}/common_voice_de_1.mp3")
    assert x.dtype == np.float32 and abs(len(x) - 4800) < 1200


def test_bad_path_names_missing_file_and_layout(tmp_path, recipe):
    r = run_data_sh(recipe, ["--locales", "de"], {"CV15": str(tmp_path / "nowhere")})
    assert r.returncode != 0 and "nowhere" in r.stderr and "expected layout" in r.stderr
    root = make_cv15(tmp_path / "cv", {"de": {"train": [cv_row(SPK_A, "common_voice_de_1.mp3", "x")]}})
    r = run_data_sh(recipe, ["--locales", "de"], {"CV15": str(root)})
    assert r.returncode != 0 and "de/dev.tsv" in r.stderr and "<locale>/clips" in r.stderr
    r = run_data_sh(recipe, ["--locales", "de"])
    assert r.returncode != 0 and "CV15 is not set" in r.stderr
    assert not (recipe / "data").exists() or not any((recipe / "data").iterdir())


def test_missing_clip_fails_unless_allowed(tmp_path, recipe):
    root = default_cv15(tmp_path / "cv")
    (root / "de" / "clips" / "common_voice_de_2.mp3").unlink()
    r = run_data_sh(recipe, ["--locales", "de"], {"CV15": str(root)})
    assert r.returncode != 0
    assert "1 audio file(s) listed but absent" in r.stderr and "--allow-missing true" in r.stderr
    assert not (recipe / "data").exists() or not any((recipe / "data").iterdir())  # nothing partial
    r = run_data_sh(recipe, ["--locales", "de", "--allow-missing", "true"], {"CV15": str(root)})
    assert r.returncode == 0, r.stderr
    assert "cv15_de_train: kept=2, missing_audio=1" in r.stdout
    assert [l.split()[0] for l in read_file(recipe / "data" / "cv15_de_train" / "text")] == [
        f"{A}-common_voice_de_1", f"{B}-common_voice_de_3"]


def test_tsv_reader_rejects_bad_encoding_and_empty_file(tmp_path):
    f = tmp_path / "t.tsv"
    f.write_bytes(b"client_id\tpath\nc1\t\xff.mp3\n")
    with pytest.raises(DataError, match=r"t\.tsv: not valid UTF-8"):
        list(read_tsv(f, ("path",)))
    f.write_bytes(b"")
    with pytest.raises(DataError, match="empty file"):
        list(read_tsv(f, ("path",)))


def test_prepares_the_paper_languages(tmp_path, recipe):
    """The ten locales of conf/data.conf, Cantonese and Korean among them, with their canonical codes."""
    locales = conf_value(REPO / "egs" / "commonvoice15" / "part1" / "conf" / "data.conf", "locales").split()
    assert locales == ["zh-CN", "en", "ja", "ko", "yue", "de", "fr", "ru", "es", "it"]
    root = default_cv15(tmp_path / "cv")
    r = run_data_sh(recipe, ["--locales", " ".join(locales)], {"CV15": str(root)})
    assert r.returncode == 0, r.stderr
    data = recipe / "data"
    codes = {l: read_file(data / f"cv15_{l}_test" / "utt2lang")[0].split()[1] for l in locales}
    assert codes == {"zh-CN": "zh", "en": "en", "ja": "ja", "ko": "ko", "yue": "yue", "de": "de", "fr": "fr",
                     "ru": "ru", "es": "es", "it": "it"}
    assert read_file(data / "cv15_yue_train" / "text") == [f"{A}-common_voice_yue_50 你食咗飯未呀？（好肚餓）"]
    assert read_file(data / "cv15_ko_test" / "text") == [f"{C}-common_voice_ko_62 [웃음] 정말요? (네) 좋아요…"]
