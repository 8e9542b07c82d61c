"""ESPnet-style ``RESULTS.md`` from the scoring files of one or more experiments.

Experiment layout read here (the recipes write it)::

    exp/<tag>/env.json                                  # partlib.provenance.write_env_json at training
    exp/<tag>/config.yaml                               # resolved config (optional)
    exp/<tag>/<stage>/decode_<testset>_<task>/scores.json
    exp/<tag>/decode_<testset>_<task>/scores.json       # the final model: stage "final"

* ``<tag>`` names the system; with ``--seeds``, tags ``<system>_seed<k>`` are runs of one system
  and their numbers are shown as mean ± sample standard deviation over seeds.
* ``<stage>`` is the alignment stage directory of the checkpoint decoded (e.g. ``s1_adapter``,
  ``s2a_enc_top8``); stages sort by name, ``final`` last.
* ``<task>`` is the last ``_``-separated part of the decode dir name, a scored task of the
  registry (``asr``, ``s2tt``, ``t2tt``, ``lid``, ...; :func:`partlib.tasks.parse_decode_dir`);
  ``<testset>`` is the rest (it may contain ``_``).
* A decode dir holds ``ref``, ``hyp``, ``utt2lang`` (and ``tgt_lang`` for translation) next to the
  scoring outputs, which is what ``--compare`` re-reads for paired bootstrap tests.

Tables: the tables of each task's scorer (:mod:`partlib.scoring.scorers`: WER/CER for error-rate
tasks such as ASR, BLEU and chrF for translation, the wrong-language rate for both, accuracy for
label tasks such as LID), in the task registry's order; rows = test set x language (ASR, LID) or
direction (translation) plus ``all``, columns = system x stage. The best value of each row is bold.
The output depends only on the files read (no clock, no absolute paths), so regenerating it from
the same ``scores.json`` files is byte-identical.

This module puts the sections together; each is built in its own module: the experiment trees
(:mod:`~partlib.scoring.experiments`), the result tables (:mod:`~partlib.scoring.tables`),
comparisons with significance (:mod:`~partlib.scoring.comparisons`), targets
(:mod:`~partlib.scoring.targets`), the run and sections of chosen systems
(:mod:`~partlib.scoring.sections`) and the reading against a paper
(:mod:`~partlib.scoring.against_paper`).

Against a paper (``paper=``, :mod:`partlib.scoring.published`): the paper's summary columns (e.g.
FLEURS and CV15 average error, CoVoST 2 -> en average BLEU), each computed from the decodes it names,
with the published rows above ours and a per-language table of each column; and an ablation chain:
each ablation's change against the full system, beside the paper's published changes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence, Tuple

from partlib.common import ConfigError, DataError, PathLike
from partlib.scoring.against_paper import against_paper
from partlib.scoring.comparisons import compare_section
from partlib.scoring.experiments import load_experiment, stage_key
from partlib.scoring.sections import run_section, section, section_columns
from partlib.scoring.tables import collect, env_section, render_table
from partlib.scoring.targets import targets_section


def build_results(exp_dirs: Sequence[PathLike], *, seeds: bool = False,
                  systems: Optional[Mapping[str, str]] = None, compare: Sequence[str] = (),
                  n_bootstrap: int = 1000, links: Sequence[Tuple[str, str]] = (),
                  run_info: Sequence[Mapping[str, str]] = (),
                  sections: Sequence[Tuple[str, Sequence[str]]] = (), targets: Sequence[str] = (),
                  base_dir: Optional[PathLike] = None, paper: Optional[str] = None,
                  paper_columns: Sequence[str] = (), ablation: Optional[str] = None) -> str:
    """The text of RESULTS.md for the given experiment dirs.

    ``systems`` maps a system name (tag without ``_seed<k>``) to its column label and, if given,
    selects and orders the columns; otherwise systems appear in the order of ``exp_dirs``.
    ``compare`` holds ``A:B`` pairs of ``<system>/<stage>`` for the bootstrap section.
    ``links`` holds ``(title, relative path)`` pairs listed in a final section (e.g. the
    representation analysis reports). ``run_info`` (:func:`parse_time_log` of each command of the
    run) adds a section with the command, wall time and peak memory. ``sections`` holds ``(title,
    specs)``: the systems (``system``) or columns (``system/stage``) named are shown in a section
    of their own (a whole system there leaves the main tables), with the re-decode triggers and
    long-form segmentation statistics of their ``decode.json``. ``targets`` holds
    ``LABEL=SOURCE<=GOAL`` (or ``>=``) goals listed with whether they were reached; SOURCE is
    ``system/stage:task[:tgt_lang[,tgt_lang...]]`` (mean over seeds of the mean over the task's test
    sets, of those target languages) or
    ``file.json:key.path`` (a number in a JSON file, relative to ``base_dir``).
    ``paper`` names a reference file of published numbers (:func:`published.load`: ``part`` or a
    path): an "Against the paper" section, before the result tables, shows its rows above those of
    our main-table columns in its ``paper_columns`` (``ID`` or ``ID=TASK:GLOB[:TGT]``; default: its
    summary columns), each also per language. ``ablation`` (``REF=ABL[,ABL...]`` of
    ``<system>/<stage>``) adds each ablation's change against REF on those columns, the k-th beside
    the paper's step k.
    """
    exps = [load_experiment(d, seeds) for d in exp_dirs]
    decodes = [d for e in exps for d in e.decodes]
    if not decodes:
        raise DataError("no decode_*/scores.json found in " + ", ".join(e.tag for e in exps))
    labels = dict(systems or {})
    order = list(labels) if labels else list(dict.fromkeys(d.system for d in decodes))
    unknown = [s for s in order if s not in {d.system for d in decodes}]
    if unknown:
        raise ConfigError(f"--systems names unknown system(s): {', '.join(unknown)}")
    decodes = [d for d in decodes if d.system in order]
    all_columns = sorted({(d.system, d.stage) for d in decodes},
                         key=lambda c: (order.index(c[0]), stage_key(c[1])))
    own = {spec for _, specs in sections for spec in specs if "/" not in spec}
    columns = [c for c in all_columns if c[0] not in own]
    chosen = [(title, section_columns(title, specs, all_columns)) for title, specs in sections]
    seed_counts = {}
    for d in decodes:
        seed_counts.setdefault((d.system, d.stage, d.testset, d.task), set()).add(d.seed)
    n_seeds = sorted({len(v) for v in seed_counts.values()})
    if (paper_columns or ablation) and not paper:
        raise ConfigError("--paper-columns and --ablation need --paper (the reference file of published numbers)")
    lines = ["# RESULTS", "", *(run_section(run_info) if run_info else []), *env_section(exps)]
    if paper:
        lines += against_paper(paper, paper_columns, ablation, columns, decodes, labels)
    lines += ["## Results", ""]
    if seeds:
        lines += [f"Seeds per cell: {', '.join(map(str, n_seeds))}; cells are mean ± sample std.", ""]
    lines += ["Best value of each row in bold. Error rates and the wrong-language rate: lower is "
              "better; BLEU, chrF: higher is better.", ""]
    for t in collect([d for d in decodes if (d.system, d.stage) in columns]):
        lines += render_table(t, columns, labels)
    for title, cols in chosen:
        lines += section(title, cols, decodes, labels)
    if targets:
        lines += targets_section(targets, decodes, labels, Path(base_dir) if base_dir is not None else None)
    if compare:
        lines += compare_section(compare, decodes, labels, n_bootstrap)
    if links:
        lines += ["## Reports", ""] + [f"- [{title}]({path})" for title, path in links] + [""]
    return "\n".join(lines).rstrip("\n") + "\n"
