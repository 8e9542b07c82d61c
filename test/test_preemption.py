"""Preemption and requeue: SIGUSR1 / SIGTERM stop training after the current step with a checkpoint
and exit status 75, on one process and on two (every rank stops after the same step, whichever got
the signal); ``utils/srun_requeue.sh`` requeues the job (stand-in ``srun`` and ``scontrol``); the
resumed run ends with the parameters of an uninterrupted one."""
import hashlib
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from train_fixtures import free_port, speech_data, train_cmd, wait_for_checkpoint, weights

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

SCHEDULE = {"seed": 1, "stages": [{
    "name": "s1", "max_steps": 14, "log_interval": 1, "save_interval": 1,
    "optim": {"lr": 3e-3}, "scheduler": {"type": "constant"},
    "batch": {"max_frames": 400, "max_tokens": 2000, "max_utts": 4},
    "tasks": [{"task": "asr", "data": ["train_*"]}, {"task": "s2tt", "data": ["train_*"]}],
    "trainable": {"encoder": "full", "adapter": "full",
                  "llm": {"lora": {"r": 2, "alpha": 4, "dropout": 0.0, "layers": "all"}}},
    "activation": [{"step": 0, "layers": [3]}, {"step": 7, "layers": "all"}]}]}

# stand-ins for Slurm: srun runs one task here; scontrol records what it was asked
FAKE_SRUN = """#!/usr/bin/env bash
while [[ $1 == --* ]]; do shift; done
export SLURM_STEP_NUM_TASKS=1 SLURM_PROCID=0 SLURM_LOCALID=0
exec "$@"
"""
FAKE_SCONTROL = """#!/usr/bin/env bash
echo "$@" >> "$FAKE_SCONTROL_LOG"
"""


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Data, model config, the schedule and an uninterrupted reference run."""
    from partlib.models.builders import tiny_model_config

    root = tmp_path_factory.mktemp("preempt")
    speech_data(root, n_train=6, n_dev=3)
    (root / "model.yaml").write_text(yaml.safe_dump(tiny_model_config(root / "models", lora=False)))
    sched = root / "schedule.yaml"
    sched.write_text(yaml.safe_dump(SCHEDULE))
    env = dict(os.environ, PART_DEVICE="cpu")
    subprocess.run(train_cmd(root, root / "exp" / "ref", sched), check=True, env=env, capture_output=True)
    return root, sched, env


def _stopped_step(stderr: str, signame: str) -> int:
    found = re.findall(rf"stopped by {signame} after step (\d+) with checkpoint \S+ckpt-(\d+)\.pt", stderr)
    assert found, stderr[-2000:]
    step, ckpt = found[-1]
    assert int(step) == int(ckpt)
    return int(step)


def _checked_checkpoint(exp: Path, step: int) -> None:
    """The stop's checkpoint is the newest, with a checksum that matches its bytes; no model yet."""
    ck = exp / "s1" / "checkpoints"
    name = f"ckpt-{step:06d}.pt"
    assert (ck / "latest").read_text().strip() == name
    assert (ck / (name + ".sha256")).read_text().split()[0] == hashlib.sha256((ck / name).read_bytes()).hexdigest()
    assert not (exp / "s1" / "model").exists()


def test_sigusr1_checkpoints_and_the_requeued_job_resumes_exactly(prepared, tmp_path):
    """SIGUSR1 to every process of the job, as Slurm sends it: the batch shell, the training and its
    DataLoader workers (which must not die of it)."""
    root, sched, env = prepared
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    env = dict(env, PATH=f"{bindir}:{env['PATH']}", SLURM_JOB_ID="4242",
               FAKE_SCONTROL_LOG=str(tmp_path / "scontrol.log"))
    exp = root / "exp" / "usr1"
    job = [str(REPO / "utils" / "srun_requeue.sh"), *train_cmd(root, exp, sched), "--num-workers", "2"]
    proc = subprocess.Popen(job, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    wait_for_checkpoint(proc, exp / "s1" / "checkpoints" / "latest", "ckpt-000002.pt")
    os.killpg(proc.pid, signal.SIGUSR1)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]  # the job was requeued: the batch script succeeded
    assert "Traceback" not in err
    step = _stopped_step(err, "SIGUSR1")
    assert 2 <= step < SCHEDULE["stages"][0]["max_steps"]
    assert "srun_requeue.sh: stop signal received" in err
    assert "the step stopped with status 75 (preempted): requeueing job 4242" in err
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"
    _checked_checkpoint(exp, step)
    # the requeued job runs the same batch script again
    res = subprocess.run(job, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"resumed from ckpt-{step:06d}.pt at step {step}" in res.stderr
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"  # not requeued again
    a, b = weights(root / "exp" / "ref" / "s1" / "model"), weights(exp / "s1" / "model")
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after the requeued resume"



def test_two_ranks_stop_after_the_same_step_when_one_gets_sigterm(prepared):
    root, sched, env = prepared
    exp = root / "exp" / "two"
    base = dict(env, MASTER_ADDR="127.0.0.1", SLURM_STEP_NUM_TASKS="2")

    def launch():  # what srun --ntasks=2 does: two processes with their Slurm ranks
        port = str(free_port())
        return [subprocess.Popen(train_cmd(root, exp, sched), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True, env=dict(base, MASTER_PORT=port, SLURM_PROCID=str(r), SLURM_LOCALID=str(r)))
                for r in range(2)]

    ranks = launch()
    wait_for_checkpoint(ranks[0], exp / "s1" / "checkpoints" / "latest", "ckpt-000002.pt")
    ranks[1].send_signal(signal.SIGTERM)  # rank 1 only
    errs = [p.communicate(timeout=300)[1] for p in ranks]
    assert [p.returncode for p in ranks] == [75, 75], errs[0][-2000:] + errs[1][-2000:]
    steps = [_stopped_step(errs[0], "a signal on another rank"), _stopped_step(errs[1], "SIGTERM")]
    assert steps[0] == steps[1]
    assert not any("Traceback" in e for e in errs)
    _checked_checkpoint(exp, steps[0])
    ranks = launch()
    errs = [p.communicate(timeout=300)[1] for p in ranks]
    assert [p.returncode for p in ranks] == [0, 0], errs[0][-2000:]
    assert f"resumed from ckpt-{steps[0]:06d}.pt" in errs[0]
    a, b = weights(root / "exp" / "ref" / "s1" / "model"), weights(exp / "s1" / "model")
    diffs = {k: float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point()}
    assert max(diffs.values()) < 1e-4, sorted(diffs.items(), key=lambda kv: -kv[1])[:3]
