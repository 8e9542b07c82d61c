"""Published reference numbers (a paper's tables) that RESULTS.md shows above our own.

A reference file — ``partlib/scoring/published/<name>.yaml`` (``part``: the PART paper and the
systems it is read against) or any file of the same grammar — holds:

* ``columns``: each a number of the paper's tables (``FLEURS avg error``) with the decodes of ours
  that measure the same (``asr:fleurs_*_test``: the task, a glob of test-set names and, for a
  cross-lingual task, a glob of the target language), its ablation ``group`` and the paper's
  languages or directions (``keys``);
* ``summary``: the columns shown by default; ``systems``: published rows, each with the key of its
  ``sources`` entry, its averages (``avg``) and per-language values (``per_key``) by column;
* ``ablation``: the paper's cumulative ablation, the change of each group's average against the
  full system per step (negative = worse).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Dict, List, Optional

from partlib import config, tasks
from partlib.common import ConfigError
from partlib.scoring import scorers

PUBLISHED_DIR = Path(__file__).resolve().parent / "published"


def matches(spec: str, task: str, testset: str, tgt_lang: Optional[str]) -> bool:
    """Whether a decode (its task, test-set name as in its dir name, target language) is one of
    ``spec``'s: ``task:set-glob[:tgt-glob]``, a decode spec (:func:`partlib.tasks.parse_decode_spec`)
    with shell globs; the dir name's ``_to_<tgt>`` is not part of the set name."""
    want_task, glob, tgt_glob = tasks.parse_decode_spec(spec)
    if tgt_lang and testset.endswith(f"_to_{tgt_lang}"):
        testset = testset[: -len(f"_to_{tgt_lang}")]
    return (task == want_task and fnmatchcase(testset, glob)
            and (tgt_glob is None or fnmatchcase(tgt_lang or "", tgt_glob)))


@dataclass
class Column:
    """One number of the paper's tables and the decodes of ours that measure it."""

    title: str
    decodes: str
    group: str
    keys: List[str] = field(default_factory=list)

    def validate(self) -> None:
        try:
            tasks.parse_decode_spec(self.decodes)
        except ConfigError as e:
            raise config.Invalid("decodes", str(e)) from None

    @property
    def higher_is_better(self) -> bool:
        """The direction of the task's headline metric (BLEU up, error rates down)."""
        scorer = scorers.of_task(tasks.get(tasks.parse_decode_spec(self.decodes)[0]))
        return scorer.higher_is_better[scorer.metrics[0]]


@dataclass
class System:
    """A published row: values by column id (``avg``) and by column id and key (``per_key``)."""

    name: str
    source: str
    params: Optional[str] = None
    avg: Dict[str, float] = field(default_factory=dict)
    per_key: Dict[str, Dict[str, float]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The row label: name and size."""
        return f"{self.name} ({self.params})" if self.params else self.name


@dataclass
class AblationStep:
    """One published ablation step: its description and the change of each group's average."""

    name: str
    delta: Dict[str, float]


@dataclass
class Ablation:
    """The published ablation chain (cumulative steps)."""

    source: str
    steps: List[AblationStep]


@dataclass
class Reference:
    """A reference file (module docstring)."""

    sources: Dict[str, str]
    columns: Dict[str, Column]
    summary: List[str]
    systems: List[System] = field(default_factory=list)
    ablation: Optional[Ablation] = None

    def validate(self) -> None:
        for i, cid in enumerate(self.summary):
            if cid not in self.columns:
                raise config.Invalid(f"summary[{i}]", f"unknown column {cid!r} (columns: {', '.join(self.columns)})")
        for i, s in enumerate(self.systems):
            if s.source not in self.sources:
                raise config.Invalid(f"systems[{i}].source",
                                     f"unknown source {s.source!r} (sources: {', '.join(self.sources)})")
            for what, cids in (("avg", s.avg), ("per_key", s.per_key)):
                for cid in cids:
                    if cid not in self.columns:
                        raise config.Invalid(f"systems[{i}].{what}.{cid}", "unknown column")
        if self.ablation is not None:
            if self.ablation.source not in self.sources:
                raise config.Invalid("ablation.source", f"unknown source {self.ablation.source!r}")
            groups = {c.group for c in self.columns.values()}
            for i, step in enumerate(self.ablation.steps):
                for g in step.delta:
                    if g not in groups:
                        raise config.Invalid(f"ablation.steps[{i}].delta.{g}",
                                             f"unknown group (groups: {', '.join(sorted(groups))})")


def available() -> List[str]:
    """Names of the reference files shipped with partlib."""
    return sorted(p.stem for p in PUBLISHED_DIR.glob("*.yaml"))


def load(name: str) -> Reference:
    """The reference file ``name`` (a shipped one, :func:`available`) or a path to a YAML file."""
    path = Path(name)
    if not path.is_file():
        if name not in available():
            raise ConfigError(f"--paper {name!r}: neither a file nor a shipped reference "
                              f"(shipped: {', '.join(available())})")
        path = PUBLISHED_DIR / f"{name}.yaml"
    return config.load(Reference, path)
