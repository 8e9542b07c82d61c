"""Gradient similarity between (task, language) groups: the cosine matrix on constructed vectors,
the per-group gradients of a tiny SpeechLLM against torch.autograd on hand-built batches, and the
analyze CLI's report."""
import json
import math

import numpy as np
import pytest
import torch

from partlib import config, tasks
from partlib.analysis import gradsim
from partlib.analysis.gradsim import Group, StageProbe, cosine_matrix, probe_set, stage_gradient_similarity, summarize
from partlib.bin import analyze
from partlib.data.batching import collate
from partlib.data.datadir import DataDir
from partlib.data.kv import write_kv
from partlib.features.source import FeatureSource
from partlib.models import card
from partlib.models.builders import tiny_model_config
from partlib.models.schema import Trainable
from partlib.models.speech_llm import SpeechLLM
from partlib.train.schedule import StageConfig, apply_stage_trainable
from train_fixtures import SENTENCES, speech_data

torch.set_num_threads(1)

FROZEN_LLM = {"encoder": "frozen", "adapter": "full", "llm": "frozen"}
# top encoder layer, adapter, LoRA on q/v of the LLM's top layer only (activation inside the stage)
LORA = {"encoder": {"top_k": 1}, "adapter": "full",
        "llm": {"lora": {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]}}}
TASKS = [{"task": "asr", "data": "train_*"}, {"task": "s2tt", "data": "train_*"},
         {"task": "t2tt", "data": "text_*", "weight": 0.1}]


def _stage(trainable, name="s", **extra) -> StageConfig:
    raw = {"name": name, "tasks": TASKS, "trainable": trainable, **extra}
    if "lora" in trainable["llm"]:
        raw.setdefault("activation", [{"step": 0, "layers": {"top": 1}}])
    return config.parse(StageConfig, raw, "test")


def _probe(stage: StageConfig) -> StageProbe:
    return StageProbe(stage.name, stage.tasks, lambda m: apply_stage_trainable(m, stage))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two parallel speech dirs (en, de; translations, utt2sent), a text-only dir, a tiny model config."""
    root = tmp_path_factory.mktemp("gradsim")
    speech_data(root, n_train=6, n_dev=2)
    for lang in ("en", "de"):
        write_kv(root / "data" / f"train_{lang}" / "utt2sent", {f"spk{lang}-{i:03d}": f"sent{i}" for i in range(6)})
    utts = [f"txt-{i:03d}" for i in range(6)]
    DataDir({u: "txt" for u in utts}, text={u: SENTENCES["de"][i] for i, u in enumerate(utts)},
            utt2lang={u: "de" for u in utts},
            translations={"en": {u: SENTENCES["en"][i] for i, u in enumerate(utts)}}).write(root / "data" / "text_de")
    dirs = [root / "data" / n for n in ("train_de", "train_en", "text_de")]
    return root, tiny_model_config(root / "models", lora=False), dirs


def _model(cfg) -> SpeechLLM:
    torch.manual_seed(0)
    return SpeechLLM.from_config(cfg)


# ------------------------------------------------------------------------------------------
# constructed cases
# ------------------------------------------------------------------------------------------
def test_identical_groups_give_one_and_disjoint_parameters_give_zero():
    v = np.random.default_rng(0).normal(size=50)
    c = cosine_matrix(np.stack([v, v, 3.0 * v]))
    np.testing.assert_allclose(c, np.ones((3, 3)), atol=1e-12)
    a, b = np.zeros(100), np.zeros(100)
    a[:40] = np.random.default_rng(1).normal(size=40)  # gradients on parameters 0..39
    b[40:] = np.random.default_rng(2).normal(size=60)  # ... and on parameters 40..99
    np.testing.assert_allclose(cosine_matrix(np.stack([a, b])), [[1.0, 0.0], [0.0, 1.0]], atol=1e-12)


def test_hand_computed_three_by_three_and_degenerate_rows(monkeypatch):
    # (1,0,0), (1,1,0), (1,1,-1): cosines 1/sqrt(2), 1/sqrt(3), 0 (by hand)
    c = cosine_matrix(np.array([[1.0, 0, 0], [1, 1, 0], [1, 1, -1]]))
    expected = np.array([[1, 0.7071067812, 0.5773502692], [0.7071067812, 1, 0.8164965809],
                         [0.5773502692, 0.8164965809, 1]])
    np.testing.assert_allclose(c, expected, atol=1e-9)
    assert np.array_equal(c, c.T)
    opposite = cosine_matrix(np.array([[1.0, 2.0], [-2.0, -4.0], [0.0, 0.0]]))
    assert opposite[0, 1] == pytest.approx(-1.0) and np.isnan(opposite[2]).all() and np.isnan(opposite[:, 2]).all()
    # the Gram product summed over slices of the parameter axis: the same matrix
    x = np.random.default_rng(3).normal(size=(4, 37))
    monkeypatch.setattr(gradsim, "_GRAM_CHUNK", 5)
    np.testing.assert_allclose(gradsim.gram(torch.from_numpy(x)), x @ x.T, rtol=1e-12)


def test_summary_means_over_kinds_of_pairs():
    groups = [Group("asr", "de", "de"), Group("asr", "en", "en"), Group("asr", "fr", "fr"),
              Group("s2tt", "de", "en")]
    m = np.array([[1.0, 0.2, 0.4, 0.9],
                  [0.2, 1.0, 0.6, 0.1],
                  [0.4, 0.6, 1.0, -0.3],
                  [0.9, 0.1, -0.3, 1.0]])
    s = summarize(groups, m)
    assert s["cross_language_by_task"] == {"asr": pytest.approx((0.2 + 0.4 + 0.6) / 3)}
    assert s["same_language_cross_task"] == pytest.approx(0.9)  # asr:de vs s2tt:de->en
    assert s["cross_language"] == pytest.approx((0.2 + 0.4 + 0.6 + 0.1 - 0.3) / 5)
    assert summarize(groups[:1], m[:1, :1])["cross_language"] is None
    assert Group("s2tt", "de", "en").label == "s2tt:de->en" and groups[0].label == "asr:de"


# ------------------------------------------------------------------------------------------
# a tiny SpeechLLM
# ------------------------------------------------------------------------------------------
def test_probe_set_groups_sample_and_parallel_sentences(setup):
    _, cfg, dirs = setup
    model = _model(cfg)
    data = [DataDir.load(d) for d in dirs]
    groups = probe_set(model, _stage(FROZEN_LLM).tasks, data, 3, seed=0)
    assert [g.label for g in groups] == ["asr:de", "asr:en", "s2tt:de->en", "s2tt:en->de", "t2tt:de->en",
                                         "t2tt:en->de"]
    assert all(len(v) == 3 for v in groups.values())
    # a speech task skips the text-only dir; the text task reads it too
    assert {data[e.dir_index].path.name for e in groups[Group("asr", "de", "de")]} == {"train_de"}
    assert {data[e.dir_index].path.name for e in groups[Group("t2tt", "de", "en")]} <= {"train_de", "text_de"}
    sents = {g: sorted(e.utt[-3:] for e in exs) for g, exs in groups.items() if g.task != "t2tt"}
    assert len(set(map(tuple, sents.values()))) == 1  # the same parallel sentences in every group
    assert probe_set(model, _stage(FROZEN_LLM).tasks, data, 3, seed=0) == groups  # deterministic
    other = probe_set(model, _stage(FROZEN_LLM).tasks, data, 3, seed=5)
    assert any(other[g] != groups[g] for g in groups)  # the seed picks the sample


def _independent(cfg, stage, examples, dirs, lora_layer=None):
    """Gradient of a group's summed loss / tokens by hand: a fresh plain model (no LoRA wrapper),
    one batch of every example, torch.autograd.grad over the parameters the stage trains, named
    as a plain model names them; returns ({part: flat vector}, loss per token)."""
    model = _model(cfg).eval()
    model.apply_trainable(Trainable(encoder=stage.trainable.encoder, adapter=stage.trainable.adapter, llm="frozen"))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if lora_layer is not None:  # the q/v projections of that layer, i.e. what LoRA adapts there
        names += [n for n, _ in model.named_parameters()
                  if f".layers.{lora_layer}." in n and n.endswith(("q_proj.weight", "v_proj.weight"))]
    params = dict(model.named_parameters())
    for n in names:
        params[n].requires_grad_(True)
    speech = tasks.get(examples[0].task).speech
    feats = FeatureSource(dirs, model.n_mels).load([(e.dir_index, e.utt) for e in examples]) if speech else None
    out = model(collate(examples, feats))
    grads = torch.autograd.grad(out["loss_sum"], [params[n] for n in names], allow_unused=True)
    parts = {}
    for n, g in zip(names, grads):  # unused: a text task does not reach the encoder or the adapter
        g = torch.zeros_like(params[n]) if g is None else g
        parts.setdefault(n.split(".")[0], []).append(g.flatten() / out["n_tokens"])
    return {k: torch.cat(v) for k, v in parts.items()}, float(out["loss_sum"].detach()) / out["n_tokens"]


def test_frozen_llm_stage_gives_adapter_gradients_only(setup):
    _, cfg, dirs = setup
    data = [DataDir.load(d) for d in dirs]
    model = _model(cfg)
    r = stage_gradient_similarity(model, _probe(_stage(FROZEN_LLM)), data, 4, batch_size=3)
    n_adapter = sum(p.numel() for p in _model(cfg).adapter.parameters())
    assert r["n_params"] == {"all": n_adapter, "adapter": n_adapter} and r["lora_layers"] is None
    # a text task reaches no adapter parameter: no gradient, no direction
    assert r["group_stats"]["t2tt:de->en"]["grad_norm"] == 0.0
    assert all(math.isnan(v) for v in r["matrix"][-1])
    assert not model.training


def test_lora_stage_gradients_match_autograd_by_hand(setup):
    _, cfg, dirs = setup
    data = [DataDir.load(d) for d in dirs]
    stage = _stage(LORA)
    model = _model(cfg)
    top = model.num_llm_layers() - 1
    r = stage_gradient_similarity(model, _probe(stage), data, 4, batch_size=3)

    # (a) exactly the parameters the stage trains: the trainer's own count for encoder and adapter,
    # and for the LLM the q/v weights of the single active LoRA layer (the top one)
    assert r["lora_layers"] == [top]
    trainer_view = _model(cfg)
    apply_stage_trainable(trainer_view, stage)
    trainable = {part: sum(p.numel() for n, p in trainer_view.named_parameters()
                           if p.requires_grad and n.startswith(part + ".") and "lora_" not in n)
                 for part in ("encoder", "adapter")}
    llm = trainer_view.llm.get_base_model()
    n_llm = sum(p.numel() for n, p in llm.named_parameters()
                if f".layers.{top}." in n and n.endswith(("q_proj.base_layer.weight", "v_proj.base_layer.weight")))
    assert 0 < n_llm < sum(p.numel() for p in llm.parameters()) and trainable["encoder"] > 0
    assert r["n_params"] == {"all": sum(trainable.values()) + n_llm, **trainable, "llm": n_llm}

    # (b) every group's gradient = autograd of its summed loss / tokens in one batch, by hand;
    # (c) the matrix = cosines of those vectors: symmetric, unit diagonal
    groups = probe_set(_model(cfg), stage.tasks, data, 4, seed=0)
    assert r["groups"] == [g.label for g in groups]
    vectors = []
    for g, exs in groups.items():
        parts, loss = _independent(cfg, stage, exs, data, lora_layer=top)
        vec = torch.cat([parts[p] for p in ("encoder", "adapter", "llm")])
        stats = r["group_stats"][g.label]
        assert stats["n_utts"] == 4 and stats["loss"] == pytest.approx(loss, rel=1e-5)
        assert stats["grad_norm"] == pytest.approx(float(vec.double().norm()), rel=1e-4)
        vectors.append(vec.double().numpy())
    v = np.stack(vectors)
    expected = (v @ v.T) / np.outer(np.linalg.norm(v, axis=1), np.linalg.norm(v, axis=1))
    m = np.array(r["matrix"])
    np.testing.assert_allclose(m, expected, atol=1e-4)
    assert np.array_equal(m, m.T) and np.all(np.diag(m) == 1.0)
    # the adapter's part alone; text groups do not reach the adapter: no direction there
    speech = [i for i, g in enumerate(groups) if tasks.get(g.task).speech]
    adapter = v[speech, trainable["encoder"]:trainable["encoder"] + trainable["adapter"]]
    by_adapter = np.array(r["matrix_by_module"]["adapter"])
    np.testing.assert_allclose(by_adapter[np.ix_(speech, speech)],
                               (adapter @ adapter.T) / np.outer(*[np.linalg.norm(adapter, axis=1)] * 2), atol=1e-4)
    assert np.isnan(by_adapter[-1]).all() and not np.isnan(m).any()
    # deterministic (eval mode: the LoRA dropout of 0.1 is off)
    again = stage_gradient_similarity(_model(cfg), _probe(stage), data, 4, batch_size=4)
    np.testing.assert_allclose(np.array(again["matrix"]), m, atol=1e-5)


@pytest.mark.slow
def test_analyze_cli_reports_gradient_similarity(setup, tmp_path):
    root, cfg, dirs = setup
    model = _model(cfg)
    model.save_pretrained(tmp_path / "s2")
    card.write(tmp_path / "s2", {"stage_config": config.to_dict(_stage(LORA, name="stage_s2"))}, model.config)
    model.save_pretrained(tmp_path / "plain")  # no info.json: no stage to probe
    argv = ["--model-dir", f"part/s2={tmp_path / 's2'}", "--model-dir", f"plain={tmp_path / 'plain'}",
            "--points", "adapter", "--projections", "", "--cache-dir", str(tmp_path / "cache"), "--gradsim-utts", "2"]
    argv += [a for d in dirs[:2] for a in ("--data-dir", str(d))]
    assert analyze.main(argv + [str(tmp_path / "out")]) == 0
    gs = json.loads((tmp_path / "out" / "metrics.json").read_text())["gradient_similarity"]
    assert set(gs) == {"part/s2", "plain"} and "skipped" in gs["plain"]
    s2 = gs["part/s2"]
    assert s2["stage"] == "stage_s2"
    assert s2["groups"] == ["asr:de", "asr:en", "s2tt:de->en", "s2tt:en->de", "t2tt:de->en", "t2tt:en->de"]
    assert s2["utts_per_group"] == 2 and set(s2["n_params"]) == {"all", "encoder", "adapter", "llm"}
    assert all(s["n_utts"] == 2 for s in s2["group_stats"].values())
    assert -1.0 <= s2["summary"]["cross_language_by_task"]["asr"] <= 1.0
    assert (tmp_path / "out" / "plots" / "gradsim_part_s2.png").stat().st_size > 2000
    md = (tmp_path / "out" / "analysis.md").read_text()
    assert "## Gradient similarity between (task, language) groups" in md
    assert "### part/s2" in md and "(plots/gradsim_part_s2.png)" in md
    assert "| asr:de | 1.000 |" in md and "asr: across languages" in md
    assert "Not computed: the model directory does not say which stage" in md
    assert analyze.main(argv + ["--gradsim-utts", "0", str(tmp_path / "off")]) == 0
    assert "gradient_similarity" not in json.loads((tmp_path / "off" / "metrics.json").read_text())
