"""Plots, metrics.json and analysis.md from constructed representations (no model needed)."""
import json

import numpy as np
import pytest

from partlib.analysis import plots
from partlib.analysis.extract import Reps
from partlib.analysis.report import cka_pairs, compute_metrics, draw_plots, metrics_json, render_markdown
from partlib.common import ConfigError

PNG = b"\x89PNG\r\n\x1a\n"


def constructed(seed=0):
    """Two languages x 3 speakers x 10 parallel sentences; two 'models' with known structure."""
    rng = np.random.default_rng(seed)
    utts, langs, spks, sents = [], [], [], []
    for lang in ("de", "en"):
        for s in range(3):
            for k in range(10):
                utts.append(f"{lang}{s}-{k:02d}")
                langs.append(lang)
                spks.append(f"{lang}{s}")
                sents.append(f"s{k}")
    n = len(utts)
    content = {f"s{k}": rng.normal(size=16) for k in range(10)}
    offset = {"de": np.full(16, 4.0), "en": np.full(16, -4.0) + rng.normal(size=16)}
    shared = np.stack([content[s] for s in sents]) + 0.05 * rng.normal(size=(n, 16))
    separate = shared + np.stack([offset[l] for l in langs])
    reps = {
        "A": {"mel": Reps(rng.normal(size=(n, 8))), "llm:-1": Reps(separate, text=separate + 0.01)},
        "B": {"mel": Reps(rng.normal(size=(n, 8))), "llm:-1": Reps(shared, text=shared + 0.01)},
    }
    return reps, utts, langs, spks, sents


def test_compute_metrics_known_structure_and_deterministic_json():
    reps, utts, langs, spks, sents = constructed()
    m = compute_metrics(reps, utts, langs, spks, sents)
    a, b = m["models"]["A"]["llm:-1"], m["models"]["B"]["llm:-1"]
    assert a["probe"]["accuracy"] == 1.0  # language offsets: perfectly separable
    assert b["probe"]["accuracy"] < 0.8  # no language information at all
    assert a["cross_lingual_retrieval"]["mean_top1"] == 1.0  # same content after centring
    assert set(a["cross_lingual_retrieval"]["pairs"]) == {"de->en", "en->de"}
    assert a["speech_text_retrieval"]["mean_top1"] == 1.0
    assert "speech_text_retrieval" not in m["models"]["A"]["mel"]
    assert a["separability"]["silhouette"] > b["separability"]["silhouette"]
    assert np.allclose(np.diag(a["centroid_similarity"]["matrix"]), 1.0)
    assert set(m["cka"]) == {"A vs B"} and set(m["cka"]["A vs B"]) == {"mel", "llm:-1"}
    text = metrics_json(m)
    assert text == metrics_json(compute_metrics(*constructed()[:1], utts, langs, spks, sents))
    loaded = json.loads(text)
    assert list(loaded) == sorted(loaded)
    assert loaded["models"]["A"]["llm:-1"]["probe"]["speaker_disjoint"] is True


def test_compute_metrics_without_parallel_ids_skips_cross_lingual():
    reps, utts, langs, spks, sents = constructed()
    m = compute_metrics(reps, utts, langs, spks, None)
    point = m["models"]["A"]["llm:-1"]
    assert "cross_lingual_retrieval" not in point and m["parallel"] is False
    assert "not speaker-disjoint" not in render_markdown(m, {})
    one_speaker = compute_metrics(reps, utts, langs, langs, sents)  # speaker = language
    assert one_speaker["models"]["A"]["llm:-1"]["probe"]["speaker_disjoint"] is False
    assert "not speaker-disjoint" in render_markdown(one_speaker, {})
    impossible = compute_metrics(reps, utts, langs, langs, None)
    assert "single speaker" in impossible["models"]["A"]["llm:-1"]["probe"]["skipped"]
    assert "| A | `llm:-1` | – |" in render_markdown(impossible, {})
    assert point["speech_text_retrieval"]["mean_top1"] == 1.0
    assert point["probe"]["accuracy"] == 1.0


def test_cka_pairs_consecutive_and_against_first():
    assert cka_pairs(["a"]) == []
    assert cka_pairs(["a", "b", "c"]) == [("a", "b"), ("b", "c"), ("a", "c")]


def test_plots_and_markdown(tmp_path):
    reps, utts, langs, spks, sents = constructed()
    m = compute_metrics(reps, utts, langs, spks, sents)
    m["data_dirs"] = ["data/test"]
    files = draw_plots(m, reps, langs, tmp_path / "plots", projections=("pca", "tsne"))
    assert {"probe.png", "cross_lingual_retrieval.png", "speech_text_retrieval.png", "cka.png"} <= set(files["summary"])
    assert len(files["centroids"]) == 4 and len(files["retrieval"]) == 4 and len(files["projections"]) == 8
    for names in files.values():
        for f in names:
            data = (tmp_path / "plots" / f).read_bytes()
            assert data.startswith(PNG) and len(data) > 2000
    md = render_markdown(json.loads(metrics_json(m)), files)
    assert "| A | `llm:-1` | 1.000 |" in md
    for names in files.values():
        for f in names:
            assert f"(plots/{f})" in md
    assert "## Linear CKA between models" in md


def test_projection_rejects_unknown_method(tmp_path):
    with pytest.raises(ConfigError):
        plots.projection_2d(np.zeros((5, 3)), ["a"] * 5, "umap", "t", tmp_path / "x.png")
