"""FSDP (fully_shard) training on CPU with gloo: two sharded processes reach the parameters of one
process (encoder trained; LoRA with activation, dev decoding, accumulation; global batches smaller
than the world size), and a killed sharded run resumes to the uninterrupted result."""
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from partlib.train.loader import BatchDataset
from train_fixtures import speech_data, wait_for_checkpoint

LORA = {"lora": {"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "layers": "all"}}
BATCH = {"max_frames": 400, "max_tokens": 2000}
TASKS = [{"task": "asr", "data": ["train_*"]}, {"task": "s2tt", "data": ["train_*"]}]
COMMON = {"log_interval": 1, "save_interval": 1, "optim": {"lr": 3e-3, "weight_decay": 0.01},
          "scheduler": {"type": "constant"}, "tasks": TASKS}
SCHEDULE = {"seed": 3, "stages": [
    # encoder and adapter trained, LLM frozen; global batches of 3 split 2 + 1
    dict(COMMON, name="enc", max_steps=3, batch=dict(BATCH, max_utts=3),
         trainable={"encoder": "full", "adapter": "full", "llm": "frozen"}),
    # LoRA widening at step 3, top encoder layer, accumulation, dev loss + greedy decoding
    dict(COMMON, name="lora", init_from="previous", max_steps=6, accum_grad=2, batch=dict(BATCH, max_utts=4),
         trainable={"encoder": {"top_k": 1}, "adapter": "full", "llm": LORA},
         activation=[{"step": 0, "layers": [3]}, {"step": 3, "layers": "all"}],
         dev={"data": ["dev_*"], "interval": 3, "metric": "loss", "max_utts": 2}),
    # one example per global batch: the second rank only ever has a stand-in of weight 0
    dict(COMMON, name="tiny", init_from="previous", max_steps=2, batch=dict(BATCH, max_utts=1),
         trainable={"encoder": "frozen", "adapter": "full", "llm": "frozen"}),
]}
STAGES = [s["name"] for s in SCHEDULE["stages"]]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from partlib.models.builders import tiny_model_config

    root = tmp_path_factory.mktemp("fsdp")
    speech_data(root, n_train=6, n_dev=2)
    (root / "model.yaml").write_text(yaml.safe_dump(tiny_model_config(root / "models", lora=False)))
    (root / "schedule.yaml").write_text(yaml.safe_dump(SCHEDULE))
    return root


def _cmd(root: Path, exp: Path, nproc: int, port: int = 29541):
    train = ["-m", "partlib.bin.train", "--schedule", str(root / "schedule.yaml"),
             "--model-config", str(root / "model.yaml"), "--data-root", str(root / "data"),
             "--exp-dir", str(exp), "--threads", "1", "--no-tensorboard", "--strategy", "fsdp"]
    if nproc == 1:
        return [sys.executable, *train]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
            f"--master_port={port}", *train]


ENV = dict(os.environ, PART_DEVICE="cpu", OMP_NUM_THREADS="1")


def _run(cmd) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-4000:]
    return res


def _weights(model_dir: Path):
    from partlib.models.speech_llm import SpeechLLM

    return {k: v.detach().clone() for k, v in SpeechLLM.from_pretrained(model_dir).state_dict().items()}


@pytest.fixture(scope="module")
def runs(setup):
    """One process and two sharded processes over the same schedule."""
    root = setup
    _run(_cmd(root, root / "exp" / "one", 1))
    res = _run(_cmd(root, root / "exp" / "two", 2))
    return root, res


@pytest.mark.slow
def test_fsdp_two_processes_match_one(runs):
    root, res = runs
    assert "FSDP, parameters sharded over 2 ranks" in res.stderr
    assert "dev " in res.stderr and "wer" in res.stderr  # dev loss and greedy decoding ran sharded
    trained = set()
    for stage in STAGES:
        a, b = _weights(root / "exp" / "one" / stage / "model"), _weights(root / "exp" / "two" / stage / "model")
        diffs = {k: float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point()}
        assert max(diffs.values()) < 1e-4, (stage, sorted(diffs.items(), key=lambda kv: -kv[1])[:3])
        if stage != STAGES[0]:
            trained |= {k for k in a if a[k].is_floating_point() and not torch.equal(a[k], prev[k])}
        prev = a
    # the stand-in examples of the second rank count no tokens
    tokens = [re.findall(r"step \d+/\d+: .*tokens (\d+)", (root / "exp" / run / "tiny" / "train.log").read_text())
              for run in ("one", "two")]
    assert tokens[0] == tokens[1] and len(tokens[0]) == 2
    # the comparison is not vacuous: LoRA (merged into q/v) and the top encoder layer did change
    assert any(".layers.3.self_attn.q_proj" in k for k in trained)
    assert any(".layers.0.self_attn.q_proj" in k for k in trained)  # activated at step 3
    assert any(k.startswith("encoder.whisper.layers.1.") for k in trained)
    # sharded checkpoints: each rank wrote its own shards, the .pt holds no model or optimizer state
    ckpts = root / "exp" / "two" / "lora" / "checkpoints"
    state = torch.load(ckpts / "ckpt-000006.pt", weights_only=False)
    assert "model" not in state and "optimizer" not in state and state["world_size"] == 2
    files = {f.name: f.stat().st_size for f in (ckpts / state["shards"]).iterdir()}
    assert {"__0_0.distcp", "__1_0.distcp"} <= set(files)
    assert min(files["__0_0.distcp"], files["__1_0.distcp"]) > 0.3 * (files["__0_0.distcp"] + files["__1_0.distcp"])
    listed = (ckpts / "ckpt-000006.pt.sha256").read_text()
    assert all(f"{state['shards']}/{name}" in listed for name in files)


def _children(pid: int):
    """Process ids whose parent is ``pid`` (torchrun's workers run in their own sessions)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.slow
def test_fsdp_resume_after_kill(runs):
    root, _ = runs
    exp = root / "exp" / "killed"
    proc = subprocess.Popen(_cmd(root, exp, 2, port=29542), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    latest = exp / "lora" / "checkpoints" / "latest"
    # after step 3, where LoRA switches on in layer 0: its optimizer state must come back too
    wait_for_checkpoint(proc, latest, "ckpt-000004.pt")
    for pid in [*_children(proc.pid), proc.pid]:  # the workers mid-step, then torchrun
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    assert not (exp / "lora" / "model").exists()
    res = _run(_cmd(root, exp, 2, port=29542))
    assert "resumed from ckpt-" in res.stderr
    for stage in STAGES:
        a, b = _weights(root / "exp" / "two" / stage / "model"), _weights(exp / stage / "model")
        for k in a:
            assert torch.equal(a[k], b[k]), f"{stage}: {k} differs after resume"


def test_empty_slice_gets_a_weightless_stand_in():
    class OneExample:  # a sampler whose global batches hold one example
        def batch(self, m):
            return [ex]

    from partlib.data.examples import Example

    ex = Example(key="d/u/lm/en", utt="u", dir_index=0, task="lm", src_lang="en", tgt_lang="en", num_frames=0,
                 src_text="the cat", target="sleeps", n_tokens=30)
    first, second = (BatchDataset(OneExample(), None, rank, 2)[0] for rank in (0, 1))
    assert first["utt_ids"] == second["utt_ids"] == ["u"]
    assert (first["loss_weight"], second["loss_weight"]) == (1.0, 0.0)
