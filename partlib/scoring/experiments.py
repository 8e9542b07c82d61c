"""The experiment trees RESULTS.md reads: their scored decode dirs, and columns of systems.

Layout (the recipes write it)::

    exp/<tag>/env.json                                  # partlib.provenance.write_env_json at training time
    exp/<tag>/config.yaml                               # resolved config (optional)
    exp/<tag>/<stage>/decode_<testset>_<task>/scores.json
    exp/<tag>/decode_<testset>_<task>/scores.json       # the final model: stage "final"

``<tag>`` names the system; with ``seeds``, tags ``<system>_seed<k>`` are runs of one system.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

from partlib import tasks
from partlib.common import ConfigError, DataError, PathLike
from partlib.scoring.scores import Scores, read_scores

FINAL_STAGE = "final"
_SEED = re.compile(r"^(?P<system>.+)_seed(?P<seed>\d+)$")


@dataclass
class Decode:
    """One scored decode dir."""

    tag: str
    system: str
    seed: Optional[int]
    stage: str
    testset: str
    task: str
    path: Path
    scores: Scores
    options: Dict = field(default_factory=dict)  # decode.json (decoding options and statistics)


@dataclass
class Experiment:
    """One experiment dir with its decodes."""

    tag: str
    path: Path
    env: Optional[Dict]
    config_sha: Optional[str]
    decodes: List[Decode] = field(default_factory=list)


def _split_tag(tag: str, seeds: bool) -> Tuple[str, Optional[int]]:
    m = _SEED.match(tag) if seeds else None
    return (m.group("system"), int(m.group("seed"))) if m else (tag, None)


def load_experiment(exp_dir: PathLike, seeds: bool = False) -> Experiment:
    """Find the scored decode dirs of an experiment (layout in the module docstring)."""
    path = Path(exp_dir)
    if not path.is_dir():
        raise DataError("experiment directory not found", path)
    tag = path.resolve().name
    system, seed = _split_tag(tag, seeds)
    env = None
    if (path / "env.json").is_file():
        env = json.loads((path / "env.json").read_text(encoding="utf-8"))
    sha = None
    if (path / "config.yaml").is_file():
        sha = hashlib.sha256((path / "config.yaml").read_bytes()).hexdigest()[:12]
    exp = Experiment(tag=tag, path=path, env=env, config_sha=sha)
    candidates = [(FINAL_STAGE, d) for d in path.glob("decode_*")]
    candidates += [(d.parent.name, d) for d in path.glob("*/decode_*")]
    for stage, d in sorted(candidates, key=lambda sd: (sd[0], sd[1].name)):
        parsed = tasks.parse_decode_dir(d.name)
        if not parsed or not (d / "scores.json").is_file():
            continue
        scores = read_scores(d / "scores.json")
        options = {}
        if (d / "decode.json").is_file():
            try:
                options = json.loads((d / "decode.json").read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise DataError(f"invalid JSON ({e})", d / "decode.json") from None
        exp.decodes.append(Decode(tag, system, seed, stage, parsed[0], parsed[1], d, scores, options))
    return exp


def stage_key(stage: str) -> Tuple[bool, str]:
    """Sort key of stage names: by name, ``final`` last."""
    return (stage == FINAL_STAGE, stage)


def column_id(spec: str, systems: Mapping[str, str], what: str = "--compare side") -> Tuple[str, str]:
    """``system/stage`` (system by tag or by its label) -> column key; ``what`` names the option."""
    if "/" not in spec:
        raise ConfigError(f"{what} {spec!r}: expected <system>/<stage>, e.g. base/s1_adapter")
    system, stage = spec.rsplit("/", 1)
    by_label = {v: k for k, v in systems.items()}
    return by_label.get(system, system), stage


def primary(d: Decode) -> Tuple[str, Optional[float]]:
    """The headline metric of a decode's ``overall`` set and its value."""
    overall = d.scores.overall
    return overall.primary, overall.value()

