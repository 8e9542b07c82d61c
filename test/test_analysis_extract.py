"""Extraction of pooled representations from a tiny SpeechLLM, caching, and the analyze CLI."""
import json

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch

from partlib.analysis.extract import Extractor, Point, load_utterances, masked_mean, parse_points
from partlib.bin import analyze
from partlib.common import ConfigError, DataError
from partlib.data.datadir import DataDir
from partlib.data.kv import write_kv
from partlib.features.whisper_mel import WhisperMel
from partlib.models.builders import tiny_model_config
from partlib.models.speech_llm import SpeechLLM

TEXTS = {"de": ["hallo welt", "guten morgen", "danke schön"], "en": ["hello world", "good morning", "thank you"]}


def make_data_dir(path, audio=False, seed=0):
    """2 languages x 2 speakers x 3 parallel sentences; feats.scp (random) or wav.scp (tones)."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    utt2spk, utt2lang, utt2sent, text, feats, wavs = {}, {}, {}, {}, {}, {}
    for lang in ("de", "en"):
        for s in range(2):
            for k in range(3):
                utt = f"{lang}{s}-s{k}"
                utt2spk[utt], utt2lang[utt], utt2sent[utt] = f"{lang}{s}", lang, f"s{k}"
                text[utt] = TEXTS[lang][k]
                n = int(rng.integers(30, 90))
                if audio:
                    t = np.arange(n * 160) / 16000
                    wav = (0.3 * np.sin(2 * np.pi * (200 + 50 * k) * t)).astype(np.float32)
                    sf.write(path / f"{utt}.wav", wav, 16000)
                    wavs[utt] = str(path / f"{utt}.wav")
                else:
                    feats[utt] = rng.normal(size=(n, 80)).astype(np.float32)
    frames = {u: len(m) for u, m in feats.items()} or None  # batches are sorted by length
    DataDir(utt2spk, text=text, utt2lang=utt2lang, wav_scp=wavs if audio else None,
            utt2num_frames=frames).write(path)
    write_kv(path / "utt2sent", utt2sent)
    if not audio:
        kaldiio.save_ark(str(path / "feats.ark"), feats, scp=str(path / "feats.scp"))
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    work = tmp_path_factory.mktemp("tiny")
    model = SpeechLLM.from_config(tiny_model_config(work / "build", lora=False))
    model.save_pretrained(work / "model")
    return work / "model"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("data") / "test")


def test_points_parse():
    assert parse_points("mel, encoder,llm:-1,mel") == [Point("mel"), Point("encoder"), Point("llm", -1)]
    assert str(Point.parse("llm:3")) == "llm:3" and Point("llm", -1).slug == "llm_m1"
    for bad in ("llm", "llm:x", "mel:1", "decoder", ""):
        with pytest.raises(ConfigError):
            parse_points(bad)


def test_masked_mean_ignores_padding():
    h = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [-50.0], [-50.0]]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert masked_mean(h, mask).flatten().tolist() == [2.0, 2.0]


def test_load_utterances_subset_keeps_whole_sentences(data_dir, tmp_path):
    full = load_utterances(data_dir)
    assert len(full.utts) == 12 and full.sentences is not None and full.texts[0] == "hallo welt"
    sub = load_utterances(data_dir, max_utts=4)
    assert len(sub.utts) == 4 and len(set(sub.sentences)) == 1  # the 4 recordings of one sentence
    DataDir({"a-1": "a"}, wav_scp={"a-1": "a.wav"}).write(tmp_path / "bad")
    with pytest.raises(DataError, match="utt2lang"):
        load_utterances(tmp_path / "bad")


def test_extract_shapes_masks_splice_and_cache(model_dir, data_dir, tmp_path):
    points = parse_points("mel,encoder,adapter,llm:0,llm:-1")
    data = load_utterances(data_dir)
    one = Extractor(model_dir, tmp_path / "c1", batch_size=1).extract(data, points)
    many = Extractor(model_dir, tmp_path / "c2", batch_size=5).extract(data, points)
    for p in points:
        assert one[p].speech.shape == (12, 80 if p.kind == "mel" else 32)
        # padded batches give the utterance's own vector: padding is masked everywhere
        np.testing.assert_allclose(one[p].speech, many[p].speech, atol=1e-4)
        assert (one[p].text is not None) == (p.kind == "llm")
    np.testing.assert_allclose(one[Point("llm", -1)].text, many[Point("llm", -1)].text, atol=1e-4)
    feats = kaldiio.load_scp(str(data_dir / "feats.scp"))
    assert data.lengths is not None and data.lengths != sorted(data.lengths)  # rows come back in utt order
    want = np.stack([feats[u].mean(axis=0) for u in data.utts])
    np.testing.assert_allclose(many[Point("mel")].speech, want, atol=1e-5)
    # hidden state 0 at the speech positions is the spliced adapter output itself
    np.testing.assert_allclose(one[Point("llm", 0)].speech, one[Point("adapter")].speech, atol=1e-5)
    assert not np.allclose(one[Point("llm", -1)].speech, one[Point("adapter")].speech)
    # cached: a new extractor reads the files without loading the model
    again = Extractor(model_dir, tmp_path / "c1")
    cached = again.extract(data, points[:2])
    assert again._model is None
    np.testing.assert_array_equal(cached[Point("mel")].speech, one[Point("mel")].speech)
    assert len(list((tmp_path / "c1").glob("*.npz"))) == len(points)
    with pytest.raises(ConfigError, match="hidden states"):
        Extractor(model_dir, tmp_path / "c3").extract(data, [Point("llm", 9)])


def test_extract_from_audio_computes_whisper_mel(model_dir, tmp_path):
    d = make_data_dir(tmp_path / "wavs", audio=True)
    data = load_utterances(d)
    reps = Extractor(model_dir, tmp_path / "c").extract(data, [Point("mel"), Point("adapter")])
    wav, _ = sf.read(d / f"{data.utts[0]}.wav", dtype="float32")
    mel, _ = WhisperMel(80)(torch.from_numpy(wav)[None], torch.tensor([len(wav)]))
    np.testing.assert_allclose(reps[Point("mel")].speech[0], mel[0].mean(0).numpy(), atol=1e-5)
    assert reps[Point("adapter")].speech.shape == (12, 32)


@pytest.mark.slow
def test_cli_end_to_end_deterministic(model_dir, data_dir, tmp_path):
    out = tmp_path / "out"
    argv = ["--model-dir", f"A={model_dir}", "--model-dir", f"B={model_dir}", "--data-dir", str(data_dir),
            "--points", "adapter,llm:-1", "--projections", "pca", "--n-folds", "2", str(out)]
    assert analyze.main(argv) == 0
    first = (out / "metrics.json").read_bytes()
    m = json.loads(first)
    assert list(m["models"]["A"]) == ["adapter", "llm:-1", "mel"]
    assert m["cka"]["A vs B"] == {"adapter": 1.0, "llm:-1": 1.0, "mel": 1.0}  # the same model twice
    llm = m["models"]["A"]["llm:-1"]
    assert set(llm) >= {"probe", "cross_lingual_retrieval", "speech_text_retrieval", "centroid_similarity"}
    assert 0.0 <= llm["probe"]["accuracy"] <= 1.0 and llm["probe"]["speaker_disjoint"] is True
    md = (out / "analysis.md").read_text()
    assert "(plots/probe.png)" in md and (out / "plots" / "probe.png").stat().st_size > 2000
    assert analyze.main(argv) == 0  # re-run from the cache: byte-identical
    assert (out / "metrics.json").read_bytes() == first
    assert analyze.main(["--model-dir", "A=" + str(model_dir), "--data-dir", str(data_dir),
                         "--points", "llm:x", str(out)]) == 1
