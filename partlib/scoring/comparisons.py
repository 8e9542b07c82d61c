"""RESULTS.md's comparisons with significance: per seed a paired bootstrap of each test set
(:mod:`partlib.scoring.bootstrap`), per task a seed-level sign-flip test
(:mod:`partlib.scoring.significance`)."""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from partlib.common import ConfigError
from partlib.scoring import bootstrap, scorers, significance
from partlib.scoring.experiments import Decode, column_id, primary


def _groups(keys: Sequence[Tuple[str, str]], decodes: Mapping[Tuple[str, str], Decode]) -> Dict[str, List[Tuple[str, str]]]:
    """(testset, task) keys grouped for the seed-level test: by task, and translation by target
    language where a target has several test sets (the rest pooled, e.g. en->X)."""
    tgt = {k: decodes[k].scores.tgt_lang for k in keys}
    per_tgt: Dict[Tuple[str, Optional[str]], List[Tuple[str, str]]] = {}
    for k in keys:
        per_tgt.setdefault((k[1], tgt[k]), []).append(k)
    out: Dict[str, List[Tuple[str, str]]] = {}
    for (task, t), ks in per_tgt.items():
        if t is None:
            out.setdefault(task, []).extend(ks)
        elif len(ks) > 1:
            out.setdefault(f"{task} into {t}", []).extend(ks)
        else:
            rest = sorted(x for (tk, x), v in per_tgt.items() if tk == task and x is not None and len(v) == 1)
            out.setdefault(f"{task} into {', '.join(rest)}", []).extend(ks)
    return out


def compare_section(pairs: Sequence[str], decodes: Sequence[Decode], systems: Mapping[str, str],
                    n_bootstrap: int, alpha: float = 0.05) -> List[str]:
    """The comparisons of ``A:B`` pairs of ``<system>/<stage>`` columns and which are significant."""
    by_key: Dict[Tuple[str, str, str, str, Optional[int]], Decode] = {
        (d.system, d.stage, d.testset, d.task, d.seed): d for d in decodes}
    out = ["## Comparisons with significance", "",
           f"diff = A - B of each test set's headline metric (WER/CER: lower is better; BLEU, accuracy: "
           f"higher is better). Per seed: paired bootstrap over the utterances ({n_bootstrap} resamples, "
           f"seed 0), `*` where p < {alpha}. Seed level: paired sign-flip test over every (seed, test set) "
           f"pair of a task (exact over all sign assignments up to 16 pairs), two-sided.", ""]
    statements: List[str] = []
    for pair in pairs:
        if ":" not in pair:
            raise ConfigError(f"--compare {pair!r}: expected A:B")
        a_spec, b_spec = pair.split(":", 1)
        col_a, col_b = column_id(a_spec, systems), column_id(b_spec, systems)
        cells_a = {(ts, tk, sd) for (s, st, ts, tk, sd) in by_key if (s, st) == col_a}
        cells_b = {(ts, tk, sd) for (s, st, ts, tk, sd) in by_key if (s, st) == col_b}
        common = cells_a & cells_b
        if not common:
            raise ConfigError(f"--compare {pair!r}: no test set decoded by both systems (with the same seed)")
        keys = sorted({(ts, tk) for ts, tk, _ in common})
        seeds = sorted({sd for _, _, sd in common}, key=lambda s: (s is not None, s or 0))
        first = {k: by_key[(*col_a, *k, next(sd for sd in seeds if (*k, sd) in common))] for k in keys}
        head = ["test set", "task", "metric"] + [f"seed {s}" if s is not None else "diff (p)" for s in seeds]
        out += [f"### {a_spec} (A) vs {b_spec} (B)", "", "Per-seed paired bootstrap: diff (p-value).", "",
                "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        diffs: Dict[Tuple[str, str], List[float]] = {}
        n_sig = {True: 0, False: 0}
        for k in keys:
            metric = primary(first[k])[0]
            row = [k[0], k[1], metric.upper()]
            for sd in seeds:
                if (*k, sd) not in common:
                    row.append("-")
                    continue
                da, db = by_key[(*col_a, *k, sd)], by_key[(*col_b, *k, sd)]
                res = bootstrap.compare_dirs(da.path, db.path, n_bootstrap=n_bootstrap, seed=0)
                r = res["sets"]["overall"].get(metric)
                va, vb = primary(da)[1], primary(db)[1]
                if va is not None and vb is not None:
                    diffs.setdefault(k, []).append(va - vb)
                if r is None or r["diff"] is None:
                    row.append("n/a")
                    continue
                sig = r["p_value"] < alpha
                if sig:
                    n_sig[(r["diff"] < 0) != scorers.higher_is_better(metric)] += 1
                row.append(f"{r['diff']:+.2f} ({r['p_value']:.3f}){'*' if sig else ''}")
            out.append("| " + " | ".join(row) + " |")
        n_cells = sum(len(v) for v in diffs.values())
        out += ["", f"Per-seed bootstrap: A significantly better in {n_sig[True]}, B significantly better in "
                f"{n_sig[False]} of {n_cells} (seed, test set) cells.", "",
                "Seed-level sign-flip test per task (mean of A - B over the pairs):", "",
                "| task | metric | pairs | mean diff | A better | B better | p-value | significant |",
                "|---|---|---|---|---|---|---|---|"]
        for group, ks in _groups(keys, first).items():
            d = [x for k in ks for x in diffs.get(k, [])]
            metrics = sorted({primary(first[k])[0] for k in ks})
            lower = not scorers.higher_is_better(metrics[0])
            t = significance.sign_flip_test(d)
            if t["p_value"] is None:
                continue
            better_a = t["negative"] if lower else t["positive"]
            better_b = t["positive"] if lower else t["negative"]
            sig = t["p_value"] < alpha
            out.append(f"| {group} | {'/'.join(m.upper() for m in metrics)} | {t['n']} | {t['mean_diff']:+.2f} | "
                       f"{better_a} | {better_b} | {t['p_value']:.4f} | {'yes' if sig else 'no'} |")
            winner = (a_spec if (t["mean_diff"] < 0) == lower else b_spec) if t["mean_diff"] else None
            statements.append(
                f"- {group}: {a_spec} vs {b_spec}: "
                + (f"{winner} is better by {abs(t['mean_diff']):.2f} on average over {t['n']} (seed, test set) "
                   f"pairs, p = {t['p_value']:.4f}: " if winner else f"no difference over {t['n']} pairs: ")
                + ("significant." if sig else f"not significant at {alpha}."))
        out.append("")
    return out + ["### Which differences are significant", "", *statements, ""]

