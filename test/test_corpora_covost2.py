"""CoVoST 2 preparation (egs/covost2/part1/local/data.sh) on miniature CoVoST 2 + Common Voice 4."""
from __future__ import annotations

import pytest

from corpora_mini import REPO, SPK_A, SPK_B, SPK_C, conf_value, default_covost2, read_file, recipe_copy, run_data_sh
from partlib.common import DataError
from partlib.data.corpora.covost2 import DIRECTIONS, parse_direction
from partlib.data.datadir import DataDir
from partlib.data.langs import canonical

A, B, C = SPK_A[:20], SPK_B[:20], SPK_C[:20]


@pytest.fixture()
def recipe(tmp_path):
    return recipe_copy(tmp_path) / "covost2" / "part1"


@pytest.fixture()
def corpus(tmp_path):
    default_covost2(tmp_path / "covost2", tmp_path / "cv4")
    return {"COVOST2": str(tmp_path / "covost2"), "CV4": str(tmp_path / "cv4")}


def test_directions():
    assert len(DIRECTIONS) == 36 and len(set(DIRECTIONS)) == 36
    assert parse_direction("zh-CN_en") == ("zh-CN", "en") and parse_direction("en_sv-SE") == ("en", "sv-SE")
    with pytest.raises(DataError, match="unknown CoVoST 2 direction 'en_fr'"):
        parse_direction("en_fr")
    codes = {canonical(c) for d in DIRECTIONS for c in parse_direction(d)}
    assert len(codes) == 22 and {"zh", "sv", "en"} <= codes


def test_join_splits_and_text_dirs(recipe, corpus):
    r = run_data_sh(recipe, ["--directions", "de_en zh-CN_en en_de"], corpus)
    assert r.returncode == 0, r.stderr
    data = recipe / "data"
    train = data / "covost2_de_en_train"
    # train = train + train_covost; the row absent from validated.tsv is dropped and counted.
    assert read_file(train / "text") == [f"{B}-common_voice_de_6 Guten Abend.", f"{B}-common_voice_de_7 Gute Nacht.",
                                         f"{C}-common_voice_de_5 Das ist ein Test."]
    assert read_file(train / "text.en") == [f"{B}-common_voice_de_6 Good evening.",
                                            f"{B}-common_voice_de_7 Good night.",
                                            f"{C}-common_voice_de_5 This is a test."]
    assert read_file(train / "utt2lang") == [f"{B}-common_voice_de_6 de", f"{B}-common_voice_de_7 de",
                                             f"{C}-common_voice_de_5 de"]
    assert read_file(train / "utt2spk") == [f"{B}-common_voice_de_6 {B}", f"{B}-common_voice_de_7 {B}",
                                            f"{C}-common_voice_de_5 {C}"]
    assert "covost2_de_en_train: kept=3, unjoined=1" in r.stdout
    assert "1 row(s) have no match" in r.stderr
    test = data / "covost2_de_en_test"
    assert read_file(test / "text") == [f'{A}-common_voice_de_1 """Good-bye,"" said the boy."']
    assert read_file(test / "text.en") == [f'{A}-common_voice_de_1 "Good-bye," said the boy.']
    assert read_file(test / "wav.scp")[0].endswith("/cv4/de/clips/common_voice_de_1.mp3")
    zh = DataDir.load(data / "covost2_zh-CN_en_dev")
    assert zh.utt2lang == {f"{B}-common_voice_zh-CN_21": "zh"}
    assert zh.translations == {"en": {f"{B}-common_voice_zh-CN_21": "Good morning."}}
    en_de = DataDir.load(data / "covost2_en_de_test")
    assert en_de.text == {f"{B}-common_voice_en_31": "This is a test."}
    assert en_de.translations == {"de": {f"{B}-common_voice_en_31": "Das ist ein Test."}}
    # The text-only twin: same pairs, no audio.
    t = data / "covost2_de_en_train_text"
    assert not (t / "wav.scp").exists()
    assert read_file(t / "text.en") == read_file(train / "text.en")
    assert not DataDir.load(t).has_audio()


def test_missing_clip_and_text_dir_keeps_its_pair(tmp_path, recipe, corpus):
    (tmp_path / "cv4" / "de" / "clips" / "common_voice_de_7.mp3").unlink()
    r = run_data_sh(recipe, ["--directions", "de_en"], corpus)
    assert r.returncode != 0 and "1 audio file(s) listed but absent" in r.stderr
    assert "common_voice_de_7.mp3" in r.stderr
    r = run_data_sh(recipe, ["--directions", "de_en", "--allow-missing", "true"], corpus)
    assert r.returncode == 0, r.stderr
    assert "covost2_de_en_train: kept=2, missing_audio=1, unjoined=1" in r.stdout
    assert len(read_file(recipe / "data" / "covost2_de_en_train_text" / "text")) == 3


def test_bad_paths(tmp_path, recipe, corpus):
    r = run_data_sh(recipe, ["--directions", "pt_en"], corpus)  # not in the miniature
    assert r.returncode != 0 and "covost_v2.pt_en.tsv: missing file" in r.stderr
    r = run_data_sh(recipe, ["--directions", "de_en"], {**corpus, "CV4": str(tmp_path / "covost2")})
    assert r.returncode != 0 and "covost2/de: missing folder" in r.stderr and "validated.tsv" in r.stderr
    r = run_data_sh(recipe, ["--directions", "de_en"], {"COVOST2": corpus["COVOST2"]})
    assert r.returncode != 0 and "COVOST2 and CV4 must be set" in r.stderr
    assert not (recipe / "data").exists() or not any((recipe / "data").iterdir())


def test_paper_directions(recipe, corpus):
    """conf/data.conf: the paper's seven X->en directions (en->X only as a commented option)."""
    directions = conf_value(REPO / "egs" / "covost2" / "part1" / "conf" / "data.conf", "directions").split()
    assert [tuple(canonical(c) for c in parse_direction(d)) for d in directions] == [
        (s, "en") for s in ("zh", "ja", "de", "fr", "es", "it", "ru")]
    r = run_data_sh(recipe, ["--directions", "ru_en"], corpus)
    assert r.returncode == 0, r.stderr
    test = DataDir.load(recipe / "data" / "covost2_ru_en_test")
    assert test.utt2lang == {f"{C}-common_voice_ru_92": "ru"}
    assert test.translations == {"en": {f"{C}-common_voice_ru_92": "Twenty-one percent, that's 21%!"}}
