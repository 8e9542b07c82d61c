"""Contamination control and the combined recipe (egs/multilingual/part1/local/data.sh)."""
from __future__ import annotations

import json

import pytest

from corpora_mini import (SPK_A, SPK_B, SPK_C, cv_row, default_covost2, default_cv15, default_fleurs,
                          make_wenetspeech, read_file, recipe_copy, run_data_sh, write_mp3)
from partlib.common import DataError
from partlib.data.corpora.base import DataDirBuilder
from partlib.data.corpora.contamination import (
    Protected, assert_clean, clip_name, decontaminate, decontaminate_all, find_overlap)
from partlib.text.overlap import normalize


def _dir(path, rows, *, audio=True, translations=None, utt2sent=False):
    """A small data dir: rows = [(utt, text, clip path)]."""
    b = DataDirBuilder()
    for i, (utt, text, wav) in enumerate(rows):
        extra = {f"text.{lang}": m[utt] for lang, m in (translations or {}).items()}
        if utt2sent:
            extra["utt2sent"] = str(i)
        b.add(utt, utt.split("-")[0], text, "de", wav=wav if audio else None, **extra)
    b.write(path)
    return path


def test_sentence_normal_form_and_clip_name():
    # sentences are compared in the one normal form of partlib.text.overlap (word boundaries kept)
    assert normalize('"Das ist  ein Test!"') == normalize("das ist ein test") == "das ist ein test"
    assert normalize("你好，世界。") == "你好 世界" and normalize("STRASSE\u200b") == normalize("Straße")
    assert clip_name("/c/clips/common_voice_de_5.mp3") == "common_voice_de_5"
    assert clip_name("/a/audio.ark:123") is None and clip_name("sox x.wav -t wav - |") is None


def test_decontaminate_by_clip_and_sentence(tmp_path):
    ev = _dir(tmp_path / "eval", [("s1-u1", "Das ist ein Test.", "/cv4/clips/common_voice_de_5.mp3")],
              translations={"en": {"s1-u1": "This is a test."}})
    train = _dir(tmp_path / "train", [
        ("s2-a", "Ganz anders.", "/cv15/de/clips/common_voice_de_5.mp3"),    # same clip
        ("s2-b", "das ist ein TEST", "/cv15/de/clips/common_voice_de_6.mp3"),  # same sentence
        ("s2-c", "Etwas Neues.", "/cv15/de/clips/common_voice_de_7.mp3"),
        ("s2-d", "Noch etwas.", "/cv15/de/clips/common_voice_de_8.mp3")], utt2sent=True)
    text = _dir(tmp_path / "text", [("t-1", "Hallo.", None), ("t-2", "Tschüss.", None)], audio=False,
                translations={"en": {"t-1": "This is a test!", "t-2": "Bye."}})
    protected = Protected.from_dirs([ev])
    assert protected.clips == {"common_voice_de_5"}
    assert protected.sentences == {"das ist ein test", "this is a test"}
    assert find_overlap(train, protected) == [("s2-a", "clip"), ("s2-b", "sentence")]
    with pytest.raises(DataError, match="2 utterance.*overlap.*first by clip"):
        assert_clean([train], protected)
    report = decontaminate_all([train, text], [ev], tmp_path / "report.json")
    assert report == {"train": {"kept": 2, "clip": 1, "sentence": 1},
                      "text": {"kept": 1, "clip": 0, "sentence": 1}}
    assert json.loads((tmp_path / "report.json").read_text()) == report
    assert [l.split()[0] for l in read_file(train / "text")] == ["s2-c", "s2-d"]
    assert read_file(train / "utt2sent") == ["s2-c 2", "s2-d 3"]  # unmanaged files filtered too
    assert read_file(train / "spk2utt") == ["s2 s2-c s2-d"]
    assert read_file(text / "text.en") == ["t-2 Bye."] and not (text / "wav.scp").exists()
    assert_clean([train, text], protected)
    assert decontaminate(train, protected) == {"kept": 2, "clip": 0, "sentence": 0}
    assert not list(tmp_path.glob(".*"))  # no temporary dirs left


def test_everything_overlapping_is_an_error(tmp_path):
    ev = _dir(tmp_path / "eval", [("s1-u1", "Eins.", "/c/common_voice_de_1.mp3")])
    train = _dir(tmp_path / "train", [("s2-u1", "Eins!", "/c/common_voice_de_2.mp3")])
    with pytest.raises(DataError, match="every utterance overlaps"):
        decontaminate(train, Protected.from_dirs([ev]))
    assert read_file(train / "text") == ["s2-u1 Eins!"]  # left as it was


@pytest.mark.slow
def test_multilingual_recipe(tmp_path):
    recipe = recipe_copy(tmp_path) / "multilingual" / "part1"
    cv15 = default_cv15(tmp_path / "cv15")
    # A CV15 training sentence that is also a CoVoST 2 dev transcript (clip names differ).
    with open(cv15 / "de" / "train.tsv", "a", encoding="utf-8") as f:
        f.write(cv_row(SPK_C, "common_voice_de_40.mp3", "Es funktioniert!") + "\n")
    write_mp3(cv15 / "de" / "clips" / "common_voice_de_40.mp3")
    default_covost2(tmp_path / "covost2", tmp_path / "cv4")
    env = {"CV15": str(cv15), "FLEURS": str(default_fleurs(tmp_path / "fleurs")),
           "WENETSPEECH": str(make_wenetspeech(tmp_path / "wenet")),
           "COVOST2": str(tmp_path / "covost2"), "CV4": str(tmp_path / "cv4")}
    r = run_data_sh(recipe, ["--cv15-locales", "de zh-CN", "--fleurs-locales", "de_de en_us cmn_hans_cn",
                             "--covost2-directions", "de_en zh-CN_en en_de"], env)
    assert r.returncode == 0, r.stderr
    data = recipe / "data"
    assert read_file(data / "sets" / "train_asr") == [
        "cv15_de_train", "cv15_zh-CN_train", "fleurs_de_de_train", "fleurs_en_us_train",
        "fleurs_cmn_hans_cn_train", "wenetspeech_train_s"]
    assert read_file(data / "sets" / "test_asr")[-2:] == ["wenetspeech_test_net", "wenetspeech_test_meeting"]
    assert read_file(data / "sets" / "train_s2tt") == [
        "covost2_de_en_train", "covost2_zh-CN_en_train", "covost2_en_de_train"]
    assert read_file(data / "sets" / "train_t2tt") == [
        "covost2_de_en_train_text", "covost2_zh-CN_en_train_text", "covost2_en_de_train_text",
        "fleurs_de_de_en_us_train_text", "fleurs_cmn_hans_cn_en_us_train_text"]
    speech = json.loads((data / "contamination_speech.json").read_text())
    # de_1 is a CoVoST 2 test clip; de_40 shares a CoVoST 2 dev sentence; CoVoST's train clip de_5
    # is a CV15 test clip.
    assert speech["cv15_de_train"] == {"kept": 2, "clip": 1, "sentence": 1}
    assert speech["covost2_de_en_train"] == {"kept": 2, "clip": 1, "sentence": 0}
    assert speech["wenetspeech_train_s"] == {"kept": 2, "clip": 0, "sentence": 0}
    text = json.loads((data / "contamination_text.json").read_text())
    assert text["covost2_de_en_train_text"] == {"kept": 2, "clip": 0, "sentence": 1}
    assert text["fleurs_de_de_en_us_train_text"] == {"kept": 2, "clip": 0, "sentence": 0}
    assert [l.split()[0] for l in read_file(data / "cv15_de_train" / "text")] == [
        f"{SPK_A[:20]}-common_voice_de_2", f"{SPK_B[:20]}-common_voice_de_3"]
    assert all("/dump/audio/wenetspeech_train_s/audio.ark:" in line
               for line in read_file(data / "wenetspeech_train_s" / "wav.scp"))
    # The miniature corpora through shards (part.sh stage 3 with --features shards, after stage 2's
    # utt2dur): every training set exports, and the shards give back the data dirs' audio.
    import numpy as np

    from partlib.data import shards
    from partlib.data.audio import AudioReader, write_utt2dur
    from partlib.data.datadir import DataDir

    for name in sum((read_file(data / "sets" / f"train_{t}") for t in ("asr", "s2tt", "t2tt")), []):
        d = data / name
        dd = DataDir.load(d)
        if dd.has_audio():
            write_utt2dur(d)
            dd = DataDir.load(d)
        man = json.loads(shards.export(d, opts=shards.ExportOptions(shard_utts=1)).read_text())
        assert man["utterances"] == len(dd) == len(man["shards"]) and man["audio"] == dd.has_audio()
        if dd.has_audio():
            reader = AudioReader(dd)
            for record in man["shards"]:
                cut = next(shards.read_cuts(d / "shar", record))
                got = shards.ShardAudio(d / "shar" / record["files"]["recording"]["path"]).load(cut["id"])
                assert np.max(np.abs(got - reader[cut["id"]])) <= 1 / 32768, (name, cut["id"])
