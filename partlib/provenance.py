"""Provenance of a run: the commit of the working tree and the environment record ``env.json``.

Training writes ``exp/<tag>/env.json`` once (:func:`write_env_json`) and RESULTS.md shows it, so
that the record says when and with what a model was trained, not when its tables were
regenerated. This module sits on a low floor (it imports only ``partlib.common`` and the standard
library at module level) so that training, export and scoring can all use it.
"""
from __future__ import annotations

import datetime as _dt
import json
import platform
import subprocess
from pathlib import Path
from typing import Optional

from partlib.common import PathLike, atomic_write

# The fields of env.json, in the order RESULTS.md shows them: (key, column label).
ENV_FIELDS = (("date", "date"), ("git_commit", "git commit"), ("python", "python"),
              ("torch", "torch"), ("transformers", "transformers"), ("device", "device"))


def git_commit() -> str:
    """The commit of the working tree (``-dirty`` when tracked files changed), or ``unknown``."""
    def git(*args: str) -> Optional[str]:
        try:
            out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                                 cwd=Path(__file__).resolve().parent)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return (commit + ("-dirty" if dirty else "")) if commit else "unknown"


def write_env_json(exp_dir: PathLike, *, overwrite: bool = True) -> Path:
    """Record the training environment in ``<exp_dir>/env.json`` (date, git commit, versions,
    device), so that RESULTS.md can show it without depending on when it is regenerated."""
    path = Path(exp_dir) / "env.json"
    if path.exists() and not overwrite:
        return path
    # imported here: the versions are recorded only when an environment is written
    import torch
    import transformers

    if torch.cuda.is_available():
        device = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    else:
        device = "cpu"
    env = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": device,
    }
    atomic_write(path, json.dumps(env, indent=2, sort_keys=True) + "\n")
    return path
