"""Whisper log-mel features: equality with Hugging Face, batch invariance, dumping, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import WhisperFeatureExtractor
from transformers.audio_utils import mel_filter_bank

from partlib.common import ConfigError, DataError, PartError
from partlib.data.audio import AudioReader
from partlib.data.datadir import DataDir
from partlib.data.kv import read_kv
from partlib.features import (
    FeatsType,
    WhisperMel,
    check_feature_config,
    check_mel_bins,
    check_waveform,
    compute_batch,
    compute_features,
    num_frames,
    read_feats_type,
    write_feats_type,
)
from partlib.features.dump import DumpOptions, JobPaths, extract_feats
from partlib.features.whisper_mel import mel_filters
from partlib.bin import extract_feats as cli

REPO = Path(__file__).resolve().parents[1]
SR = 16000


def synth(num_samples: int, seed: int) -> np.ndarray:
    """Noise plus a tone with a slow amplitude envelope (so frames differ in level)."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / SR
    env = 0.2 + 0.8 * np.abs(np.sin(2 * np.pi * 0.7 * t))
    x = 0.3 * env * np.sin(2 * np.pi * rng.uniform(150, 3000) * t) + 0.02 * rng.standard_normal(num_samples)
    return x.astype(np.float32)


def hf_single(fe: WhisperFeatureExtractor, wav: np.ndarray) -> np.ndarray:
    """Reference: HF extractor on one utterance, padding='longest' -> (frames, bins)."""
    out = fe(wav, sampling_rate=SR, padding="longest", return_attention_mask=True, return_tensors="np")
    assert out["attention_mask"].sum() == out["input_features"].shape[-1]
    return out["input_features"][0].T


# Lengths: one window, not multiples of the hop, 0.1 s, 1 s, and a few seconds.
LENGTHS = [400, 561, 1600, 16000, 16159, 37_777, 80_001]


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filters_match_hf(n_mels):
    ref = mel_filter_bank(num_frequency_bins=201, num_mel_filters=n_mels, min_frequency=0.0,
                          max_frequency=8000.0, sampling_rate=SR, norm="slaney", mel_scale="slaney")
    np.testing.assert_allclose(mel_filters(n_mels), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_equals_hf_per_utterance(n_mels):
    fe = WhisperFeatureExtractor(feature_size=n_mels)
    mel = WhisperMel(n_mels)
    for i, length in enumerate(LENGTHS):
        wav = synth(length, seed=i)
        ref = hf_single(fe, wav)
        ours, lens = mel(torch.from_numpy(wav)[None], torch.tensor([length]))
        assert ours.shape == (1, num_frames(length), n_mels)
        assert lens.tolist() == [num_frames(length)] and ref.shape == ours.shape[1:]
        assert np.abs(ours[0].numpy() - ref).max() <= 1e-4, f"length {length}"


def test_equals_hf_numpy_path(monkeypatch):
    """The extractor's numpy path (used without torch) gives the same features."""
    import transformers.models.whisper.feature_extraction_whisper as hf_module

    monkeypatch.setattr(hf_module, "is_torch_available", lambda: False)
    fe = WhisperFeatureExtractor(feature_size=80)
    wav = synth(23_456, seed=3)
    ours = compute_features([wav], 80)[0].numpy()
    assert np.abs(ours - hf_single(fe, wav)).max() <= 1e-4


@pytest.mark.parametrize("n_mels", [80, 128])
def test_batch_invariance(n_mels):
    wavs = [synth(n, seed=10 + i) for i, n in enumerate(LENGTHS)]
    mel = WhisperMel(n_mels)
    singles = [mel(torch.from_numpy(w)[None], torch.tensor([w.size]))[0][0] for w in wavs]
    # Non-zero garbage after each utterance's end must not leak into its frames.
    batch = torch.full((len(wavs), max(LENGTHS)), 0.7)
    for i, w in enumerate(wavs):
        batch[i, : w.size] = torch.from_numpy(w)
    for order in (list(range(len(wavs))), list(reversed(range(len(wavs))))):
        feats, lens = mel(batch[order], torch.tensor(LENGTHS)[order])
        assert feats.shape == (len(wavs), max(lens), n_mels)
        for row, i in enumerate(order):
            n = num_frames(LENGTHS[i])
            assert lens[row] == n
            assert (feats[row, :n] - singles[i]).abs().max() <= 1e-6
            assert torch.all(feats[row, n:] == 0)


def test_stock_batched_extractor_is_not_batch_invariant():
    """Why the test above matters: HF on a padded batch changes the shorter utterance."""
    fe = WhisperFeatureExtractor(feature_size=80)
    short, long = synth(8_000, seed=1), 10.0 * synth(48_000, seed=2)
    batched = fe([short, long], sampling_rate=SR, padding="longest", return_tensors="np")
    hf_short = batched["input_features"][0].T[: num_frames(short.size)]
    single = hf_single(fe, short)
    assert np.abs(hf_short - single).max() > 1e-2
    ours, _ = compute_batch([short, long], 80)
    assert (ours[0, : num_frames(short.size)] - torch.from_numpy(single)).abs().max() <= 1e-4


def test_compute_features_matches_batch_and_float64_input():
    wavs = [synth(n, seed=i) for i, n in enumerate([4_000, 9_999])]
    feats = compute_features([w.astype(np.float64) for w in wavs], 80, utts=["a", "b"])
    assert [f.shape for f in feats] == [(25, 80), (62, 80)]
    assert feats[0].dtype == torch.float32 and not feats[0].requires_grad
    batched, lens = compute_batch([torch.from_numpy(w) for w in wavs], 80)
    for i, f in enumerate(feats):
        assert torch.equal(batched[i, : lens[i]], f)


@pytest.mark.parametrize(
    "wav, reason",
    [
        (np.zeros(0, np.float32), "empty audio"),
        (np.zeros(399, np.float32), "too short"),
        (np.array([0.1] * 500 + [np.nan] + [0.0] * 500, np.float32), "NaN or Inf"),
        (np.array([0.1] * 500 + [np.inf] + [0.0] * 500, np.float32), "NaN or Inf"),
        (np.zeros((2, 800), np.float32), "mono"),
    ],
)
def test_bad_input_names_the_utterance(wav, reason):
    with pytest.raises(DataError, match=reason) as err:
        compute_features([synth(1000, 0), wav], 80, utts=["good", "bad-utt"])
    assert err.value.utt == "bad-utt" and "bad-utt" in str(err.value)
    with pytest.raises(DataError, match=reason):
        check_waveform(torch.from_numpy(wav), "x")


def test_module_rejects_lengths_below_one_window():
    with pytest.raises(ValueError, match="length"):
        WhisperMel(80)(torch.zeros(1, 1000), torch.tensor([300]))


def test_check_mel_bins_and_feature_config():
    check_mel_bins(128, 128, "conf/model.yaml")
    with pytest.raises(ConfigError, match=r"dump/train: features have 80 mel bins .* num_mel_bins=128"):
        check_mel_bins(80, 128, "dump/train")
    assert check_feature_config("whisper_mel", 128) == FeatsType("whisper_mel", 128)
    with pytest.raises(ConfigError, match="num_mel_bins"):
        check_feature_config("whisper_mel", 64)
    with pytest.raises(ConfigError, match="unknown feature"):
        check_feature_config("fbank", 80)


def test_feats_type_file(tmp_path):
    write_feats_type(tmp_path, FeatsType("whisper_mel", 128))
    assert (tmp_path / "feats_type").read_text() == "whisper_mel 128\n"
    assert read_feats_type(tmp_path) == FeatsType("whisper_mel", 128)
    (tmp_path / "feats_type").write_text("whisper_mel eighty\n")
    with pytest.raises(DataError, match="feats_type"):
        read_feats_type(tmp_path)


# ------------------------------------------------------------------------------- dumping
def make_data_dir(root: Path, lengths: dict, bad: dict | None = None) -> Path:
    """A data dir of float wavs: ``lengths`` utt -> samples; ``bad`` utt -> raw samples."""
    d = root / "data"
    (root / "wav").mkdir(parents=True)
    wav_scp, utt2spk, text = {}, {}, {}
    items = {u: synth(n, seed=i) for i, (u, n) in enumerate(lengths.items())}
    items.update(bad or {})
    for utt, samples in items.items():
        path = root / "wav" / f"{utt}.wav"
        sf.write(path, samples, SR, subtype="FLOAT")
        wav_scp[utt], utt2spk[utt], text[utt] = str(path), utt.split("-")[0], "hello"
    DataDir(utt2spk, wav_scp=wav_scp, text=text).write(d)
    return d


LENS = {"a-1": 8_000, "a-2": 12_345, "b-1": 30_001, "b-2": 4_000, "c-1": 20_000}


def check_dump(src: Path, out: Path, n_mels: int = 80) -> dict:
    """Assert the dumped dir is complete and equals on-the-fly features; return feats.scp."""
    feats_scp = read_kv(out / "feats.scp")
    frames = read_kv(out / "utt2num_frames")
    assert read_feats_type(out) == FeatsType("whisper_mel", n_mels)
    data = DataDir.load(out)
    assert data.utts == sorted(feats_scp) == sorted(frames)
    reader = AudioReader(src)
    for utt, mat in kaldiio.load_scp_sequential(str(out / "feats.scp")):
        assert mat.dtype == np.float32 and mat.shape == (int(frames[utt]), n_mels)
        assert int(frames[utt]) == num_frames(reader[utt].size)
        on_the_fly = compute_features([reader[utt]], n_mels, [utt])[0].numpy()
        assert np.abs(mat - on_the_fly).max() <= 1e-6
    return feats_scp


def test_dump_two_jobs_and_resume(tmp_path):
    src = make_data_dir(tmp_path, LENS)
    out = tmp_path / "dump"
    assert cli.main(["--feature", "whisper_mel", "--nj", "2", "--batch-size", "2", str(src), str(out)]) == 0
    first = check_dump(src, out)
    assert {v.split(":")[0] for v in first.values()} == {
        str(JobPaths.of(out, FeatsType("whisper_mel", 80), j).ark) for j in (1, 2)}
    assert all((out / "log" / f"extract_feats.{j}.log").is_file() for j in (1, 2))
    job1, job2 = (JobPaths.of(out, FeatsType("whisper_mel", 80), j) for j in (1, 2))
    marker = json.loads(job1.done.read_text())
    assert marker["num_written"] + json.loads(job2.done.read_text())["num_written"] == len(LENS)

    # Crash simulation: job 2 never finished, the final feats.scp was never written.
    job2.done.unlink()
    (out / "feats.scp").unlink()
    stamp1, stamp2 = job1.ark.stat().st_mtime_ns, job2.ark.stat().st_mtime_ns
    assert cli.main(["--nj", "2", "--batch-size", "2", str(src), str(out)]) == 0
    assert job1.ark.stat().st_mtime_ns == stamp1, "finished job 1 must not be redone"
    assert job2.ark.stat().st_mtime_ns != stamp2 and job2.done.is_file()
    assert "already done" in job1.log.read_text()
    assert check_dump(src, out) == first


@pytest.mark.slow
def test_dump_with_job_runner_128_bins(tmp_path):
    src = make_data_dir(tmp_path, LENS, bad={"b-3": synth(300, 1)})
    out = tmp_path / "dump"
    runner = str(REPO / "utils" / "run.pl")
    with pytest.raises(PartError, match="b-3.*too short"):
        extract_feats(src, out, DumpOptions(FeatsType("whisper_mel", 128)), nj=2, cmd=runner)
    skip = DumpOptions(FeatsType("whisper_mel", 128), skip_bad=True)
    assert extract_feats(src, out, skip, nj=2, cmd=runner) == (len(LENS), 1)
    check_dump(src, out, n_mels=128)
    # Job 1 (a-1 a-2 b-1) finished in the failed run and is reused; job 2 holds b-3.
    log1, log2 = ((out / "log" / f"extract_feats.{j}.log").read_text() for j in (1, 2))
    assert "job 1 already done" in log1
    assert "job 2: wrote 2 utterances" in log2 and "b-3" in log2 and "skipped 1" in log2


def test_dump_redone_when_data_changes(tmp_path):
    src = make_data_dir(tmp_path, LENS)
    out = tmp_path / "dump"
    extract_feats(src, out, DumpOptions(FeatsType("whisper_mel", 80)), nj=1)
    DataDir.load(src).subset(["a-1", "b-1"]).write(src)
    assert extract_feats(src, out, DumpOptions(FeatsType("whisper_mel", 80)), nj=1) == (2, 0)
    assert sorted(check_dump(src, out)) == ["a-1", "b-1"]


def test_dump_bad_audio_errors_or_is_skipped(tmp_path):
    nan = synth(5_000, 7)
    nan[100] = np.nan
    src = make_data_dir(tmp_path, LENS, bad={"b-3": synth(300, 1), "c-2": nan})
    out = tmp_path / "dump"
    opts = DumpOptions(FeatsType("whisper_mel", 80), batch_size=3)
    with pytest.raises(DataError, match="b-3.*too short"):
        extract_feats(src, out, opts, nj=2)
    assert not (out / "feats.scp").exists()
    assert cli.main(["--nj", "2", str(src), str(out)]) == 1

    skip = DumpOptions(FeatsType("whisper_mel", 80), batch_size=3, skip_bad=True)
    assert extract_feats(src, out, skip, nj=2) == (len(LENS), 2)
    assert sorted(check_dump(src, out)) == sorted(LENS)
    assert "b-3" not in read_kv(out / "text") and "c-2" not in read_kv(out / "wav.scp")


def test_dump_sample_rate_without_resampling(tmp_path):
    src = make_data_dir(tmp_path, {"a-1": 8_000})
    sf.write(read_kv(src / "wav.scp")["a-1"], synth(4_000, 0), 8000, subtype="FLOAT")
    out = tmp_path / "dump"
    with pytest.raises(DataError, match="sample rate"):
        extract_feats(src, out, DumpOptions(FeatsType("whisper_mel", 80), resample=False))
    assert extract_feats(src, out, DumpOptions(FeatsType("whisper_mel", 80))) == (1, 0)
    assert read_kv(out / "utt2num_frames") == {"a-1": "50"}


def test_dump_rejects_bad_config(tmp_path):
    src = make_data_dir(tmp_path, LENS)
    with pytest.raises(ConfigError, match="differ"):
        extract_feats(src, src, DumpOptions(FeatsType("whisper_mel", 80)))
    with pytest.raises(ConfigError, match="batch size"):
        DumpOptions(FeatsType("whisper_mel", 80), batch_size=0)
    with pytest.raises(SystemExit):
        cli.main(["--num-mel-bins", "64", str(src), str(tmp_path / "o")])


def test_dump_with_every_utterance_bad_fails_and_writes_no_feats_scp(tmp_path):
    src = make_data_dir(tmp_path, {}, bad={"a-1": synth(300, 1), "a-2": np.zeros(0, np.float32)})
    out = tmp_path / "dump"
    with pytest.raises(DataError, match="2 of 2 utterances were skipped as bad") as e:
        extract_feats(src, out, DumpOptions(FeatsType("whisper_mel", 80), skip_bad=True))
    assert e.value.path == str(src)
    assert not (out / "feats.scp").exists() and not (out / "utt2num_frames").exists()
    assert "a-1" in (out / "log" / "extract_feats.1.log").read_text()


def test_dump_out_of_space_names_the_ark(tmp_path, monkeypatch):
    import errno

    from partlib.features import dump

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dump.kaldiio, "save_ark", full_disk)
    src = make_data_dir(tmp_path, {"a-1": 8_000})
    out = tmp_path / "dump"
    ark = JobPaths.of(out, FeatsType("whisper_mel", 80), 1).ark
    with pytest.raises(PartError) as e:
        extract_feats(src, out, DumpOptions(FeatsType("whisper_mel", 80)))
    assert str(e.value).startswith(f"cannot write {ark}: No space left on device (errno {errno.ENOSPC})")
    assert e.value.__cause__ is None and e.value.__suppress_context__
    assert not (out / "feats.scp").exists()


# ------------------------------------------------------------------- checks of feature archives
KALDI_FORMATS = {  # kaldiio's save_ark options -> the binary type token it writes
    "FM": ({}, np.float32, (7, 5)), "DM": ({}, np.float64, (7, 5)),
    "FV": ({}, np.float32, (9,)), "DV": ({}, np.float64, (9,)),
    "CM": ({"compression_method": 2}, np.float32, (30, 6)),
    "CM2": ({"compression_method": 3}, np.float32, (30, 6)),
    "CM3": ({"compression_method": 7}, np.float32, (30, 6)),
}


@pytest.mark.parametrize("token", list(KALDI_FORMATS))
def test_matrix_end_is_the_end_of_the_archive(tmp_path, token):
    """The end read from the header of the last (here: only) object of an ark is the file's size."""
    from partlib.features.source import _HEAD_BYTES, matrix_end

    options, dtype, shape = KALDI_FORMATS[token]
    ark, scp = tmp_path / "a.ark", tmp_path / "a.scp"
    kaldiio.save_ark(str(ark), {"u": np.random.default_rng(0).standard_normal(shape).astype(dtype)},
                     scp=str(scp), **options)
    offset = int(scp.read_text().split(":")[-1])
    head = ark.read_bytes()[offset: offset + _HEAD_BYTES]
    assert head[2:].startswith(token.encode() + b" ")
    assert matrix_end(head, offset) == ark.stat().st_size
    assert matrix_end(b"[ 1 2 3 ]\n", 0) is None  # text matrices are not checked


def feats_dir(root: Path) -> Path:
    """A data dir of three utterances whose features (10, 20, 30 frames of 80 bins) are in one ark."""
    root.mkdir()
    mats = {f"a-{i}": np.full((10 * i, 80), i, np.float32) for i in (1, 2, 3)}
    kaldiio.save_ark(str(root / "feats.ark"), mats, scp=str(root / "raw.scp"))
    scp = dict(line.split(maxsplit=1) for line in (root / "raw.scp").read_text().splitlines())
    DataDir({u: "a" for u in mats}, feats_scp=scp, text={u: "x" for u in mats}).write(root / "data")
    return root / "data"


def _scp_offset(value: str) -> int:
    return int(value.rsplit(":", 1)[1])


@pytest.mark.parametrize("fault, line, utt, message", [
    ("missing", 1, "a-1", "feature archive {ark} does not exist"),
    ("past_end", 3, "a-3", "offset 99999 is past the end of {ark} ({size} bytes)"),
    ("truncated", 3, "a-3", "{ark} is truncated: the matrix at offset {last} needs {size} bytes, the file has {cut}"),
    ("header_cut", 3, "a-3", "{ark} is truncated: the matrix at offset {last} needs {header} bytes, the file has {cut}"),
])
def test_archive_faults_are_named_when_the_source_is_made(tmp_path, fault, line, utt, message):
    from partlib.features.source import FeatureSource

    data = feats_dir(tmp_path / "d")
    scp = read_kv(data / "feats.scp")
    ark = tmp_path / "d" / "feats.ark"
    size, last = ark.stat().st_size, _scp_offset(scp["a-3"])
    header = last + 15  # "\0B" "FM " "\4" rows "\4" cols
    cut = {"truncated": size - 1, "header_cut": last + 8}.get(fault)
    if fault == "missing":
        ark.unlink()
    elif fault == "past_end":
        scp["a-3"] = f"{ark}:99999"
        (data / "feats.scp").write_text("".join(f"{u} {v}\n" for u, v in scp.items()))
    else:
        with open(ark, "r+b") as f:
            f.truncate(cut)
    with pytest.raises(DataError) as e:
        FeatureSource([DataDir.load(data)], 80)
    assert (e.value.path, e.value.line, e.value.utt) == (str(data / "feats.scp"), line, utt)
    assert e.value.reason.startswith(message.format(ark=ark, size=size, last=last, cut=cut, header=header))


def test_archive_check_reads_one_header_per_ark(tmp_path, monkeypatch):
    """A healthy dir passes, with one header read per ark (not per utterance); features load unchanged."""
    import builtins

    from partlib.features import source

    data = feats_dir(tmp_path / "d")
    opened = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: opened.append(str(f)) or real_open(f, *a, **k))
    src = source.FeatureSource([DataDir.load(data)], 80)
    assert opened.count(str(tmp_path / "d" / "feats.ark")) == 1
    monkeypatch.undo()
    assert [f[0, 0].item() for f in src.load([(0, "a-2"), (0, "a-1")])] == [2.0, 1.0]


def test_unreadable_matrix_in_the_middle_is_named_at_batch_time(tmp_path):
    from partlib.features.source import FeatureSource

    data = feats_dir(tmp_path / "d")
    ark = tmp_path / "d" / "feats.ark"
    value = read_kv(data / "feats.scp")["a-2"]
    with open(ark, "r+b") as f:  # the type token of the middle matrix
        f.seek(_scp_offset(value) + 2)
        f.write(b"XM")
    src = FeatureSource([DataDir.load(data)], 80)  # only the last matrix is checked up front
    assert src.load([(0, "a-3")])[0].shape == (30, 80)
    with pytest.raises(DataError, match=f"cannot read the features at {value}") as e:
        src.load([(0, "a-2")])
    assert (e.value.path, e.value.line, e.value.utt) == (str(data / "feats.scp"), 2, "a-2")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_equals_cpu():
    wavs = [synth(n, seed=i) for i, n in enumerate(LENGTHS)]
    cpu, lens = compute_batch(wavs, 128)
    gpu, glens = compute_batch(wavs, 128, device="cuda")
    assert torch.equal(lens, glens.cpu())
    assert (gpu.cpu() - cpu).abs().max() <= 1e-4
