"""Checkpoint averaging at export (``dev.average_n``): the exported model is the mean of the best
checkpoints' merged weights, computed here from the checkpoint files by hand (LoRA merged as
``W0 + alpha / r · B @ A``), which is not the product of the averaged LoRA factors."""
import json

import pytest
import torch
import yaml

from partlib.train.schedule import parse_schedule
from partlib.train.trainer import Trainer
from train_fixtures import speech_data, weights

R, ALPHA = 4, 8


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from partlib.models.builders import tiny_model_config

    root = tmp_path_factory.mktemp("average")
    speech_data(root, n_train=6, n_dev=3)
    cfg = tiny_model_config(root / "models", lora=False)
    (root / "model.yaml").write_text(yaml.safe_dump(cfg))

    def run(name: str, lr: float):
        stage = {"name": "s1", "max_steps": 6, "log_interval": 2, "save_interval": 2,
                 "optim": {"lr": lr}, "scheduler": {"type": "constant"},
                 "batch": {"max_frames": 400, "max_tokens": 2000},
                 "tasks": [{"task": "asr", "data": ["train_*"]}],
                 "dev": {"data": ["dev_*"], "interval": 2, "metric": "loss", "best_n": 3, "average_n": 3},
                 "trainable": {"encoder": "frozen", "adapter": "full",
                               "llm": {"lora": {"r": R, "alpha": ALPHA, "dropout": 0.0,
                                                "target_modules": ["q_proj", "v_proj"], "layers": "all"}}}}
        exp = root / "exp" / name
        (model_dir,) = Trainer(parse_schedule({"seed": 3, "stages": [stage]}), cfg, exp,
                               data_root=str(root / "data"), tensorboard=False).run()
        return exp / "s1", model_dir

    _, init_dir = run("init", 0.0)  # the same seeded initialisation, untrained: the base weights W0
    stage_dir, model_dir = run("avg", 3e-3)
    return stage_dir, weights(model_dir), weights(init_dir)


def test_export_averages_the_merged_weights_of_the_best_checkpoints(trained):
    stage_dir, exported, init = trained
    ckpt_dir = next(p.parent for p in stage_dir.rglob("best.json"))
    best = json.loads((ckpt_dir / "best.json").read_text())
    steps = [s for _, s in best]
    assert sorted(steps) == [2, 4, 6]  # every evaluation is among the best 3
    states = [torch.load(ckpt_dir / f"ckpt-{s:06d}.pt", map_location="cpu", weights_only=False)["model"]
              for s in steps]
    expected = {}
    for name in states[0]:
        if ".lora_A." in name:
            prefix = name.split(".lora_A.")[0]
            b_name = name.replace(".lora_A.", ".lora_B.")
            deltas = [(st[b_name].double() @ st[name].double()) * (ALPHA / R) for st in states]
            merged = [k for k in init if k.endswith(".weight") and _lora_base(prefix) == k[: -len(".weight")]]
            assert len(merged) == 1, (prefix, merged)
            expected[merged[0]] = init[merged[0]].double() + sum(deltas) / len(deltas)
            # what averaging the factors would give instead: measurably different
            factors = (sum(st[b_name].double() for st in states) @ sum(st[name].double() for st in states)
                       ) * (ALPHA / R) / len(states) ** 2
            assert not torch.allclose(init[merged[0]].double() + factors, expected[merged[0]], atol=1e-7)
        elif name.startswith("adapter."):
            expected[name] = sum(st[name].double() for st in states) / len(states)
    assert any(k.startswith("adapter.") for k in expected) and any("q_proj" in k for k in expected)
    for k, v in expected.items():
        torch.testing.assert_close(exported[k].double(), v, rtol=0, atol=1e-6, msg=k)
    # and nothing else moved: the frozen encoder and the LLM's other weights are the initial ones
    for k in init:
        if k not in expected and not k.startswith("adapter."):
            assert torch.equal(exported[k], init[k]), k


def _lora_base(prefix: str) -> str:
    """The merged model's module name of a LoRA-wrapped layer (peft adds ``base_model.model.``)."""
    return prefix.replace("base_model.model.", "")
