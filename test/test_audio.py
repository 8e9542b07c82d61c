"""partlib.data.audio: every wav.scp form, segments, mono, resampling, utt2dur, bad input."""
from __future__ import annotations

import shutil
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf

from partlib.common import DataError
from partlib.data import audio
from partlib.data.audio import AudioReader, compute_utt2dur, load_audio, write_utt2dur
from partlib.data.datadir import DataDir


def tone(seconds: float, sr: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_wav(path: Path, data: np.ndarray, sr: int, **kw) -> Path:
    sf.write(str(path), data, sr, **kw)
    return path


@pytest.fixture
def wav16k(tmp_path: Path) -> Path:
    return write_wav(tmp_path / "a.wav", tone(1.0, 16000), 16000, subtype="PCM_16")


# ---------------------------------------------------------------- value forms


def test_plain_path_16k_is_returned_unchanged(wav16k: Path) -> None:
    x = load_audio(str(wav16k))
    ref, _ = sf.read(str(wav16k), dtype="float32")
    assert x.dtype == np.float32 and x.shape == (16000,)
    np.testing.assert_array_equal(x, ref)


@pytest.mark.parametrize(
    "fmt,subtype,tol",
    [("FLAC", "PCM_16", 1e-4), ("OGG", "VORBIS", 0.1), ("OGG", "OPUS", 0.1), ("MP3", "MPEG_LAYER_III", 0.1)],
)
def test_compressed_formats_decode(tmp_path: Path, fmt: str, subtype: str, tol: float) -> None:
    sr = 48000 if subtype == "OPUS" else 16000
    path = write_wav(tmp_path / f"a.{fmt.lower()}", tone(1.0, sr), sr, format=fmt, subtype=subtype)
    x = load_audio(str(path))
    # Lossy codecs add or trim a few ms of padding; the length must be about one second.
    assert abs(len(x) - 16000) < 0.06 * 16000
    assert x.dtype == np.float32
    rms = float(np.sqrt(np.mean(x[2000:14000] ** 2)))
    assert abs(rms - 0.5 / np.sqrt(2)) < tol


def test_pipe_command(wav16k: Path) -> None:
    x = load_audio(f"cat {wav16k} |")
    np.testing.assert_array_equal(x, load_audio(str(wav16k)))


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox not installed")
def test_pipe_through_sox_streaming_header(wav16k: Path) -> None:
    # sox writing to a pipe cannot seek back to fix the RIFF sizes: the header says "unknown".
    x = load_audio(f"sox {wav16k} -t wav - |")
    assert len(x) == 16000


def test_kaldi_ark_entry(tmp_path: Path) -> None:
    pcm = (tone(0.5, 8000) * 32767).astype(np.int16)
    kaldiio.save_ark(str(tmp_path / "w.ark"), {"u1": (8000, pcm)}, scp=str(tmp_path / "w.scp"))
    value = (tmp_path / "w.scp").read_text().split()[1]
    x = load_audio(value, resample=False, sr=8000)
    np.testing.assert_allclose(x, pcm / 32768.0, atol=1e-7)
    assert len(load_audio(value)) == 8000  # resampled to 16 kHz


# ---------------------------------------------------------------- signal processing


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
def test_resampling_to_16k_keeps_duration_and_pitch(tmp_path: Path, sr: int) -> None:
    path = write_wav(tmp_path / "a.wav", tone(1.0, sr, freq=1000.0), sr, subtype="FLOAT")
    x = load_audio(str(path))
    assert len(x) == 16000
    spectrum = np.abs(np.fft.rfft(x))
    assert abs(int(np.argmax(spectrum)) - 1000) <= 1  # bin = Hz for a 1 s signal


def test_resample_false_rejects_other_rate(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "a.wav", tone(0.2, 8000), 8000)
    with pytest.raises(DataError, match=r"8000 Hz, expected 16000 Hz") as e:
        load_audio(str(path), resample=False, key="utt1")
    assert e.value.utt == "utt1" and e.value.path == str(path)


def test_stereo_is_mixed_to_mono(tmp_path: Path) -> None:
    left, right = tone(0.5, 16000, amp=0.6), tone(0.5, 16000, freq=300.0, amp=0.2)
    path = write_wav(tmp_path / "s.wav", np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    x = load_audio(str(path))
    assert x.ndim == 1
    np.testing.assert_allclose(x, (left + right) / 2, atol=1e-6)


def test_output_is_clipped_to_unit_range(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "loud.wav", tone(0.5, 16000, amp=1.5), 16000, subtype="FLOAT")
    x = load_audio(str(path))
    assert x.max() == 1.0 and x.min() == -1.0


def test_cut_start_end(wav16k: Path) -> None:
    full = load_audio(str(wav16k))
    np.testing.assert_array_equal(load_audio(str(wav16k), start=0.25, end=0.5), full[4000:8000])
    np.testing.assert_array_equal(load_audio(str(wav16k), start=0.5), full[8000:])


def test_segment_end_within_tolerance_is_clipped(wav16k: Path) -> None:
    x = load_audio(str(wav16k), start=0.5, end=1.0 + audio.SEGMENT_TOLERANCE_S / 2)
    assert len(x) == 8000


# ---------------------------------------------------------------- bad input: named errors


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.wav"
    with pytest.raises(DataError, match="audio file not found") as e:
        load_audio(str(missing), key="spk1-utt1")
    assert "spk1-utt1" in str(e.value) and str(missing) in str(e.value)


def test_undecodable_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(DataError, match="cannot decode audio") as e:
        load_audio(str(bad), key="u7")
    assert "u7" in str(e.value) and str(bad) in str(e.value)


def test_pipe_failure_names_key_and_stderr(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        load_audio(f"cat {tmp_path}/missing.wav |", key="u3")
    msg = str(e.value)
    assert "u3" in msg and "exited with code 1" in msg
    assert "No such file or directory" in msg  # cat's own stderr


def test_pipe_failure_in_first_stage_is_caught(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="exited with code"):
        load_audio(f"cat {tmp_path}/missing.wav | cat |", key="u3")


def test_pipe_writing_nothing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="empty audio") as e:
        load_audio("true |", key="u4")
    assert "u4" in str(e.value)


def test_pipe_writing_garbage() -> None:
    with pytest.raises(DataError, match="cannot decode the audio written by command 'echo hello'"):
        load_audio("echo hello |", key="u5")


def test_empty_audio(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(DataError, match="empty audio") as e:
        load_audio(str(path), key="u6")
    assert e.value.utt == "u6" and e.value.path == str(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path: Path, bad: float) -> None:
    data = tone(0.1, 16000)
    data[10] = bad
    path = write_wav(tmp_path / "nan.wav", data, 16000, subtype="FLOAT")
    with pytest.raises(DataError, match="NaN or Inf") as e:
        load_audio(str(path), key="u8")
    assert e.value.utt == "u8" and e.value.path == str(path)


def test_segment_beyond_recording(wav16k: Path) -> None:
    with pytest.raises(DataError, match=r"outside the recording \(1.000 s long\)") as e:
        load_audio(str(wav16k), start=0.5, end=1.0 + audio.SEGMENT_TOLERANCE_S + 0.1, key="seg1")
    assert e.value.utt == "seg1" and e.value.path == str(wav16k)
    with pytest.raises(DataError, match="outside the recording"):
        load_audio(str(wav16k), start=1.0, end=1.01, key="seg2")


def test_segment_end_before_start(wav16k: Path) -> None:
    with pytest.raises(DataError, match="start < end"):
        load_audio(str(wav16k), start=0.5, end=0.4, key="seg3")


def test_missing_ark_and_matrix_entry(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="audio archive not found") as e:
        load_audio(f"{tmp_path}/none.ark:12", key="u9")
    assert e.value.utt == "u9"
    kaldiio.save_ark(str(tmp_path / "f.ark"), {"u": np.zeros((3, 4), np.float32)}, scp=str(tmp_path / "f.scp"))
    with pytest.raises(DataError, match="is a matrix, not a wave"):
        load_audio((tmp_path / "f.scp").read_text().split()[1], key="u")


def test_file_name_with_colon_and_digits_is_a_path(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "take:12", tone(0.1, 16000), 16000, format="WAV")
    assert len(load_audio(str(path))) == 1600


# ---------------------------------------------------------------- data dirs


def make_segmented_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    write_wav(tmp_path / "rec1.wav", tone(3.0, 8000), 8000)
    write_wav(tmp_path / "rec2.wav", tone(1.0, 16000), 16000)
    (d / "wav.scp").write_text(f"rec1 {tmp_path}/rec1.wav\nrec2 cat {tmp_path}/rec2.wav |\n")
    (d / "segments").write_text(
        "rec1-a rec1 0.00 1.00\nrec1-b rec1 1.00 2.50\nrec1-c rec1 2.50 3.02\nrec2-a rec2 0.10 0.60\n"
    )
    return d


def test_audio_reader_segments(tmp_path: Path) -> None:
    d = make_segmented_dir(tmp_path)
    reader = AudioReader(d)
    assert list(reader) == ["rec1-a", "rec1-b", "rec1-c", "rec2-a"] and len(reader) == 4
    assert "rec1-b" in reader and "rec1" not in reader
    assert [len(reader[u]) for u in reader] == [16000, 24000, 8000, 8000]
    # Identical to loading the segment directly.
    np.testing.assert_array_equal(
        reader["rec1-b"], load_audio(f"{tmp_path}/rec1.wav", start=1.0, end=2.5, key="rec1-b")
    )
    with pytest.raises(KeyError):
        reader["nope"]


def test_audio_reader_decodes_a_recording_once(tmp_path: Path, monkeypatch) -> None:
    d = make_segmented_dir(tmp_path)
    calls = []
    real = audio.decode
    monkeypatch.setattr(audio, "decode", lambda v, k=None: calls.append(v) or real(v, k))
    reader = AudioReader(d)
    for utt in reader:
        reader[utt]
    assert len(calls) == 2


def test_audio_reader_without_segments(tmp_path: Path, wav16k: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "wav.scp").write_text(f"u1 {wav16k}\n")
    assert len(AudioReader(d)["u1"]) == 16000


def test_audio_reader_on_in_memory_datadir_missing_recording(wav16k: Path) -> None:
    dd = DataDir({"s1": "s1", "s2": "s2"}, wav_scp={"u1": str(wav16k)},
                 segments={"s1": ("u1", 0.0, 0.5), "s2": ("u2", 0.0, 0.5)})
    reader = AudioReader(dd, sr=8000)
    assert len(reader["s1"]) == 4000
    with pytest.raises(DataError, match="recording 'u2' is not in wav.scp") as e:
        reader["s2"]
    assert e.value.utt == "s2"


def test_audio_reader_segment_outside_names_utt_and_file(tmp_path: Path) -> None:
    d = make_segmented_dir(tmp_path)
    with open(d / "segments", "a") as f:
        f.write(f"rec2-z rec2 0.5 {1.0 + audio.SEGMENT_TOLERANCE_S + 0.1}\n")
    with pytest.raises(DataError, match="outside the recording") as e:
        AudioReader(d)["rec2-z"]
    assert e.value.utt == "rec2-z"


def test_bad_segments_line(tmp_path: Path) -> None:
    d = make_segmented_dir(tmp_path)
    (d / "segments").write_text("rec1-a rec1 0.0 1.0\nrec2-b rec2 x 2.0\n")
    with pytest.raises(DataError) as e:
        AudioReader(d)
    assert e.value.line == 2 and e.value.utt == "rec2-b"


def test_compute_and_write_utt2dur(tmp_path: Path) -> None:
    d = make_segmented_dir(tmp_path)
    durs = compute_utt2dur(d)
    assert durs == pytest.approx({"rec1-a": 1.0, "rec1-b": 1.5, "rec1-c": 0.52, "rec2-a": 0.5})
    out = write_utt2dur(d)
    assert out.read_text() == "rec1-a 1\nrec1-b 1.5\nrec1-c 0.52\nrec2-a 0.5\n"

    plain = tmp_path / "plain"
    plain.mkdir()
    pcm = (tone(0.25, 8000) * 32767).astype(np.int16)
    kaldiio.save_ark(str(tmp_path / "w.ark"), {"c": (8000, pcm)}, scp=str(tmp_path / "w.scp"))
    ark_value = (tmp_path / "w.scp").read_text().split()[1]
    (plain / "wav.scp").write_text(
        f"a {tmp_path}/rec1.wav\nb cat {tmp_path}/rec2.wav |\nc {ark_value}\n"
    )
    assert compute_utt2dur(plain) == pytest.approx({"a": 3.0, "b": 1.0, "c": 0.25})


def test_utt2dur_names_missing_file(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "wav.scp").write_text(f"u1 {tmp_path}/gone.wav\n")
    with pytest.raises(DataError, match="audio file not found") as e:
        compute_utt2dur(d)
    assert e.value.utt == "u1" and e.value.path == f"{tmp_path}/gone.wav"


def test_compute_reco2dur_reads_headers_of_files(tmp_path: Path, monkeypatch) -> None:
    d = make_segmented_dir(tmp_path)
    assert audio.compute_reco2dur(d) == pytest.approx({"rec1": 3.0, "rec2": 1.0})
    (d / "wav.scp").write_text(f"rec1 {tmp_path}/rec1.wav\nrec2 {tmp_path}/rec2.wav\n")
    monkeypatch.setattr(audio, "decode", lambda *a, **k: pytest.fail("a file with a header was decoded"))
    assert audio.compute_reco2dur(d) == pytest.approx({"rec1": 3.0, "rec2": 1.0})


@pytest.mark.parametrize("end, ok", [(3.0 + audio.SEGMENT_TOLERANCE_S - 0.01, True), (4.5, False)])
def test_filter_data_checks_segments_against_the_recordings(tmp_path: Path, end: float, ok: bool) -> None:
    """A segment may end up to SEGMENT_TOLERANCE_S (Kaldi's --max-overshoot, 0.5 s) after its 3 s
    recording; further is an error naming the segments line, utterance, recording and durations, and
    the earlier DST stays as it was."""
    from partlib.bin.filter_data import filter_data_dir

    d = make_segmented_dir(tmp_path)
    (d / "segments").write_text(f"rec1-a rec1 0.00 1.00\nrec1-b rec1 1.00 {end}\nrec2-a rec2 0.10 0.60\n")
    for name, content in (("text", "rec1-a a\nrec1-b b\nrec2-a c\n"), ("utt2spk", "rec1-a rec1\nrec1-b rec1\nrec2-a rec2\n"),
                          ("spk2utt", "rec1 rec1-a rec1-b\nrec2 rec2-a\n")):
        (d / name).write_text(content)
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "text").write_text("earlier x\n")
    if ok:
        assert filter_data_dir(str(d), str(dst), 0.1, 30.0, 400)["kept"] == 3
        assert read_kv_float(dst / "reco2dur") == pytest.approx({"rec1": 3.0, "rec2": 1.0})
        return
    with pytest.raises(DataError) as e:
        filter_data_dir(str(d), str(dst), 0.1, 30.0, 400)
    assert (e.value.path, e.value.line, e.value.utt) == (str(d / "segments"), 2, "rec1-b")
    assert e.value.reason == ("segment [1, 4.5] s (3.5 s) ends 1.5 s after the end of recording 'rec1' "
                              "(3 s long; up to 0.5 s is tolerated)")
    assert sorted(p.name for p in dst.iterdir()) == ["text"] and (dst / "text").read_text() == "earlier x\n"


def read_kv_float(path: Path) -> dict:
    return {k: float(v) for k, v in (line.split() for line in path.read_text().splitlines())}
