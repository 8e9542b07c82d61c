"""utils/parse_options.sh, utils/run.pl and utils/slurm.pl (with a stand-in sbatch)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

UTILS = Path(__file__).resolve().parent.parent / "utils"


def run(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


# ---------------------------------------------------------------- parse_options.sh

SCRIPT = f"""#!/usr/bin/env bash
set -euo pipefail
foo_bar=1
use_gpu=false
name=x
empty=
help_message="Usage: $0 [options] <in> <out>\\n  --foo-bar N   how many"
. {UTILS}/parse_options.sh
printf '%s|' "$foo_bar" "$use_gpu" "$name" "$empty" "$config" "$#" "$@"
"""


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "script.sh"
    path.write_text(SCRIPT)
    return path


def opts(script: Path, *args: str) -> subprocess.CompletedProcess:
    return run(["bash", str(script), *args], cwd=script.parent)


def values(proc: subprocess.CompletedProcess) -> list[str]:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.split("|")[:-1]


def test_defaults_and_positional_args(script: Path) -> None:
    assert values(opts(script)) == ["1", "false", "x", "", "", "0"]
    assert values(opts(script, "in", "out")) == ["1", "false", "x", "", "", "2", "in", "out"]


def test_dash_and_underscore_names(script: Path) -> None:
    assert values(opts(script, "--foo-bar", "3", "a"))[:1] == ["3"]
    assert values(opts(script, "--foo_bar", "4", "--empty", "set"))[:4] == ["4", "false", "x", "set"]


def test_value_kept_verbatim(script: Path) -> None:
    assert values(opts(script, "--name", "a b $HOME * 'q'"))[2] == "a b $HOME * 'q'"
    assert values(opts(script, "--name", ""))[2] == ""


def test_double_dash_ends_options(script: Path) -> None:
    assert values(opts(script, "--", "--foo-bar", "2"))[5:] == ["2", "--foo-bar", "2"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--nope", "1"], "invalid option --nope"),
        (["--use-gpu", "yes"], 'expected "true" or "false": --use-gpu yes'),
        (["--foo-bar=3"], "must be given as '--name value'"),
        (["--foo-bar"], "option --foo-bar needs a value"),
        (["--config", "/nonexistent/x.conf"], "cannot read config file '/nonexistent/x.conf'"),
    ],
)
def test_errors(script: Path, args: list[str], message: str) -> None:
    proc = opts(script, *args)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert proc.stdout == ""


def test_boolean_accepts_true(script: Path) -> None:
    assert values(opts(script, "--use-gpu", "true"))[1] == "true"


def test_config_file_then_command_line_wins(script: Path, tmp_path: Path) -> None:
    conf = tmp_path / "a.conf"
    conf.write_text('foo_bar=7\nname="from conf"\n')
    assert values(opts(script, "--config", str(conf)))[:5] == ["7", "false", "from conf", "", str(conf)]
    assert values(opts(script, "--config", str(conf), "--foo-bar", "9"))[:3] == ["9", "false", "from conf"]
    assert values(opts(script, "--foo-bar", "9", "--config", str(conf)))[:3] == ["9", "false", "from conf"]


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help(script: Path, flag: str) -> None:
    proc = opts(script, "--foo-bar", "2", flag)
    assert proc.returncode == 0
    assert proc.stdout == f"Usage: {script} [options] <in> <out>\n  --foo-bar N   how many\n"


def test_empty_cmd_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "s.sh"
    path.write_text(f'cmd=utils/run.pl\n. {UTILS}/parse_options.sh\necho "cmd=$cmd"\n')
    assert run(["bash", str(path), "--cmd", "slurm.pl --mem 2G"], tmp_path).stdout == "cmd=slurm.pl --mem 2G\n"
    proc = run(["bash", str(path), "--cmd", ""], tmp_path)
    assert proc.returncode == 1 and "empty argument to --cmd" in proc.stderr


# ---------------------------------------------------------------- run.pl

RUN_PL = str(UTILS / "run.pl")
LOG_HEADER = re.compile(r"^# (?P<cmd>.*)\n# Started at .+\n#\n(?P<body>.*)# Accounting: time=\d+ threads=1\n"
                        r"# Ended \(code (?P<code>\d+)\) at .+, elapsed time \d+ seconds\n$", re.S)


def parse_log(path: Path) -> dict:
    m = LOG_HEADER.match(path.read_text())
    assert m, path.read_text()
    return m.groupdict()


def test_run_pl_job_array_logs(tmp_path: Path) -> None:
    proc = run([RUN_PL, "--mem", "4G", "--gpu", "0", "JOB=3:5", "--num-threads", "2",
                "exp/log/t.JOB.log", "echo", "job JOB", "it's", "|", "tr", "a-z", "A-Z"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "exp/log").iterdir()) == ["t.3.log", "t.4.log", "t.5.log"]
    log = parse_log(tmp_path / "exp/log/t.4.log")
    assert log == {"cmd": "echo 'job 4' 'it'\\''s' | tr a-z A-Z", "body": "JOB 4 IT'S\n", "code": "0"}


def test_run_pl_single_job(tmp_path: Path) -> None:
    proc = run([RUN_PL, "one.log", "bash", "-c", "echo out; echo err >&2"], tmp_path)
    assert proc.returncode == 0
    assert parse_log(tmp_path / "one.log")["body"] == "out\nerr\n"


def test_run_pl_failure_names_failed_logs(tmp_path: Path) -> None:
    proc = run([RUN_PL, "JOB=1:4", "log/f.JOB.log", "bash", "-c", "[ JOB -eq 2 ] && exit 3; true"], tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "run.pl: 1 / 4 failed, see log/f.2.log"
    assert parse_log(tmp_path / "log/f.2.log")["code"] == "3"
    assert parse_log(tmp_path / "log/f.3.log")["code"] == "0"


def test_run_pl_runs_jobs_in_parallel(tmp_path: Path) -> None:
    # Each job waits until both have started: it succeeds only if they run at the same time.
    wait_both = "touch s.JOB; for i in $(seq 100); do [ -e s.1 ] && [ -e s.2 ] && exit 0; sleep 0.05; done; exit 1"
    proc = run([RUN_PL, "--max-jobs-run", "2", "JOB=1:2", "p.JOB.log", "bash", "-c", wait_both], tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_run_pl_max_jobs_run_serialises(tmp_path: Path) -> None:
    step = "echo start JOB >> order; sleep 0.1; echo end JOB >> order"
    proc = run([RUN_PL, "--max-jobs-run", "1", "JOB=1:3", "o.JOB.log", "bash", "-c", step], tmp_path)
    assert proc.returncode == 0
    assert (tmp_path / "order").read_text().split("\n")[:-1] == [
        "start 1", "end 1", "start 2", "end 2", "start 3", "end 3"
    ]


@pytest.mark.parametrize(
    "args,message",
    [
        (["JOB=1:2", "one.log", "true"], "2 jobs would share one log file 'one.log'"),
        (["JOB=0:2", "x.JOB.log", "true"], "invalid job range JOB=0:2"),
        (["--max-jobs-run", "0", "x.log", "true"], "--max-jobs-run needs a positive integer"),
        (["x.log"], "usage: run.pl"),
    ],
)
def test_run_pl_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    proc = run([RUN_PL, *args], tmp_path)
    assert proc.returncode == 1 and message in proc.stderr


# ---------------------------------------------------------------- slurm.pl

SLURM_PL = str(UTILS / "slurm.pl")

# Stand-in for sbatch: records its arguments and runs the array tasks here, one after another.
FAKE_SBATCH = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$FAKE_SBATCH_ARGS"
[ -n "${FAKE_SBATCH_SKIP:-}" ] && exit 0
array=
for a; do case $a in --array=*) array=${a#--array=} ;; esac; done
echo "$array" >> "$FAKE_SBATCH_ARGS.arrays"
ids=${array%%\\%*}
rc=0
for part in ${ids//,/ }; do
  for ((i = ${part%-*}; i <= ${part#*-}; i++)); do SLURM_ARRAY_TASK_ID=$i bash "${!#}" || rc=1; done
done
exit $rc
"""


@pytest.fixture
def slurm_env(tmp_path: Path) -> dict:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "sbatch").write_text(FAKE_SBATCH)
    (bindir / "sbatch").chmod(0o755)
    return {"PATH": f"{bindir}:{os.environ['PATH']}", "FAKE_SBATCH_ARGS": str(tmp_path / "sbatch.args")}


def sbatch_args(tmp_path: Path) -> list[str]:
    return (tmp_path / "sbatch.args").read_text().split("\n")[:-1]


def test_slurm_pl_submits_array_and_collects_logs(tmp_path: Path, slurm_env: dict) -> None:
    conf = tmp_path / "slurm.conf"
    conf.write_text("command sbatch --partition=cpu  # site default\noption gpu=* --partition=gpu --gres=gpu:$0\n")
    proc = run([SLURM_PL, "--gpu", "2", "--mem", "4G", "--num-threads", "3", "--config", str(conf),
                "JOB=2:4", "--max-jobs-run", "2", "exp/log/x.JOB.log", "echo", "a b", "JOB"], tmp_path, slurm_env)
    assert proc.returncode == 0, proc.stderr
    assert sbatch_args(tmp_path) == [
        "--partition=cpu", "--wait", "--array=2-4%2", "--job-name=x", "--output=exp/log/q/x.%a.out",
        "--partition=gpu", "--gres=gpu:2", "--mem=4G", "--cpus-per-task=3", "exp/log/q/x.sh",
    ]
    assert parse_log(tmp_path / "exp/log/x.3.log") == {"cmd": "echo 'a b' 3", "body": "a b 3\n", "code": "0"}
    assert "SLURM_ARRAY_TASK_ID" in (tmp_path / "exp/log/q/x.sh").read_text()


def test_slurm_pl_defaults_and_single_job(tmp_path: Path, slurm_env: dict) -> None:
    proc = run([SLURM_PL, "--gpu", "0", "--num-threads", "1", "log/one.log", "true"], tmp_path, slurm_env)
    assert proc.returncode == 0, proc.stderr
    assert sbatch_args(tmp_path) == [
        "--export=ALL", "--ntasks-per-node=1", "--wait", "--array=1-1", "--job-name=one",
        "--output=log/q/one.%a.out", "log/q/one.sh",
    ]
    assert parse_log(tmp_path / "log/one.log")["code"] == "0"


def test_slurm_pl_failure_names_failed_logs(tmp_path: Path, slurm_env: dict) -> None:
    proc = run([SLURM_PL, "JOB=1:3", "log/y.JOB.log", "bash", "-c", "[ JOB -ne 2 ]"], tmp_path, slurm_env)
    assert proc.returncode == 1
    assert "slurm.pl: 1 / 3 failed, see log/y.2.log\n" in proc.stderr


def test_slurm_pl_job_that_never_ran_is_a_failure(tmp_path: Path, slurm_env: dict) -> None:
    (tmp_path / "log").mkdir()
    (tmp_path / "log/z.1.log").write_text("# Ended (code 0) at a previous run\n")  # stale
    proc = run([SLURM_PL, "JOB=1:1", "log/z.JOB.log", "true"], tmp_path, {**slurm_env, "FAKE_SBATCH_SKIP": "1"})
    assert proc.returncode == 1
    assert "log/z.1.log (never finished; see log/q/z.1.out)" in proc.stderr


# stops with 75 (preempted) the first time it runs as job JOB, then succeeds
PREEMPTED_ONCE = "if [ -e ran.JOB ]; then echo resumed JOB; else touch ran.JOB; exit 75; fi"


def test_slurm_pl_submits_preempted_jobs_again(tmp_path: Path, slurm_env: dict) -> None:
    cmd = ["bash", "-c", PREEMPTED_ONCE]
    (tmp_path / "ran.2").touch()  # job 2 is not preempted
    proc = run([SLURM_PL, "JOB=1:3", "log/p.JOB.log", *cmd], tmp_path, slurm_env)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "sbatch.args.arrays").read_text() == "1-3\n1,3\n"
    assert "2 job(s) stopped with status 75 (preempted): submitting again (1 of at most 10)" in proc.stderr
    for j in (1, 3):
        assert parse_log(tmp_path / f"log/p.{j}.log")["body"] == f"resumed {j}\n"
        assert parse_log(tmp_path / f"log/p.{j}.log.preempted")["code"] == "75"
    assert not (tmp_path / "log/p.2.log.preempted").exists()


def test_slurm_pl_a_command_killed_by_a_signal_failed(tmp_path: Path, slurm_env: dict) -> None:
    """run.pl outlives the signal and logs "code 0; signal 9": that is a failure, not a success."""
    proc = run([SLURM_PL, "JOB=1:1", "log/k.JOB.log", sys.executable, "-c",
                "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"], tmp_path, slurm_env)
    assert proc.returncode == 1
    assert "slurm.pl: 1 / 1 failed, see log/k.1.log" in proc.stderr
    assert "signal 9" in (tmp_path / "log/k.1.log").read_text()


def test_slurm_pl_gives_up_after_max_requeue(tmp_path: Path, slurm_env: dict) -> None:
    proc = run([SLURM_PL, "--max-requeue", "0", "JOB=1:1", "log/q.JOB.log", "bash", "-c", PREEMPTED_ONCE],
               tmp_path, slurm_env)
    assert proc.returncode == 1
    assert "slurm.pl: 1 / 1 failed, see log/q.1.log" in proc.stderr
    assert parse_log(tmp_path / "log/q.1.log")["code"] == "75"
    assert (tmp_path / "sbatch.args.arrays").read_text() == "1-1\n"


def test_run_pl_passes_sigterm_on_and_logs_the_exit_code(tmp_path: Path) -> None:
    """The cluster's SIGTERM reaches the command through run.pl, and the log still ends with the
    command's own exit status (what slurm.pl requeues on)."""
    script = tmp_path / "stop.py"
    script.write_text("import signal, sys, time, pathlib\n"
                      "signal.signal(signal.SIGTERM, lambda *a: sys.exit(75))\n"
                      "pathlib.Path('ready').touch()\n"
                      "time.sleep(60)\n")
    proc = subprocess.Popen([str(UTILS / "run.pl"), "log/s.log", sys.executable, str(script)], cwd=tmp_path,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while not (tmp_path / "ready").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert parse_log(tmp_path / "log/s.log")["code"] == "75"
    assert "1 / 1 failed, see log/s.log" in err


def test_slurm_pl_unknown_option(tmp_path: Path, slurm_env: dict) -> None:
    proc = run([SLURM_PL, "--foo-bar", "1", "x.log", "true"], tmp_path, slurm_env)
    assert proc.returncode == 1
    assert "no rule for option --foo-bar" in proc.stderr
    assert not (tmp_path / "sbatch.args").exists()


# ---------------------------------------------------------------- tools/setup.sh, tools/activate.sh

TOOLS = Path(__file__).resolve().parent.parent / "tools"

# Stand-in for the venv's python: logs its arguments; torch importable iff STUB_TORCH is set,
# a local torch wheel present iff STUB_LOCAL_WHEEL is set.
STUB_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$STUB_LOG"
case "$*" in
  "-c import torch; print(torch.__version__)") [ -n "${STUB_TORCH:-}" ] && echo "$STUB_TORCH" ;;
  "-m pip install --no-index --no-deps torch==2.13.0") [ -n "${STUB_LOCAL_WHEEL:-}" ] ;;
  *) true ;;
esac
"""


@pytest.fixture
def fake_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "tools").mkdir(parents=True)
    for name in ("setup.sh", "activate.sh"):
        (repo / "tools" / name).write_text((TOOLS / name).read_text())
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").write_text(STUB_PYTHON)
    (venv_bin / "python").chmod(0o755)
    bindir = tmp_path / "bin"  # no GPU here, whatever machine runs the test
    bindir.mkdir()
    (bindir / "nvidia-smi").write_text("#!/bin/sh\nexit 1\n")
    (bindir / "nvidia-smi").chmod(0o755)
    return repo


def setup_sh(repo: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    log = repo.parent / "python.log"
    log.unlink(missing_ok=True)
    proc = run(["bash", str(repo / "tools/setup.sh"), "--no-system", *args], repo, {
        "VIRTUAL_ENV": str(repo.parent / "venv"), "STUB_LOG": str(log),
        "PATH": f"{repo.parent / 'bin'}:{os.environ['PATH']}", **env})
    return proc, log.read_text().splitlines() if log.exists() else []


def test_setup_sh_keeps_an_installed_torch(fake_repo: Path) -> None:
    proc, calls = setup_sh(fake_repo, "--extras", "dev,ja", STUB_TORCH="2.5.1+cu121")
    assert proc.returncode == 0, proc.stderr
    assert "torch 2.5.1+cu121 is already installed" in proc.stdout
    assert not any("install" in c and "torch" in c for c in calls)
    assert f"-m pip install -e {fake_repo}[dev,ja]" in calls


def test_setup_sh_installs_cpu_torch_from_local_wheel(fake_repo: Path) -> None:
    proc, calls = setup_sh(fake_repo, STUB_LOCAL_WHEEL="1")
    assert proc.returncode == 0, proc.stderr
    assert calls.index("-m pip install torch==2.13.0") < calls.index(f"-m pip install -e {fake_repo}[dev]")
    assert not any("index-url" in c for c in calls)


def test_setup_sh_falls_back_to_cpu_index(fake_repo: Path) -> None:
    proc, calls = setup_sh(fake_repo)
    assert proc.returncode == 0, proc.stderr
    assert "-m pip install torch --index-url https://download.pytorch.org/whl/cpu" in calls


def test_setup_sh_rejects_unknown_argument(fake_repo: Path) -> None:
    proc, _ = setup_sh(fake_repo, "--bogus")
    assert proc.returncode == 1 and "unknown argument '--bogus'" in proc.stderr


def test_activate_sh_puts_repo_venv_first(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "tools").mkdir(parents=True)
    (repo / "tools/activate.sh").write_text((TOOLS / "activate.sh").read_text())
    (repo / ".venv/bin").mkdir(parents=True)
    (repo / ".venv/bin/python").write_text("#!/bin/sh\n")
    (repo / ".venv/bin/python").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    proc = subprocess.run(
        ["bash", "-c", f'set -euo pipefail; . {repo}/tools/activate.sh; echo "$VIRTUAL_ENV"; command -v python'],
        capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [f"{repo}/.venv", f"{repo}/.venv/bin/python"]
