"""The layout of an experiment directory, defined once (the trainer writes it; part.sh reads it
through ``python -m partlib.bin.exp``)::

    exp/<tag>/config.yaml                the resolved config (schedule, model, arguments)
    exp/<tag>/env.json                   the training environment (partlib.provenance)
    exp/<tag>/<stage>/checkpoints/       resumable checkpoints
    exp/<tag>/<stage>/model/             the stage's exported model, complete once model/done exists
    exp/<tag>/<stage>/decode_*/          decodes of that model (partlib.tasks.decode_dir_name)
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, List, Tuple

import yaml

from partlib.common import DataError, PathLike, replace_dir

DONE = "done"  # marker file inside an exported model directory: written last
CONFIG = "config.yaml"


def stage_dir(exp_dir: PathLike, stage: str) -> Path:
    """``<exp>/<stage>``: checkpoints, logs, the exported model and its decodes."""
    return Path(exp_dir) / stage


def model_dir(exp_dir: PathLike, stage: str) -> Path:
    """``<exp>/<stage>/model``: the stage's exported model."""
    return stage_dir(exp_dir, stage) / "model"


def is_exported(model: PathLike) -> bool:
    """Whether an exported model directory is complete."""
    return (Path(model) / DONE).is_file()


def write_exported(out: PathLike, write: Callable[[Path], None]) -> Path:
    """Assemble an exported model folder: ``write(tmp)`` fills a folder next to ``out``, the
    ``done`` marker goes in last, then it replaces ``out`` (readers never see a partial export, and
    at no moment is there no model: :func:`partlib.common.replace_dir`)."""
    out = Path(out)
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    (tmp / DONE).write_text("")
    replace_dir(tmp, out)
    return out


def exported_models(exp_dir: PathLike) -> List[Tuple[str, Path]]:
    """``(stage name, model dir)`` of every exported stage of an experiment, in schedule order
    (the order of the stages in ``<exp>/config.yaml``)."""
    path = Path(exp_dir) / CONFIG
    if not path.is_file():
        raise DataError("no resolved config: the experiment has not been trained", path)
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
        names = [s["name"] for s in cfg["schedule"]["stages"]]
    except (yaml.YAMLError, KeyError, TypeError) as e:
        raise DataError(f"not a resolved experiment config ({e!r})", path) from None
    return [(n, model_dir(exp_dir, n)) for n in names if is_exported(model_dir(exp_dir, n))]
