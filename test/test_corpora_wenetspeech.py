"""WenetSpeech preparation and segment dump (egs/wenetspeech/part1/local/data.sh) on a miniature corpus."""
from __future__ import annotations

import json

import numpy as np
import pytest

from corpora_mini import make_wenetspeech, read_file, recipe_copy, run_data_sh
from partlib.common import DataError
from partlib.data.audio import AudioReader, load_audio
from partlib.data.corpora.wenetspeech import iter_audios
from partlib.data.datadir import DataDir
from partlib.data.langs import uses_cer

AID0, AID1 = "Y0000000000_--5llN02F84", "-P0000000001"


@pytest.fixture()
def recipe(tmp_path):
    return recipe_copy(tmp_path) / "wenetspeech" / "part1"


@pytest.mark.parametrize("chunk", [5, 64, 1 << 20])
def test_stream_parser_matches_json_load(tmp_path, chunk):
    root = make_wenetspeech(tmp_path / "w")
    want = json.loads((root / "WenetSpeech.json").read_text(encoding="utf-8"))["audios"]
    assert list(iter_audios(root / "WenetSpeech.json", chunk=chunk)) == want


def test_stream_parser_rejects_truncated_json(tmp_path):
    f = tmp_path / "w.json"
    f.write_text('{"version": 1.5, "audios": [{"aid": "a", "segments": []}, {"aid"', encoding="utf-8")
    with pytest.raises(DataError, match="malformed JSON"):
        list(iter_audios(f, chunk=8))
    f.write_text('{"version": 1.5}', encoding="utf-8")
    with pytest.raises(DataError, match='no top-level "audios"'):
        list(iter_audios(f))


def test_subsets_segments_and_dump(tmp_path, recipe):
    root = make_wenetspeech(tmp_path / "WenetSpeech")
    r = run_data_sh(recipe, ["--train-subset", "M"], {"WENETSPEECH": str(root)})
    assert r.returncode == 0, r.stderr
    local = recipe / "data" / "local"
    train = local / "wenetspeech_train_m"
    assert read_file(train / "segments") == [
        f"{AID1}_S00000 {AID1} 0.0 1.5",
        f"{AID0}_S00000 {AID0} 0.2 1.0",
        f"{AID0}_S00002 {AID0} 2.0 2.9"]
    assert read_file(train / "text") == [f"{AID1}_S00000 今天 天气 不错",
                                         f"{AID0}_S00000 怎么样这些日子住得还习惯吧",
                                         f"{AID0}_S00002 那就好"]
    assert read_file(train / "utt2spk") == [f"{AID1}_S00000 {AID1}", f"{AID0}_S00000 {AID0}",
                                            f"{AID0}_S00002 {AID0}"]
    assert read_file(train / "wav.scp") == [
        f"{AID1} {(root / 'audio/train/podcast/B00001' / (AID1 + '.opus')).resolve()}",
        f"{AID0} {(root / 'audio/train/youtube/B00000' / (AID0 + '.opus')).resolve()}"]
    assert set(read_file(train / "utt2lang")) == {f"{u} zh" for u in read_file(train / "utt2spk")
                                                  for u in [u.split()[0]]}
    assert uses_cer("zh")
    for name, sid in [("dev", "Y0000000002_dev_S00000"), ("test_net", "Y0000000003_net_S00000"),
                      ("test_meeting", "Y0000000004_meet_S00000")]:
        assert [l.split()[0] for l in read_file(local / f"wenetspeech_{name}" / "text")] == [sid]
    assert "wenetspeech_train_m: kept=3" in r.stdout

    # The dumped dir: no segments, wav.scp into the ark, the same audio as cutting the recording.
    dumped = recipe / "data" / "wenetspeech_train_m"
    assert not (dumped / "segments").exists()
    scp = read_file(dumped / "wav.scp")
    ark = (recipe / "dump/audio/wenetspeech_train_m/audio.ark").resolve()
    assert [l.split()[1].rsplit(":", 1)[0] for l in scp] == [str(ark)] * 3
    assert read_file(dumped / "text") == read_file(train / "text")
    dd = DataDir.load(dumped)
    assert dd.utt2dur[f"{AID0}_S00000"] == pytest.approx(0.8, abs=0.002)
    src, out = AudioReader(train), AudioReader(dumped)
    for utt in dd.utts:
        a, b = src[utt], out[utt]
        assert len(a) == len(b) and np.max(np.abs(a - b)) < 1e-3
    assert len(load_audio(scp[0].split()[1])) == 24000


def test_bad_path_and_missing_recording(tmp_path, recipe):
    r = run_data_sh(recipe, [], {"WENETSPEECH": str(tmp_path)})
    assert r.returncode != 0 and "WenetSpeech.json: missing file" in r.stderr
    root = make_wenetspeech(tmp_path / "w")
    (root / "audio/dev" / "Y0000000002_dev.opus").unlink()
    r = run_data_sh(recipe, [], {"WENETSPEECH": str(root)})
    assert r.returncode != 0 and "1 recording(s) listed but absent on disk (1 segments)" in r.stderr
    assert not (recipe / "data").exists() or not any((recipe / "data").iterdir())
    # Only the dev set would lose its only segment: with --allow-missing the run still fails cleanly
    # (an empty set), but the S training set alone is fine.
    r = run_data_sh(recipe, ["--allow-missing", "true", "--eval-subsets", "TEST_NET"], {"WENETSPEECH": str(root)})
    assert r.returncode == 0, r.stderr
    assert read_file(recipe / "data" / "wenetspeech_train_s" / "utt2spk") == [
        f"{AID1}_S00000 {AID1}", f"{AID0}_S00000 {AID0}"]


def test_dump_decodes_each_recording_once(tmp_path, monkeypatch):
    import partlib.data.audio as audio
    from partlib.data.corpora.wenetspeech import dump_segments, prepare_wenetspeech

    prepare_wenetspeech(make_wenetspeech(tmp_path / "w"), tmp_path / "data", "L", eval_subsets=())
    calls = []
    real = audio.decode
    monkeypatch.setattr(audio, "decode", lambda value, key=None: calls.append(value) or real(value, key))
    n = dump_segments(tmp_path / "data" / "wenetspeech_train_l", tmp_path / "out", tmp_path / "ark")
    assert n == 4 and len(calls) == 2 and len(set(calls)) == 2
    assert sorted(p.name for p in (tmp_path / "ark").iterdir()) == ["audio.ark"]
