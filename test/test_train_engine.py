"""The PART trainer on a tiny model: trainable parameters, loss, exact resume, multi-process
equivalence, config errors, export + decoding."""
import copy
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from partlib.common import ConfigError
from partlib.data.datadir import DataDir
from partlib.train.schedule import parse_schedule
from partlib.train.trainer import Trainer
from train_fixtures import SENTENCES, speech_data, train_cmd as _train_cmd, wait_for_checkpoint, weights as _weights

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from partlib.models.builders import tiny_model_config

    root = tmp_path_factory.mktemp("train")
    speech_data(root, n_train=6, n_dev=3)
    utts = [f"txt-{i:03d}" for i in range(6)]
    DataDir({u: "txt" for u in utts}, text={u: SENTENCES["de"][i] for i, u in enumerate(utts)},
            utt2lang={u: "de" for u in utts},
            translations={"en": {u: SENTENCES["en"][i] for i, u in enumerate(utts)}}).write(root / "data" / "text_train")
    cfg = tiny_model_config(root / "models", lora=False)
    (root / "model.yaml").write_text(yaml.safe_dump(cfg))
    return root, cfg


def _schedule(**stage):
    base = {"name": "s1", "max_steps": 4, "log_interval": 1, "save_interval": 2,
            "optim": {"lr": 3e-3}, "scheduler": {"type": "constant"},
            "batch": {"max_frames": 400, "max_tokens": 2000},
            "tasks": [{"task": "asr", "data": ["train_*"]}, {"task": "s2tt", "data": ["train_*"]}],
            "trainable": {"encoder": "full", "adapter": "full", "llm": "frozen"}}
    base.update(stage)
    return {"seed": 1, "stages": [base]}


def _run(root, cfg, sched, name, **kw):
    t = Trainer(parse_schedule(sched), cfg, root / "exp" / name, data_root=str(root / "data"),
                tensorboard=False, **kw)
    return t.run()


def test_only_configured_parameters_change(setup):
    root, cfg = setup
    sched = _schedule(max_steps=3, trainable={
        "encoder": {"top_k": 1}, "adapter": "frozen",
        "llm": {"lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"],
                         "layers": "all"}}},
        activation=[{"step": 0, "layers": [3]}])
    # The same run at learning rate 0 exports the initial weights (the trainer seeds the init).
    frozen = copy.deepcopy(sched)
    frozen["stages"][0]["optim"] = {"lr": 0.0}
    before = _weights(_run(root, cfg, frozen, "trainable_lr0")[0])
    after = _weights(_run(root, cfg, sched, "trainable")[0])
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "nothing was trained"
    for k in changed:
        ok = (k.startswith("encoder.whisper.layers.1.") or k.startswith("encoder.whisper.layer_norm.")
              or (k.startswith("llm.model.layers.3.self_attn.") and ("q_proj.weight" in k or "v_proj.weight" in k)))
        assert ok, f"{k} changed but is not trainable"
    assert any(k.startswith("llm.model.layers.3.self_attn.q_proj") for k in changed)
    assert any(k.startswith("encoder.whisper.layers.1.") for k in changed)


def test_loss_falls_and_dev_eval(setup, caplog):
    root, cfg = setup
    sched = _schedule(max_steps=30, log_interval=30, save_interval=30,
                      dev={"data": ["dev_*"], "interval": 15, "metric": "loss", "max_utts": 6})
    caplog.set_level("INFO")
    out = _run(root, cfg, sched, "loss")
    losses = [float(re.search(r"\bloss ([0-9.]+)", r.getMessage()).group(1))
              for r in caplog.records if ": dev " in r.getMessage()]
    assert len(losses) == 2 and losses[1] < losses[0]
    best = json.loads((root / "exp" / "loss" / "s1" / "checkpoints" / "best.json").read_text())
    assert [step for _, step in best] == [30, 15]  # [metric, step], the lower dev loss first
    assert [loss for loss, _ in best] == pytest.approx([losses[1], losses[0]], rel=1e-3)  # as logged: 4 digits
    assert (out[0] / "done").is_file() and (out[0] / "info.json").is_file()


def test_config_errors_before_any_step(setup):
    root, cfg = setup
    with pytest.raises(ConfigError, match="out of range"):
        _run(root, cfg, _schedule(trainable={"encoder": "full", "adapter": "full", "llm": {"lora": {"r": 2}}},
                                  activation=[{"step": 0, "layers": [7]}]), "bad1")
    with pytest.raises(ConfigError, match="no text.fr"):
        _run(root, cfg, _schedule(tasks=[{"task": "s2tt", "data": ["train_*"], "tgt_langs": ["fr"]}]), "bad2")
    with pytest.raises(ConfigError, match="smaller than the longest"):
        _run(root, cfg, _schedule(batch={"max_frames": 50, "max_tokens": 2000}), "bad3")
    with pytest.raises(ConfigError, match="needs speech"):
        _run(root, cfg, _schedule(tasks=[{"task": "asr", "data": ["text_*"]}]), "bad4")
    for name in ("bad1", "bad2", "bad3", "bad4"):  # no checkpoint was written
        assert not list((root / "exp" / name).glob("*/checkpoints/ckpt-*.pt"))


def test_text_tasks_and_multistage(setup):
    root, cfg = setup
    sched = _schedule(max_steps=2)
    sched["stages"].append({
        "name": "s2", "init_from": "previous", "max_steps": 2, "save_interval": 1,
        "batch": {"max_frames": 400, "max_tokens": 2000},
        "tasks": [{"task": "t2tt", "data": ["text_*"]}, {"task": "lm", "data": ["text_*"]},
                  {"task": "asr", "data": ["train_*"]}],
        "trainable": {"encoder": "frozen", "adapter": "full",
                      "llm": {"lora": {"r": 2, "alpha": 4, "dropout": 0.0, "layers": "all"}}}})
    out = _run(root, cfg, sched, "multi")
    assert [p.parent.name for p in out] == ["s1", "s2"]
    w1, w2 = _weights(out[0]), _weights(out[1])
    assert all(torch.equal(w1[k], w2[k]) for k in w1 if k.startswith("encoder."))  # frozen in s2
    assert any(not torch.equal(w1[k], w2[k]) for k in w1 if k.startswith("llm."))  # LoRA merged
    # a finished schedule is skipped on re-run
    mtime = (out[1] / "done").stat().st_mtime
    _run(root, cfg, sched, "multi")
    assert (out[1] / "done").stat().st_mtime == mtime


@pytest.mark.slow
def test_exact_resume_after_kill(setup):
    root, _ = setup
    sched = _schedule(max_steps=12, save_interval=1, log_interval=1,
                      trainable={"encoder": "full", "adapter": "full",
                                 "llm": {"lora": {"r": 2, "alpha": 4, "dropout": 0.0, "layers": "all"}}},
                      activation=[{"step": 0, "layers": [3]}, {"step": 6, "layers": "all"}],
                      specaug={"freq_masks": 1, "freq_width": 5, "time_masks": 1, "time_width_ratio": 0.1})
    f = root / "resume.yaml"
    f.write_text(yaml.safe_dump(sched))
    env = dict(os.environ, PART_DEVICE="cpu")
    subprocess.run(_train_cmd(root, root / "exp" / "full", f), check=True, env=env, capture_output=True)
    # exp/config.yaml is the full, flattened config: every default stated
    resolved = yaml.safe_load((root / "exp" / "full" / "config.yaml").read_text())
    stage = resolved["schedule"]["stages"][0]
    assert stage["optim"] == {"type": "adamw", "lr": 3e-3, "weight_decay": 0.01, "betas": [0.9, 0.98],
                              "eps": 1e-8, "momentum": 0.0}
    assert stage["dev"]["best_n"] == 3 and stage["trainable"]["llm"]["lora"]["target_modules"] == ["q_proj", "v_proj"]
    assert resolved["model"]["adapter"] == {"type": "stack", "stack": 4, "hidden": 64}
    assert resolved["model"]["encoder"]["pad_to_30s"] is False
    exp = root / "exp" / "killed"
    proc = subprocess.Popen(_train_cmd(root, exp, f), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = exp / "s1" / "checkpoints" / "latest"
    wait_for_checkpoint(proc, latest, "ckpt-000004.pt")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (exp / "s1" / "model").exists()
    res = subprocess.run(_train_cmd(root, exp, f), check=True, env=env, capture_output=True, text=True)
    assert "resumed from ckpt-" in res.stderr
    a, b = _weights(root / "exp" / "full" / "s1" / "model"), _weights(exp / "s1" / "model")
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"


@pytest.mark.slow
def test_two_processes_match_one(setup):
    """Same weights, and the dev evaluation split over the ranks gives the metrics of one process
    (each logged once) and one best.json."""
    root, _ = setup
    sched = _schedule(max_steps=3, save_interval=3, batch={"max_frames": 400, "max_tokens": 2000, "max_utts": 4},
                      dev={"data": ["dev_*"], "interval": 2, "metric": "wer", "best_n": 2})
    f = root / "ddp.yaml"
    f.write_text(yaml.safe_dump(sched))
    env = dict(os.environ, PART_DEVICE="cpu")
    one = subprocess.run(_train_cmd(root, root / "exp" / "one", f), env=env, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    cmd = _train_cmd(root, root / "exp" / "two", f)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533"]
    res = subprocess.run(torchrun + cmd[1:], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = _weights(root / "exp" / "one" / "s1" / "model"), _weights(root / "exp" / "two" / "s1" / "model")
    diffs = {k: float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point()}
    assert max(diffs.values()) < 1e-4, sorted(diffs.items(), key=lambda kv: -kv[1])[:3]

    def dev_lines(log: str):
        return [line.split("partlib.train: ")[1] for line in log.splitlines() if ": dev " in line]

    assert len(dev_lines(one.stderr)) == 2 and dev_lines(res.stderr) == dev_lines(one.stderr)
    best = [(root / "exp" / n / "s1" / "checkpoints" / "best.json").read_text() for n in ("one", "two")]
    assert best[0] == best[1] and len(json.loads(best[0])) == 2


def test_exported_model_decodes(setup, tmp_path):
    """Trained longer on one language, the exported model transcribes its training utterances
    (each sentence's pattern) nearly word for word, and decodes translations into the asked language."""
    from partlib.infer.decode import decode_dir
    from partlib.models.speech_llm import SpeechLLM
    from partlib.scoring.wer import ErrorCounts, score_units

    root, cfg = setup
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only wait on each other
    try:
        out = _run(root, cfg, _schedule(max_steps=80, save_interval=80, log_interval=80,
                                        batch={"max_frames": 800, "max_tokens": 4000},
                                        tasks=[{"task": "asr", "data": ["train_de"]}],
                                        trainable={"encoder": "full", "adapter": "full", "llm": "full"}), "decode")
    finally:
        torch.set_num_threads(threads)
    model = SpeechLLM.from_pretrained(out[0])
    train = DataDir.load(root / "data" / "train_de")
    hyps = decode_dir(model, root / "data" / "train_de", tmp_path / "asr", task="asr", max_new_tokens=20)
    assert sorted(hyps) == train.utts
    assert (tmp_path / "asr" / "ref").read_text().splitlines()[0] == "spkde-000 die katze schläft"
    counts = sum((score_units(train.text[u].split(), hyps[u].split())[0] for u in train.utts), ErrorCounts())
    assert counts.n == 18 and counts.rate() < 20.0, hyps  # measured 0; 14 words of 18 right (22%) fails
    decode_dir(model, root / "data" / "dev_de", tmp_path / "st", task="s2tt", tgt_lang="en", max_new_tokens=5)
    assert (tmp_path / "st" / "tgt_lang").read_text().strip() == "en"
    assert (tmp_path / "st" / "ref").read_text().splitlines()[0] == "spkde-000 the cat sleeps"


def test_a_window_qformer_adapter_trains_exports_and_decodes(setup, tmp_path):
    """An adapter with its own output lengths (not a downsampling factor) fits the whole path:
    chosen in the model config only, it trains, exports, loads and decodes."""
    from partlib.infer.decode import decode_dir
    from partlib.models.adapter import WindowQFormer
    from partlib.models.speech_llm import SpeechLLM

    root, cfg = setup
    cfg = {**cfg, "adapter": {"type": "qformer", "window_s": 0.33, "queries": 1, "layers": 1, "dim": 32,
                              "heads": 2, "ffn": 64}}
    out = _run(root, cfg, _schedule(max_steps=3), "qformer")
    model = SpeechLLM.from_pretrained(out[0])
    assert isinstance(model.adapter, WindowQFormer) and model.adapter.window == 16
    # 40 log-mel frames -> 20 encoder states -> 2 windows of 16 -> 2 embeddings
    assert model.speech_embed_length(40) == 2
    hyps = decode_dir(model, root / "data" / "dev_de", tmp_path / "asr", task="asr", max_new_tokens=3)
    assert sorted(hyps) == DataDir.load(root / "data" / "dev_de").utts
