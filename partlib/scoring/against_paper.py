"""RESULTS.md against a paper (:mod:`partlib.scoring.published`): the paper's summary columns, each
computed from the decodes it names, with the published rows above ours and a per-language table of
each column; and an ablation chain, each ablation's change against the full system beside the
paper's published changes."""
from __future__ import annotations

from dataclasses import replace
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from partlib import tasks
from partlib.common import ConfigError
from partlib.scoring import published
from partlib.scoring.experiments import Decode, column_id
from partlib.scoring.tables import cell, mean_std


def _measure(spec: str, column: Tuple[str, str], decodes: Sequence[Decode]) -> Tuple[Dict[str, List[float]], List[float]]:
    """Our numbers of a paper column (``spec``: its decodes, :func:`published.matches`) for one
    system/stage: per key (language or direction of the scores) the per-seed values, each the mean
    over the matched test sets of that key, and the per-seed unweighted means over the keys (a seed
    that lacks a key of the others is left out of the average)."""
    seeds: Dict[Optional[int], Dict[str, List[float]]] = {}
    for d in decodes:
        if (d.system, d.stage) != column or not published.matches(spec, d.task, d.testset, d.scores.tgt_lang):
            continue
        cells = seeds.setdefault(d.seed, {})
        for key, sec in d.scores.sets.items():
            value = sec.value()
            if key != "overall" and value is not None:
                cells.setdefault(key, []).append(float(value))
    keys = sorted({k for cells in seeds.values() for k in cells})
    order = sorted(seeds, key=lambda s: (s is not None, s or 0))
    per_key = {k: [mean_std(seeds[s][k])[0] for s in order if k in seeds[s]] for k in keys}
    avg = [mean_std([mean_std(seeds[s][k])[0] for k in keys])[0] for s in order if set(keys) <= set(seeds[s])]
    return per_key, avg


def _paper_columns(ref: published.Reference, specs: Sequence[str]) -> List[Tuple[str, published.Column]]:
    """The columns ``ID`` (of the reference file) or ``ID=TASK:GLOB[:TGT]`` (its decodes replaced,
    or a column of ours titled ID) asked for; none asked: the reference's summary columns."""
    out = []
    for spec in specs or ref.summary:
        cid, sep, decodes = spec.partition("=")
        if not sep and cid not in ref.columns:
            raise ConfigError(f"--paper-columns {cid!r}: not a column of the reference (columns: {', '.join(ref.columns)}); "
                              "ID=TASK:GLOB[:TGT] defines one")
        col = ref.columns.get(cid) or published.Column(title=cid, decodes=decodes, group=cid)
        col = replace(col, decodes=decodes) if sep else col
        tasks.parse_decode_spec(col.decodes)
        out.append((cid, col))
    return out


def _published_value(value: Optional[float], sign: bool = False) -> str:
    if value is None:
        return "—"
    return ("+" if sign and value > 0 else "") + str(value)


def _paper_section(ref: published.Reference, cols: Sequence[Tuple[str, published.Column]],
                   ours: Sequence[Tuple[str, str]], decodes: Sequence[Decode], labels: Mapping[str, str],
                   notes: Dict[str, int]) -> List[str]:
    """The paper's summary table and a per-language table of each column: published rows first."""
    measured = {(cid, c): _measure(col.decodes, c, decodes) for cid, col in cols for c in ours}
    union = {cid: sorted({k for c in ours for k in measured[(cid, c)][0]}) for cid, _ in cols}

    def mark(source: str) -> str:
        return f"published [{notes.setdefault(source, len(notes) + 1)}]"

    def ours_label(c: Tuple[str, str]) -> str:
        return f"{labels.get(c[0], c[0])} {c[1]}"

    def ours_avg(cid: str, c: Tuple[str, str]) -> str:
        per_key, avg = measured[(cid, c)]
        if not avg:
            return "—"
        short = f" ({len(per_key)}/{len(union[cid])})" if len(per_key) < len(union[cid]) else ""
        return cell(avg, False) + short

    head = ["system", "source"] + [col.title for _, col in cols]
    out = ["## Against the paper", "",
           "Published rows first (sources below the tables), then ours. A column of ours is the "
           "unweighted mean over the languages (directions) of the test sets its decodes name, each "
           "language the mean over its test sets; cells are the mean over seeds ± sample std; `(k/n)`: "
           "over k of the n languages any system of ours has. Published averages are over the paper's "
           "languages (listed in the per-language tables). —: not measured or not published. Error "
           "rates: lower is better; BLEU: higher is better.", "",
           "Columns: " + "; ".join(f"{col.title} = `{col.decodes}`" for _, col in cols) + ".", "",
           "### Summary", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in ref.systems:
        if any(cid in s.avg for cid, _ in cols):
            out.append("| " + " | ".join([s.label, mark(s.source)] + [_published_value(s.avg.get(cid))
                                                                      for cid, _ in cols]) + " |")
    found = [c for c in ours if any(measured[(cid, c)][0] for cid, _ in cols)]
    for c in found:
        out.append("| " + " | ".join([ours_label(c), "ours"] + [ours_avg(cid, c) for cid, _ in cols]) + " |")
    out += [""] + ([] if found else ["No decode of ours matches these columns (the decodes named above).", ""])
    for cid, col in cols:
        keys = list(col.keys) + [k for k in union[cid] if k not in col.keys]
        rows = [[s.label, mark(s.source)] + [_published_value(s.per_key[cid].get(k)) for k in keys]
                + [_published_value(s.avg.get(cid))] for s in ref.systems if s.per_key.get(cid)]
        rows += [[ours_label(c), "ours"] + [cell(measured[(cid, c)][0][k], False) if k in measured[(cid, c)][0]
                                            else "—" for k in keys] + [ours_avg(cid, c)]
                 for c in ours if measured[(cid, c)][0]]
        if rows:  # published rows with averages only are in the summary
            head = ["system", "source"] + keys + ["avg"]
            out += [f"### {col.title}: per language", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                    *("| " + " | ".join(r) + " |" for r in rows), ""]
    return out


def _ablation_section(spec: str, ref: published.Reference, cols: Sequence[Tuple[str, published.Column]],
                      decodes: Sequence[Decode], labels: Mapping[str, str], notes: Dict[str, int]) -> List[str]:
    """The ablation chain as changes of the paper columns against the reference system, with the
    paper's published changes beside (the k-th system given beside the paper's step k; ``-`` in
    the k-th place: that step was not run)."""
    ref_spec, sep, abl_specs = spec.partition("=")
    if not sep or not ref_spec or not abl_specs or set(abl_specs.split(",")) == {"-"}:
        raise ConfigError(f"--ablation {spec!r}: expected REF=ABL[,ABL...], each <system>/<stage> (or - for a "
                          "step not run)")
    given = [(i, x) for i, x in enumerate(abl_specs.split(",")) if x != "-"]
    specs = [ref_spec] + [x for _, x in given]
    systems = [column_id(x, labels, "--ablation system") for x in specs]
    known = {(d.system, d.stage) for d in decodes}
    for x, c in zip(specs, systems):
        if c not in known:
            raise ConfigError(f"--ablation: no decodes of {x!r}")
    means = {}
    for cid, col in cols:
        for c in systems:
            avg = _measure(col.decodes, c, decodes)[1]
            means[(cid, c)] = mean_std(avg)[0] if avg else None
    steps = ref.ablation.steps if ref.ablation else []
    groups = list(dict.fromkeys(col.group for _, col in cols))
    head = [f"ablation (Δ against {labels.get(systems[0][0], systems[0][0])} {systems[0][1]}: + better, - worse)"]
    head += ["paper's step"] if steps else []
    places = [i for i, _ in given]  # each system's step of the chain
    rows = [[f"{labels.get(c[0], c[0])} {c[1]}"] + ([steps[i].name if i < len(steps) else "—"] if steps else [])
            for i, c in zip(places, systems[1:])]
    for g in groups:
        members = [(cid, col) for cid, col in cols if col.group == g]
        deltas = []
        for cid, col in members:
            head.append(f"{col.title} Δ")
            column = []
            for row, c in zip(rows, systems[1:]):
                r, a = means[(cid, systems[0])], means[(cid, c)]
                d = None if r is None or a is None else (a - r if col.higher_is_better else r - a)
                column.append(d)
                row.append("—" if d is None else f"{d:+.2f}")
            deltas.append(column)
        if len(members) > 1:
            head.append(f"{g} Δ (mean of its columns)")
            for row, ds in zip(rows, zip(*deltas)):
                known_ds = [d for d in ds if d is not None]
                row.append(f"{mean_std(known_ds)[0]:+.2f}" if known_ds else "—")
        if any(g in st.delta for st in steps):
            head.append(f"{g} Δ published [{notes.setdefault(ref.ablation.source, len(notes) + 1)}]")
            for i, row in zip(places, rows):
                row.append(_published_value(steps[i].delta.get(g) if i < len(steps) else None, sign=True))
    return ["## Ablation chain", "",
            "Each system's change against the reference on the columns above: Δ > 0 better, Δ < 0 worse "
            "(error rates: reference - system; BLEU: system - reference), the paper's convention (\"ASR -0.4\"); "
            "ours from the means over seeds. The paper's ablations are cumulative.", "",
            "| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows), ""]


def against_paper(paper: str, paper_columns: Sequence[str], ablation: Optional[str], ours: Sequence[Tuple[str, str]],
                   decodes: Sequence[Decode], labels: Mapping[str, str]) -> List[str]:
    """The sections that read our systems against a reference file (:mod:`partlib.scoring.published`)."""
    ref = published.load(paper)
    cols = _paper_columns(ref, paper_columns)
    notes: Dict[str, int] = {}  # source key -> its footnote number, in order of first use
    lines = _paper_section(ref, cols, ours, decodes, labels, notes)
    if ablation:
        lines += _ablation_section(ablation, ref, cols, decodes, labels, notes)
    if notes:
        lines += ["Sources of the published numbers:", ""] + [f"- [{n}] {ref.sources[k]}" for k, n in notes.items()] + [""]
    return lines

