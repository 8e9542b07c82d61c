"""Encoder CTC pretraining: tempo perturbation, dev scoring, the saved CTC head and the dev curve."""
from __future__ import annotations

import json
from pathlib import Path

import jiwer
import numpy as np
import pytest
import torch

from partlib.common import ConfigError
from partlib.data.batching import SpecAug
from partlib.data.datadir import DataDir
from partlib.features.source import FeatureSource
from partlib.train.encoder_pretrain import (EncoderPretrainConfig, change_tempo, ctc_scores, load_ctc_model,
                                            pretrain_encoder, speech_examples)
from train_fixtures import speech_data

ARCH = {"num_mel_bins": 80, "d_model": 32, "encoder_layers": 1, "encoder_attention_heads": 2,
        "encoder_ffn_dim": 64, "decoder_layers": 1, "decoder_attention_heads": 2, "decoder_ffn_dim": 32,
        "max_source_positions": 1500, "max_target_positions": 16, "vocab_size": 16}


def test_change_tempo_matches_linear_interpolation():
    feats = torch.randn(50, 3)
    for factor in (0.9, 1.1, 1.25):
        out = change_tempo(feats, factor)
        n = round(50 / factor)
        grid = np.linspace(0, 49, n)  # align_corners: first and last frames kept
        ref = np.stack([np.interp(grid, np.arange(50), feats[:, m].numpy()) for m in range(3)], 1)
        assert out.shape == (n, 3)
        np.testing.assert_allclose(out.numpy(), ref, atol=1e-5)
    assert change_tempo(feats, 1.0) is feats


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("enc")
    speech_data(root, n_train=6, n_dev=3)
    train = [root / "data" / f"train_{l}" for l in ("en", "de")]
    dev = [root / "data" / f"dev_{l}" for l in ("en", "de")]
    cfg = EncoderPretrainConfig(steps=60, lr=3e-3, warmup=5, max_frames=600, log_interval=30, dev_interval=20,
                                tempo=(0.9, 1.1), specaug=SpecAug(freq_width=4, time_width_ratio=0.05))
    scores = pretrain_encoder(ARCH, train, dev, root / "encoder", cfg)
    return root, dev, cfg, scores


def test_pretrain_saves_a_ctc_model_whose_scores_reload(pretrained):
    root, dev, cfg, scores = pretrained
    info = json.loads((root / "encoder" / "ctc_pretrain.json").read_text(encoding="utf-8"))
    assert [p["step"] for p in info["curve"]] == [20, 40, 60]
    assert info["curve"][-1]["dev_cer"] == info["dev_cer"] == round(scores["all"]["cer"], 2)
    assert info["config"]["tempo"] == [0.9, 1.1] and info["config"]["specaug"]["freq_width"] == 4
    assert set(info["dev"]) == {"en", "de", "all"} and info["dev"]["all"]["utts"] == 6
    assert all(p["cpu_s"] >= 0 for p in info["curve"])
    # The reloaded encoder + head score the dev sets exactly as at the end of training.
    model = load_ctc_model(root / "encoder")
    dirs = [DataDir.load(d) for d in dev]
    examples = speech_examples(dirs)
    again = ctc_scores(model, examples, FeatureSource(dirs, 80))
    assert again == scores
    # Independently: jiwer's character error rate per language of the reloaded greedy output.
    feats = FeatureSource(dirs, 80)
    for lang, d in zip(("en", "de"), dirs):
        utts = sorted(d.utts)
        refs, hyps = [], []
        for u in utts:
            f = feats.load([(dirs.index(d), u)])[0]
            hyps.append(model.greedy(f[None], torch.tensor([f.shape[0]]))[0])
            refs.append(d.text[u])
        ref_chars = [" ".join(r.replace(" ", "")) for r in refs]
        hyp_chars = [" ".join(h.replace(" ", "")) or "" for h in hyps]
        errors = sum(jiwer.process_words(r, h).substitutions + jiwer.process_words(r, h).deletions
                     + jiwer.process_words(r, h).insertions if h else len(r.split())
                     for r, h in zip(ref_chars, hyp_chars))
        assert scores[lang]["char_counts"]["N"] == sum(len(r.split()) for r in ref_chars)
        assert scores[lang]["cer"] == pytest.approx(100.0 * errors / sum(len(r.split()) for r in ref_chars))


def test_load_ctc_model_of_a_dir_without_head_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no CTC head"):
        load_ctc_model(tmp_path)


def test_error_breakdown_puts_encoder_llm_and_system_side_by_side(pretrained, tmp_path):
    from partlib.bin import error_breakdown
    from test_scoring_results import decode

    root, dev, _, scores = pretrained
    llm = tmp_path / "llm"
    llm.mkdir()
    (llm / "pretrain_metrics.json").write_text(json.dumps(
        {"dev": {"copy": {"acc": 0.95, "loss": 0.1, "ppl": 1.1, "tokens": 9}}, "dev_t2tt_to_en_bleu": 88.0}))
    stage = tmp_path / "exp" / "part_seed1" / "stage3_text"
    decode(stage / "decode_dev_en_asr", {"e1": "the cat sat on the mat", "e2": "a dog ran", "z1": "我爱北京",
                                         "z2": "今天下雨"})  # en: 1 of 10 words wrong
    out = tmp_path / "breakdown"
    assert error_breakdown.main(["--encoder", str(root / "encoder"), "--llm", str(llm), "--data", *map(str, dev),
                                 "--system", f"part={stage}", "--out", str(out)]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    assert res["sets"]["dev_en"]["encoder_ctc"]["cer"] == scores["en"]["cer"]
    assert res["sets"]["dev_de"]["encoder_ctc"]["wer"] == scores["de"]["wer"]
    assert res["sets"]["dev_en"]["systems"]["part"]["asr"] == pytest.approx(10.0)
    assert res["sets"]["dev_de"]["systems"]["part"] == {"asr": None, "s2tt_to_en_bleu": None}
    md = out.with_suffix(".md").read_text()
    assert f"| dev_en | WER | {scores['en']['wer']:.1f} | 10.0 | - |" in md
    assert "X→en text translation BLEU 88.0; next-token accuracy copy 95.0%" in md
