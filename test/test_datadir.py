"""DataDir: load, write, subset and the directory operations (fix, combine, split, copy, subset)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import pytest

from partlib.common import DataError
from partlib.data import dirtools
from partlib.data.datadir import DataDir
from partlib.data.dirtools import combine_data_dirs, copy_data_dir, fix_data_dir, split_data_dir, subset_data_dir
from partlib.data.kv import read_kv
from partlib.data.validate import validate_data_dir


def write_files(d: Path, files: Dict[str, str | bytes]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content if isinstance(content, bytes) else content.encode("utf-8")
        (d / name).write_bytes(data)
    return d


def speech_files() -> Dict[str, str]:
    """A segmented German->English speech-translation dir: 2 speakers, 2 recordings, 4 utts."""
    return {
        "wav.scp": "recA /c/recA.wav\nrecB sox /c/recB.flac -t wav - |\n",
        "segments": "sa-1 recA 0.0 1.5\nsa-2 recA 1.5 3.0\nsb-1 recB 0 2.5\nsb-2 recB 2.5 4\n",
        "text": "sa-1 guten morgen\nsa-2 danke\nsb-1 hallo welt\nsb-2 tschüss\n",
        "text.en": "sa-1 good morning\nsa-2 thanks\nsb-1 hello world\nsb-2 bye\n",
        "utt2spk": "sa-1 sa\nsa-2 sa\nsb-1 sb\nsb-2 sb\n",
        "spk2utt": "sa sa-1 sa-2\nsb sb-1 sb-2\n",
        "utt2lang": "sa-1 de_de\nsa-2 de\nsb-1 de-DE\nsb-2 deu\n",
        "utt2dur": "sa-1 1.5\nsa-2 1.5\nsb-1 2.5\nsb-2 1.5\n",
        "reco2dur": "recA 3.0\nrecB 4.0\n",
        "spk2gender": "sa f\nsb m\n",
    }


@pytest.fixture
def speech_dir(tmp_path: Path) -> Path:
    return write_files(tmp_path / "speech", speech_files())


def text_only_files() -> Dict[str, str]:
    return {
        "text": "s1-a 你好\ns1-b 谢谢\ns2-a 再见\n",
        "text.en": "s1-a hello\ns1-b thanks\ns2-a goodbye\n",
        "utt2spk": "s1-a s1\ns1-b s1\ns2-a s2\n",
        "spk2utt": "s1 s1-a s1-b\ns2 s2-a\n",
        "utt2lang": "s1-a zh-CN\ns1-b cmn_hans_cn\ns2-a zh\n",
    }


# --- load --------------------------------------------------------------------------------------

def test_load_parses_every_file(speech_dir: Path) -> None:
    d = DataDir.load(speech_dir)
    assert d.utts == ["sa-1", "sa-2", "sb-1", "sb-2"]
    assert d.spk2utt == {"sa": ["sa-1", "sa-2"], "sb": ["sb-1", "sb-2"]}
    assert d.segments["sb-2"] == ("recB", 2.5, 4.0)
    assert d.wav_scp["recB"] == "sox /c/recB.flac -t wav - |"
    assert d.utt2lang == dict.fromkeys(d.utts, "de")  # all corpus spellings canonicalised
    assert d.lang("sb-1") == "de"
    assert d.translations == {"en": {"sa-1": "good morning", "sa-2": "thanks",
                                     "sb-1": "hello world", "sb-2": "bye"}}
    assert d.text["sb-2"] == "tschüss"
    assert d.utt2dur["sb-1"] == 2.5 and d.reco2dur == {"recA": 3.0, "recB": 4.0}
    assert d.spk2gender == {"sa": "f", "sb": "m"}
    assert d.recording("sa-2") == "recA"
    assert d.has_audio() and d.feats_scp is None and d.path == speech_dir


def test_text_only_dir_is_valid_for_text_tasks(tmp_path: Path) -> None:
    d = DataDir.load(write_files(tmp_path / "t", text_only_files()))
    assert not d.has_audio()
    assert d.utt2lang == {"s1-a": "zh", "s1-b": "zh", "s2-a": "zh"}
    assert d.translations["en"]["s2-a"] == "goodbye"


def test_load_without_validate_defaults_speakers(tmp_path: Path) -> None:
    d = DataDir.load(write_files(tmp_path / "t", {"text": "a y\nb x\n"}), validate=False)
    assert d.utt2spk == {"a": "a", "b": "b"} and d.utts == ["a", "b"]


def test_lang_without_utt2lang_is_an_error(tmp_path: Path) -> None:
    files = text_only_files()
    del files["utt2lang"]
    d = DataDir.load(write_files(tmp_path / "t", files))
    with pytest.raises(DataError, match="utt2lang"):
        d.lang("s1-a")


# --- bad input: DataError names file, line and utterance ---------------------------------------

@pytest.mark.parametrize("file,content,line,utt,message", [
    ("utt2lang", "sa-1 de\nsa-2 xx-klingon\nsb-1 de\nsb-2 de\n", 2, "sa-2", "unknown language"),
    ("text", b"sa-1 guten morgen\nsa-2 dank\xe9\nsb-1 hallo\nsb-2 x\n", 2, "sa-2", "UTF-8"),
    ("text.en", b"sa-1 a\nsa-2 b\nsb-1 \xff\xfe\nsb-2 d\n", 3, "sb-1", "UTF-8"),
    ("utt2dur", "sa-1 1.5\nsa-1 1.5\nsa-2 1\nsb-1 2\nsb-2 1\n", 2, "sa-1", "duplicate"),
    ("text", "sa-1 a\nsa-2 b\nsb-2 d\nsb-1 c\n", 4, "sb-1", "sorted"),
    ("segments", "sa-1 recA 0.0 1.5\nsa-2 recA 1.5 3.6\nsb-1 recB 0 2.5\nsb-2 recB 2.5 4\n",
     2, "sa-2", r"ends 0.6 s after the end of recording 'recA' \(3 s long"),
    ("segments", "sa-1 recA -1 1.5\nsa-2 recA 1.5 3.0\nsb-1 recB 0 2.5\nsb-2 recB 2.5 4\n",
     1, "sa-1", "start"),
    ("text.en", "sa-1 a\nsa-2 b\nsb-1 c\n", None, "sb-2", "missing"),
    ("utt2dur", "sa-1 1.5\nsa-2 abc\nsb-1 2\nsb-2 1\n", 2, "sa-2", "not a number"),
    ("utt2spk", "sa-1 sa\nsa-2 sa\nsb-1 sb\nsb-2\n", 4, "sb-2", "wrong format"),
])
def test_bad_input_names_file_line_and_utt(speech_dir: Path, file: str, content, line, utt: str,
                                           message: str) -> None:
    write_files(speech_dir, {file: content})
    with pytest.raises(DataError, match=message) as ei:
        DataDir.load(speech_dir)
    e = ei.value
    assert Path(e.path).name == file and e.line == line and e.utt == utt
    assert utt in str(e) and file in str(e)


def test_segment_within_tolerance_is_accepted(speech_dir: Path) -> None:
    write_files(speech_dir, {"segments": "sa-1 recA 0.0 1.5\nsa-2 recA 1.5 3.45\n"
                                         "sb-1 recB 0 2.5\nsb-2 recB 2.5 4\n"})
    assert DataDir.load(speech_dir).segments["sa-2"][2] == 3.45


def test_unknown_text_suffix_is_not_a_translation(speech_dir: Path) -> None:
    write_files(speech_dir, {"text.orig": "whatever\n"})
    assert set(DataDir.load(speech_dir).translations) == {"en"}


# --- write -------------------------------------------------------------------------------------

def test_write_round_trip_is_sorted_and_validates(speech_dir: Path, tmp_path: Path) -> None:
    d = DataDir.load(speech_dir)
    out = tmp_path / "out"
    d.write(out)
    validate_data_dir(out, no_feats=True)
    for f in out.iterdir():
        raw = f.read_bytes()
        assert raw.endswith(b"\n"), f
        keys = [line.split()[0] for line in raw.decode().splitlines()]
        assert keys == sorted(keys, key=lambda k: k.encode()) and len(set(keys)) == len(keys), f
    again = DataDir.load(out)
    assert again.files() == d.files()
    assert read_kv(out / "utt2lang") == dict.fromkeys(d.utts, "de")
    assert (out / "text.en").is_file() and read_kv(out / "spk2utt")["sb"] == "sb-1 sb-2"


def test_write_sorts_in_c_order_and_regenerates_spk2utt(tmp_path: Path) -> None:
    d = DataDir({"s-é": "s", "s-z": "s", "S-a": "S"}, text={"s-z": "z", "s-é": "e", "S-a": "a"})
    d.write(tmp_path / "o")
    assert (tmp_path / "o" / "text").read_text() == "S-a a\ns-z z\ns-é e\n"
    assert (tmp_path / "o" / "spk2utt").read_text() == "S S-a\ns s-z s-é\n"


def test_write_removes_stale_files_but_keeps_others(speech_dir: Path) -> None:
    (speech_dir / "notes.txt").write_text("keep me\n")
    d = DataDir.load(speech_dir)
    d.segments = d.reco2dur = d.wav_scp = None
    d.translations = {}
    d.write(speech_dir)
    names = {f.name for f in speech_dir.iterdir()}
    assert not {"segments", "reco2dur", "wav.scp", "text.en"} & names
    assert {"notes.txt", "text", "utt2spk", "spk2utt"} <= names


def test_failing_write_leaves_existing_files_intact(speech_dir: Path) -> None:
    before = {f.name: f.read_bytes() for f in speech_dir.iterdir()}
    d = DataDir.load(speech_dir)
    d.text = {**d.text, "zz-extra": "orphan"}  # key not in utt2spk
    with pytest.raises(DataError, match="zz-extra"):
        d.write(speech_dir)
    d = DataDir.load(speech_dir)
    d.text["sa-1"] = "line\nbreak"
    with pytest.raises(DataError, match="line break"):
        d.write(speech_dir)
    assert {f.name: f.read_bytes() for f in speech_dir.iterdir()} == before


def test_unknown_language_in_constructor() -> None:
    with pytest.raises(DataError, match="unknown language") as ei:
        DataDir({"a": "a"}, utt2lang={"a": "qq-nope"})
    assert ei.value.utt == "a"
    assert DataDir({"a": "a"}, translations={"zh-CN": {"a": "x"}}).translations == {"zh": {"a": "x"}}


# --- subset / fix / combine / split / copy -----------------------------------------------------

def test_subset_prunes_speakers_and_recordings(speech_dir: Path) -> None:
    sub = DataDir.load(speech_dir).subset(["sb-2", "sb-1", "not-there"])
    assert sub.utts == ["sb-1", "sb-2"]
    assert sub.spk2gender == {"sb": "m"} and set(sub.wav_scp) == {"recB"}
    assert sub.reco2dur == {"recB": 4.0} and set(sub.translations["en"]) == {"sb-1", "sb-2"}


def test_fix_data_dir_repairs_and_backs_up(speech_dir: Path) -> None:
    messy = {
        "text": "sb-2 tschüss\nsa-1 guten morgen\nsa-2 danke\nsb-1 hallo welt\nsa-1 duplicate\n",
        "utt2dur": "sa-1 1.5\nsb-1 2.5\nsb-2 1.5\n",            # sa-2 has no duration
        "wav.scp": "recA /c/recA.wav\nrecB /c/recB.wav\nrecC /c/orphan.wav\n",
        "reco2dur": "recA 3.0\nrecB 4.0\nrecC 9\n",
        "spk2utt": "sb sb-1\n",                                  # stale
        "cmvn.scp": "sa c:1\nsb c:2\nsz c:3\n",
        "vad.scp": "sa-1 v:0\nsa-2 v:1\nsb-1 v:2\nsb-2 v:3\nsc-1 v:4\n",
    }
    write_files(speech_dir, messy)
    fix_data_dir(speech_dir)
    d = DataDir.load(speech_dir)
    assert d.utts == ["sa-1", "sb-1", "sb-2"]
    assert d.text["sa-1"] == "guten morgen"                      # first of the duplicates
    assert set(d.wav_scp) == {"recA", "recB"} and set(d.reco2dur) == {"recA", "recB"}
    assert d.spk2utt == {"sa": ["sa-1"], "sb": ["sb-1", "sb-2"]}
    assert (speech_dir / ".backup" / "text").read_text() == messy["text"]
    assert (speech_dir / ".backup" / "wav.scp").read_text() == messy["wav.scp"]
    assert read_kv(speech_dir / "cmvn.scp") == {"sa": "c:1", "sb": "c:2"}
    assert list(read_kv(speech_dir / "vad.scp")) == ["sa-1", "sb-1", "sb-2"]
    validate_data_dir(speech_dir, no_feats=True)


def test_fix_data_dir_drops_segments_of_missing_recordings(speech_dir: Path) -> None:
    write_files(speech_dir, {"wav.scp": "recB /c/recB.wav\n"})
    fix_data_dir(speech_dir)
    assert DataDir.load(speech_dir).utts == ["sb-1", "sb-2"]


def test_fix_data_dir_with_nothing_left_fails_without_writing(speech_dir: Path) -> None:
    write_files(speech_dir, {"feats.scp": "other-1 a.ark:1\n"})
    before = (speech_dir / "text").read_bytes()
    with pytest.raises(DataError, match="no utterances remain"):
        fix_data_dir(speech_dir)
    assert (speech_dir / "text").read_bytes() == before


def test_combine_merges_and_adds_whole_file_segments(speech_dir: Path, tmp_path: Path) -> None:
    plain = write_files(tmp_path / "plain", {
        "wav.scp": "sc-1 /c/sc1.wav\n", "text": "sc-1 ja\n", "text.en": "sc-1 yes\n",
        "utt2spk": "sc-1 sc\n", "spk2utt": "sc sc-1\n", "utt2lang": "sc-1 de\n",
        "utt2dur": "sc-1 0.75\n"})
    out = tmp_path / "combined"
    combine_data_dirs(out, [speech_dir, plain])
    d = DataDir.load(out)
    assert d.utts == ["sa-1", "sa-2", "sb-1", "sb-2", "sc-1"]
    assert d.segments["sc-1"] == ("sc-1", 0.0, 0.75) and d.wav_scp["sc-1"] == "/c/sc1.wav"
    assert d.translations["en"]["sc-1"] == "yes"
    assert d.spk2gender is None          # only one source has it
    validate_data_dir(out, no_feats=True)


def test_combine_rejects_conflicting_utterances(speech_dir: Path, tmp_path: Path) -> None:
    other = write_files(tmp_path / "other", {**speech_files(),
                                             "text": "sa-1 anders\nsa-2 danke\nsb-1 hallo welt\n"
                                                     "sb-2 tschüss\n"})
    with pytest.raises(DataError, match="sa-1") as ei:
        combine_data_dirs(tmp_path / "out", [speech_dir, other])
    assert ei.value.utt == "sa-1" and not (tmp_path / "out").exists()


def test_combine_same_dir_twice_is_identity(speech_dir: Path, tmp_path: Path) -> None:
    combine_data_dirs(tmp_path / "out", [speech_dir, speech_dir])
    assert DataDir.load(tmp_path / "out").files() == DataDir.load(speech_dir).files()


def many_speakers(root: Path, counts: Dict[str, int]) -> Path:
    utt2spk = {f"{s}-{i:02d}": s for s, n in counts.items() for i in range(n)}
    DataDir(utt2spk, text={u: "x" for u in utt2spk},
            utt2lang={u: "en" for u in utt2spk}).write(root)
    return root


def test_split_by_speaker_keeps_speakers_whole_and_balances(tmp_path: Path) -> None:
    src = many_speakers(tmp_path / "d", {"a": 5, "b": 1, "c": 4, "d": 2, "e": 6, "f": 2})
    parts = split_data_dir(src, 3)
    assert parts == [src / "split3" / str(i) for i in (1, 2, 3)]
    loaded = [DataDir.load(p) for p in parts]
    seen = [set(p.spk2utt) for p in loaded]
    assert set().union(*seen) == set("abcdef") and sum(len(s) for s in seen) == 6
    assert sorted(u for p in loaded for u in p.utts) == DataDir.load(src).utts
    assert [len(p) for p in loaded] == [6, 6, 8]    # best contiguous cut of 5,1,4,2,6,2


def test_split_per_utterance(tmp_path: Path) -> None:
    src = many_speakers(tmp_path / "d", {"a": 5, "b": 2})
    parts = split_data_dir(src, 3, by_speaker=False)
    assert parts[0] == src / "split3utt" / "1"
    assert [len(DataDir.load(p)) for p in parts] == [2, 3, 2]


def test_split_more_parts_than_speakers_fails(tmp_path: Path) -> None:
    src = many_speakers(tmp_path / "d", {"a": 5, "b": 2})
    with pytest.raises(DataError, match="2 speakers into 3 parts"):
        split_data_dir(src, 3)


def test_balanced_chunks_are_contiguous_and_nonempty() -> None:
    groups = [["x"] * n for n in (10, 1, 1, 1)]
    chunks = dirtools._balanced_chunks(groups, 3)
    assert [sum(map(len, c)) for c in chunks] == [10, 1, 2]


def test_copy_with_prefixes_stays_valid(speech_dir: Path, tmp_path: Path) -> None:
    copy_data_dir(speech_dir, tmp_path / "c", utt_prefix="sp1.1-", spk_prefix="sp1.1-")
    d = DataDir.load(tmp_path / "c")
    assert d.utts[0] == "sp1.1-sa-1" and d.utt2spk["sp1.1-sa-1"] == "sp1.1-sa"
    assert d.segments["sp1.1-sa-1"][0] == "recA"       # recording ids kept with segments
    assert d.spk2gender == {"sp1.1-sa": "f", "sp1.1-sb": "m"}
    assert d.translations["en"]["sp1.1-sb-2"] == "bye"


def test_copy_without_segments_renames_recordings(tmp_path: Path) -> None:
    src = write_files(tmp_path / "s", {"wav.scp": "a-1 a.wav\n", "utt2spk": "a-1 a\n",
                                       "spk2utt": "a a-1\n", "reco2dur": "a-1 2\n",
                                       "text": "a-1 x\n"})
    copy_data_dir(src, tmp_path / "c", utt_suffix="-rev")
    d = DataDir.load(tmp_path / "c")
    assert d.wav_scp == {"a-1-rev": "a.wav"} and d.reco2dur == {"a-1-rev": 2.0}


def test_subset_data_dir_selectors(speech_dir: Path, tmp_path: Path) -> None:
    def utts(**kw) -> list:
        out = tmp_path / f"o{len(list(tmp_path.iterdir()))}"
        subset_data_dir(speech_dir, out, **kw)
        return DataDir.load(out).utts

    assert utts(first=2) == ["sa-1", "sa-2"]
    assert utts(last=1) == ["sb-2"]
    (tmp_path / "ul").write_text("sb-1\nsa-2 extra\nnope\n")
    assert utts(utt_list=tmp_path / "ul") == ["sa-2", "sb-1"]
    (tmp_path / "sl").write_text("sb\n")
    assert utts(spk_list=tmp_path / "sl") == ["sb-1", "sb-2"]
    r1, r2 = utts(random_n=2, seed=3), utts(random_n=2, seed=3)
    assert r1 == r2 and len(r1) == 2
    with pytest.raises(DataError, match="exactly one"):
        subset_data_dir(speech_dir, tmp_path / "x", first=1, last=1)
    with pytest.raises(DataError, match="cannot select 9"):
        subset_data_dir(speech_dir, tmp_path / "x", first=9)


def test_meta_files_travel_with_subsets(speech_dir: Path, tmp_path: Path) -> None:
    (speech_dir / "feats_type").write_text("whisper_mel 80\n")
    subset_data_dir(speech_dir, tmp_path / "s", first=1)
    assert (tmp_path / "s" / "feats_type").read_text() == "whisper_mel 80\n"


def test_utt2sent_survives_subset_copy_and_write(tmp_path):
    utts = ["s1-a", "s1-b", "s2-c"]
    d = DataDir({u: u.split("-")[0] for u in utts}, text={u: "x" for u in utts},
                utt2sent={"s1-a": "7", "s1-b": "9", "s2-c": "7"})
    d.write(tmp_path / "d")
    assert (tmp_path / "d" / "utt2sent").read_text() == "s1-a 7\ns1-b 9\ns2-c 7\n"
    sub = DataDir.load(tmp_path / "d").subset(["s1-b", "s2-c"])
    assert sub.utt2sent == {"s1-b": "9", "s2-c": "7"}
    copy_data_dir(tmp_path / "d", tmp_path / "c", utt_prefix="p-", spk_prefix="p-")
    assert DataDir.load(tmp_path / "c").utt2sent == {"p-s1-a": "7", "p-s1-b": "9", "p-s2-c": "7"}
    (tmp_path / "d" / "utt2sent").write_text("s1-a 7\n")
    with pytest.raises(DataError, match="utt2sent"):
        DataDir.load(tmp_path / "d")


def _speaker_dirs(tmp_path: Path):
    """Two speakers x 5 utterances of 16 kHz 16-bit audio (exact in FLAC), texts w<i> and x<i>."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    wav, audio, utt2spk, text, en = {}, {}, {}, {}, {}
    for spk in ("a", "b"):
        for i in range(5):
            utt = f"{spk}-{i}"
            x = (rng.integers(-20000, 20000, size=1600 * (3 + i)) / 32768).astype(np.float32)
            path = tmp_path / "wav" / f"{utt}.wav"
            path.parent.mkdir(exist_ok=True)
            sf.write(path, x, 16000, subtype="PCM_16")
            wav[utt], audio[utt], utt2spk[utt] = str(path), x, spk
            text[utt], en[utt] = f"w{spk}{i}", f"x{spk}{i}"
    DataDir(utt2spk, wav_scp=wav, text=text, utt2lang={u: "de" for u in wav}, translations={"en": en}).write(
        tmp_path / "src")
    return tmp_path / "src", audio


def test_concat_joins_utterances_of_one_speaker_with_pauses(tmp_path: Path) -> None:
    import numpy as np
    import soundfile as sf

    src, audio = _speaker_dirs(tmp_path)
    n = dirtools.concat_data_dir(src, tmp_path / "cat_audio", tmp_path / "cat", sizes=(2, 3), seed=3)
    out = DataDir.load(tmp_path / "cat")
    assert n == len(out.utts) >= 2
    validate_data_dir(tmp_path / "cat", no_feats=True)
    used = []
    for utt in out.utts:
        members = [f"{w[1]}-{w[2:]}" for w in out.text[utt].split()]  # text "wa0 wa3" -> utterances a-0 a-3
        assert 2 <= len(members) <= 3 and {out.utt2spk[utt]} == {m[0] for m in members}
        assert out.translations["en"][utt] == " ".join("x" + m.replace("-", "") for m in members)
        used += members
        joined, rate = sf.read(out.wav_scp[utt], dtype="float32")
        assert rate == 16000 and out.utt2dur[utt] == pytest.approx(len(joined) / 16000, abs=1e-4)
        pos = 0
        for m in members:  # each member's samples, then 0.1-0.4 s of silence
            assert np.array_equal(joined[pos:pos + len(audio[m])], audio[m]), (utt, m)
            pos += len(audio[m])
            gap = 0
            while pos + gap < len(joined) and joined[pos + gap] == 0.0 and gap <= 6400:
                gap += 1
            assert 1600 <= gap <= 6400, (utt, m, gap)
            pos += gap
        assert pos == len(joined)
    assert len(used) == len(set(used))  # no utterance twice
    # a share of the utterances, within a duration bound; bad options are named
    dirtools.concat_data_dir(src, tmp_path / "half_audio", tmp_path / "half", sizes=(2, 4), fraction=0.5,
                             max_dur=1.5, seed=1)
    half = DataDir.load(tmp_path / "half")
    assert sum(len(t.split()) for t in half.text.values()) <= 5 and max(half.utt2dur.values()) <= 1.5
    with pytest.raises(DataError, match="group sizes"):
        dirtools.concat_data_dir(src, tmp_path / "x", tmp_path / "y", sizes=(1, 3))
