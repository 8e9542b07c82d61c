"""The analysis report: all metrics of all models and points -> metrics.json, plots/, analysis.md.

:func:`compute_metrics` is pure (vectors in, nested dict out); :func:`run_analysis` extracts the
vectors of every model on the data dirs, computes the metrics, draws the plots and writes
``metrics.json`` (sorted keys, rounded floats: byte-identical on re-runs) and ``analysis.md``.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from partlib.analysis import metrics as M
from partlib.analysis import plots
from partlib.analysis.extract import Extractor, Point, Reps, load_utterances
from partlib.analysis.gradsim import StageProbe, stage_gradient_similarity
from partlib.common import ConfigError, DataError, PathLike, atomic_write, get_logger
from partlib.data.datadir import DataDir

log = get_logger(__name__)
MEL = Point("mel")


def _point_metrics(
    X: np.ndarray,
    text: Optional[np.ndarray],
    langs: Sequence[str],
    speakers: Sequence[str],
    sentences: Optional[Sequence[str]],
    utts: Sequence[str],
    n_folds: int,
    seed: int,
) -> Dict[str, object]:
    """All single-representation metrics of one point of one model."""
    out: Dict[str, object] = {}
    languages = sorted(set(langs))
    if len(languages) >= 2:
        try:
            probe = M.language_probe(X, langs, speakers, sentences, n_folds=n_folds, seed=seed)
            shuffled = M.language_probe(X, langs, speakers, sentences, n_folds=n_folds, seed=seed,
                                        shuffle_labels=True)
            probe["shuffled_accuracy"] = shuffled["accuracy"]
        except M.NoDisjointFolds as e:
            probe = {"skipped": str(e)}
        out["probe"] = probe
        names, matrix = M.centroid_similarity(X, langs)
        out["centroid_similarity"] = {"languages": names, "matrix": matrix.tolist()}
        out["separability"] = M.separability(X, langs, seed=seed)
        if sentences is not None:
            pairs = M.cross_lingual_retrieval(X, langs, sentences)
            out["cross_lingual_retrieval"] = {
                "pairs": pairs, "mean_top1": M.mean_of(pairs), "mean_chance": M.mean_of(pairs, "chance")}
    if text is not None:
        keys = sentences if sentences is not None else utts
        pairs = M.speech_text_retrieval(X, text, langs, keys)
        out["speech_text_retrieval"] = {
            "pairs": pairs, "mean_top1": M.mean_of(pairs), "mean_chance": M.mean_of(pairs, "chance")}
    return out


def cka_pairs(names: Sequence[str]) -> List[Tuple[str, str]]:
    """Model pairs compared by CKA: each model with the previous one and with the first one."""
    pairs: List[Tuple[str, str]] = []
    for i in range(1, len(names)):
        for a in (names[i - 1], names[0]):
            if (a, names[i]) not in pairs:
                pairs.append((a, names[i]))
    return pairs


def compute_metrics(
    reps: Mapping[str, Mapping[str, Reps]],
    utts: Sequence[str],
    langs: Sequence[str],
    speakers: Sequence[str],
    sentences: Optional[Sequence[str]] = None,
    *,
    n_folds: int = 3,
    seed: int = 0,
) -> Dict[str, object]:
    """Metrics of ``reps[model][point]`` (rows aligned with ``utts``) for every model and point.

    Returns ``{"models": {model: {point: {...}}}, "cka": {"A vs B": {point: value}}, ...}``
    (see docs/analysis.md for every field).
    """
    memo: Dict[str, Dict[str, object]] = {}  # the mel floor is the same array for every model
    models: Dict[str, Dict[str, object]] = {}
    for name, per_point in reps.items():
        models[name] = {}
        for point, r in per_point.items():
            if len(r.speech) != len(utts):
                raise ValueError(f"{name} {point}: {len(r.speech)} vectors for {len(utts)} utterances")
            key = hashlib.sha1(r.speech.tobytes() + (b"" if r.text is None else r.text.tobytes())).hexdigest()
            if key not in memo:
                memo[key] = _point_metrics(r.speech, r.text, langs, speakers, sentences, utts, n_folds, seed)
            models[name][point] = memo[key]
    cka: Dict[str, Dict[str, float]] = {}
    for a, b in cka_pairs(list(reps)):
        common = [p for p in reps[a] if p in reps[b]]
        cka[f"{a} vs {b}"] = {p: M.linear_cka(reps[a][p].speech, reps[b][p].speech) for p in common}
    return {
        "n_utts": len(utts),
        "languages": sorted(set(langs)),
        "n_speakers": len(set(speakers)),
        "parallel": sentences is not None,
        "models": models,
        "cka": cka,
    }


def _clean(obj):
    """JSON-ready copy: floats rounded to 6 decimals, NaN -> null, numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(obj) else round(float(obj), 6)
    return obj


def metrics_json(metrics: Mapping[str, object]) -> str:
    """Deterministic JSON text of the metrics (sorted keys, rounded floats)."""
    return json.dumps(_clean(metrics), sort_keys=True, indent=1, ensure_ascii=False) + "\n"


# ------------------------------------------------------------------------------------------
# Plots and markdown
# ------------------------------------------------------------------------------------------
def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def _get(d: Mapping, *keys, default=float("nan")):
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return default
        d = d[k]
    return d


def draw_plots(
    metrics: Mapping[str, object],
    reps: Mapping[str, Mapping[str, Reps]],
    langs: Sequence[str],
    plot_dir: PathLike,
    *,
    projections: Sequence[str] = ("pca", "tsne"),
    seed: int = 0,
) -> Dict[str, List[str]]:
    """Draw every plot into ``plot_dir``; returns ``{section: [file names]}`` for the markdown."""
    plot_dir = Path(plot_dir)
    files: Dict[str, List[str]] = {"summary": [], "centroids": [], "retrieval": [], "projections": [], "gradsim": []}
    models = metrics["models"]

    def bars(field: Tuple[str, ...], fname: str, title: str, ylabel: str, ref: Dict[str, float],
             ylim: Tuple[float, float] = (0.0, 1.05)) -> None:
        values = {m: {p: _get(models[m][p], *field) for p in models[m]
                      if not math.isnan(_get(models[m][p], *field))} for m in models}
        if any(values.values()):
            plots.grouped_bars(values, title, ylabel, plot_dir / fname, ylim=ylim,
                               reference={k: v for k, v in ref.items() if not math.isnan(v)})
            files["summary"].append(fname)

    def mean_field(*field: str) -> float:
        vals = [_get(models[m][p], *field) for m in models for p in models[m]]
        vals = [v for v in vals if not math.isnan(v)]
        return float(np.mean(vals)) if vals else float("nan")

    bars(("probe", "accuracy"), "probe.png", "Language-ID probe accuracy (speaker/sentence-disjoint CV)",
         "accuracy", {"shuffled labels (mean)": mean_field("probe", "shuffled_accuracy"),
                      "majority class": mean_field("probe", "majority")})
    bars(("cross_lingual_retrieval", "mean_top1"), "cross_lingual_retrieval.png",
         "Cross-lingual retrieval of the parallel utterance (mean over language pairs)", "top-1 accuracy",
         {"chance": mean_field("cross_lingual_retrieval", "mean_chance")})
    bars(("speech_text_retrieval", "mean_top1"), "speech_text_retrieval.png",
         "Speech<->text retrieval within a language (mean over languages and directions)", "top-1 accuracy",
         {"chance": mean_field("speech_text_retrieval", "mean_chance")})
    bars(("separability", "silhouette"), "silhouette.png", "Language separability (silhouette, cosine)",
         "silhouette", {}, ylim=(-1.0, 1.0))
    if metrics["cka"]:
        plots.grouped_bars(metrics["cka"], "Linear CKA between models (same utterances)", "CKA",
                           plot_dir / "cka.png")
        files["summary"].append("cka.png")
    for m in models:
        for p in models[m]:
            cs = models[m][p].get("centroid_similarity")
            tag = _slug(f"{m}_{Point.parse(p).slug}")
            if cs:
                fname = f"centroids_{tag}.png"
                plots.language_heatmap(np.array(cs["matrix"]), cs["languages"],
                                       f"Language-centroid cosine similarity: {m}, {p}", plot_dir / fname)
                files["centroids"].append(fname)
            xl = models[m][p].get("cross_lingual_retrieval")
            if xl:
                names = sorted(set(langs))
                top1 = np.array([[_get(xl["pairs"], f"{a}->{b}", "top1") for b in names] for a in names],
                                dtype=float)
                fname = f"retrieval_{tag}.png"
                plots.language_heatmap(top1, names, f"Cross-lingual retrieval top-1: {m}, {p}", plot_dir / fname,
                                       value_label="top-1 accuracy", row_label="query language",
                                       col_label="candidate language")
                files["retrieval"].append(fname)
            for method in projections:
                fname = f"{method}_{tag}.png"
                plots.projection_2d(reps[m][p].speech, langs, method,
                                    f"{method.upper() if method == 'pca' else 't-SNE'} of utterance vectors: {m}, {p}",
                                    plot_dir / fname, seed=seed)
                files["projections"].append(fname)
    for m, gs in metrics.get("gradient_similarity", {}).items():
        matrix = np.array(gs.get("matrix", []), dtype=float)
        if np.isfinite(matrix).any():
            fname = f"gradsim_{_slug(m)}.png"
            plots.language_heatmap(matrix, gs["groups"], f"Cosine similarity of loss gradients: {m}",
                                   plot_dir / fname, value_label="cosine similarity of gradients",
                                   row_label="group (task:language)", col_label="group (task:language)")
            files["gradsim"].append(fname)
    return files


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _fmt(v, chance=None) -> str:
    if _missing(v):
        return "–"
    return f"{v:.3f}" if _missing(chance) else f"{v:.3f} ({chance:.3f})"


def render_markdown(metrics: Mapping[str, object], files: Mapping[str, List[str]], plot_subdir: str = "plots") -> str:
    """``analysis.md``: summary table, CKA table and relative links to the plots."""
    models = metrics["models"]
    lines = [
        "# Representation analysis",
        "",
        f"{metrics['n_utts']} utterances, {metrics['n_speakers']} speakers, languages: "
        f"{', '.join(metrics['languages'])}; data: {', '.join(metrics.get('data_dirs', []))}.",
        "Metric definitions: `docs/analysis.md`. Numbers in parentheses are chance levels.",
        "",
    ]
    if metrics.get("model_dirs"):
        lines += ["Models: " + ", ".join(f"{n} = `{d}`" for n, d in metrics["model_dirs"].items()) + ".", ""]
    lines += [
        "| model | point | LID probe | shuffled labels | majority | cross-lingual top-1 | speech→text/text→speech top-1 | silhouette | between-language var. |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    disjoint = set()
    for m in models:
        for p, r in models[m].items():
            disjoint.add(_get(r, "probe", "speaker_disjoint", default=None))
            lines.append("| " + " | ".join([
                m, f"`{p}`",
                _fmt(_get(r, "probe", "accuracy")), _fmt(_get(r, "probe", "shuffled_accuracy")),
                _fmt(_get(r, "probe", "majority")),
                _fmt(_get(r, "cross_lingual_retrieval", "mean_top1"), _get(r, "cross_lingual_retrieval", "mean_chance")),
                _fmt(_get(r, "speech_text_retrieval", "mean_top1"), _get(r, "speech_text_retrieval", "mean_chance")),
                _fmt(_get(r, "separability", "silhouette")), _fmt(_get(r, "separability", "between_var_fraction")),
            ]) + " |")
    if False in disjoint:
        lines += ["", "Note: some language has a single speaker, so the probe folds are sentence-disjoint "
                      "but not speaker-disjoint (the probe can use speaker identity)."]
    if metrics["cka"]:
        points = []
        for vals in metrics["cka"].values():
            points += [p for p in vals if p not in points]
        lines += ["", "## Linear CKA between models", "",
                  "| models | " + " | ".join(f"`{p}`" for p in points) + " |",
                  "|---|" + "---|" * len(points)]
        for pair, vals in metrics["cka"].items():
            lines.append(f"| {pair} | " + " | ".join(_fmt(vals.get(p)) for p in points) + " |")
    if metrics.get("gradient_similarity"):
        lines += _gradsim_markdown(metrics["gradient_similarity"], files.get("gradsim", []), plot_subdir)
    titles = {"summary": "Summary plots", "centroids": "Language-centroid similarity",
              "retrieval": "Cross-lingual retrieval per language pair",
              "projections": "2-D projections coloured by language"}
    for section in titles:
        if files.get(section):
            lines += ["", f"## {titles[section]}", ""]
            lines += [f"![{Path(f).stem}]({plot_subdir}/{f})" for f in files[section]]
    return "\n".join(lines) + "\n"


def _count(n: int) -> str:
    """``10336`` -> ``10.3k``."""
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def _gradsim_markdown(results: Mapping[str, Mapping], plot_files: Sequence[str], plot_subdir: str) -> List[str]:
    """The gradient-similarity section: summary tables over the stage models, then per model its
    heatmap and group-by-group matrix."""
    done = {m: r for m, r in results.items() if "skipped" not in r}
    tasks_seen: List[str] = []
    for r in done.values():
        tasks_seen += [t for t in r["summary"]["cross_language_by_task"] if t not in tasks_seen]
    header = (["model", "trained parameters", "groups"] + [f"{t}: across languages" for t in tasks_seen]
              + ["same language, across tasks", "across languages"])

    def row(m: str, r: Mapping, s: Mapping, n: int) -> str:
        cells = [m, _count(n), str(len(r["groups"]))]
        cells += [_fmt(s["cross_language_by_task"].get(t)) for t in tasks_seen]
        cells += [_fmt(s["same_language_cross_task"]), _fmt(s["cross_language"])]
        return "| " + " | ".join(cells) + " |"

    lines = ["", "## Gradient similarity between (task, language) groups", "",
             "Cosine similarity of the mean per-token loss gradients of probe groups (the stage's tasks x the "
             "languages of the analysis data, a fixed sample per group), over the parameters the model's own stage "
             "trains (a LoRA stage: the weights its LoRA adapts). Cells: mean cosine over pairs of groups of that "
             "kind. Definitions and how to read them: `docs/analysis.md`.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [row(m, r, r["summary"], r["n_params"]["all"]) for m, r in done.items()]
    adapter = {m: r for m, r in done.items() if "adapter" in r["summary_by_module"]}
    if adapter:
        lines += ["", "Adapter parameters only (trained in every stage: the same parameters in every row):", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += [row(m, r, r["summary_by_module"]["adapter"], r["n_params"]["adapter"]) for m, r in adapter.items()]
    for m, r in results.items():
        lines += ["", f"### {m}", ""]
        if m not in done:
            lines.append(f"Not computed: {r['skipped']}.")
            continue
        parts = [f"{part} {_count(n)}" for part, n in r["n_params"].items() if part != "all"]
        if r.get("lora_layers") is not None and "llm" in r["n_params"]:
            parts[-1] += f" (weights adapted by LoRA in layers {', '.join(map(str, r['lora_layers']))})"
        lines.append(f"Stage `{r['stage']}`; gradients over: {', '.join(parts)}; at most {r['utts_per_group']} "
                     f"examples per group. Split-half: cosine between the gradients of the two halves of a "
                     f"group's examples (how stable a group's own direction is).")
        fname = f"gradsim_{_slug(m)}.png"
        if fname in plot_files:
            lines += ["", f"![{Path(fname).stem}]({plot_subdir}/{fname})"]
        groups = r["groups"]
        lines += ["", "| group | " + " | ".join(groups) + " | split-half |", "|---|" + "---|" * (len(groups) + 1)]
        for g, values in zip(groups, r["matrix"]):
            lines.append(f"| {g} | " + " | ".join(_fmt(v) for v in values)
                         + f" | {_fmt(r['group_stats'][g]['split_half'])} |")
    return lines


# ------------------------------------------------------------------------------------------
# The whole run
# ------------------------------------------------------------------------------------------
def run_analysis(
    models: Sequence[Tuple[str, PathLike]],
    data_dirs: Sequence[PathLike],
    out_dir: PathLike,
    points: Sequence[Point],
    *,
    max_utts: Optional[int] = None,
    n_folds: int = 3,
    seed: int = 0,
    batch_size: int = 8,
    device: str = "cpu",
    cache_dir: Optional[PathLike] = None,
    projections: Sequence[str] = ("pca", "tsne"),
    stages: Optional[Mapping[str, Optional[StageProbe]]] = None,
    gradsim_utts: int = 0,
) -> Dict[str, object]:
    """Extract, measure, plot and write ``metrics.json``, ``analysis.md`` and ``plots/`` in ``out_dir``.

    The input log-mel point is always included (the floor). Utterances of all data dirs are
    pooled (their ids must be unique); ``max_utts`` applies per data dir. With ``gradsim_utts``
    > 0, every model named in ``stages`` also gets the gradient similarity of its stage
    (:mod:`partlib.analysis.gradsim`; ``gradsim_utts`` examples per group, from all the data
    dirs) under ``metrics["gradient_similarity"][name]``; a model whose stage is None is reported
    as skipped.
    """
    out_dir = Path(out_dir)
    names = [n for n, _ in models]
    if len(set(names)) != len(names):
        raise ConfigError(f"model names must be unique, got {names}")
    points = list(points) if MEL in points else [MEL, *points]
    sets = [load_utterances(d, max_utts) for d in data_dirs]
    utts = [u for s in sets for u in s.utts]
    if len(set(utts)) != len(utts):
        raise DataError("the same utterance id occurs in two data dirs", sets[0].data_dir)
    langs = [l for s in sets for l in s.langs]
    speakers = [x for s in sets for x in s.speakers]
    parallel = all(s.sentences is not None for s in sets)
    sentences = [x for s in sets for x in s.sentences] if parallel else None
    reps: Dict[str, Dict[str, Reps]] = {}
    gradsim: Dict[str, Dict[str, object]] = {}
    probe_dirs = [DataDir.load(d) for d in data_dirs] if gradsim_utts and stages else []
    for name, model_dir in models:
        ex = Extractor(model_dir, Path(cache_dir) if cache_dir else out_dir / "cache" / _slug(name),
                       batch_size=batch_size, device=device)
        per_set = [ex.extract(s, points) for s in sets]
        reps[name] = {}
        for p in points:
            texts = [r[p].text for r in per_set]
            reps[name][str(p)] = Reps(
                np.concatenate([r[p].speech for r in per_set]),
                np.concatenate(texts) if all(t is not None for t in texts) else None)
        if probe_dirs and name in stages:  # last: it changes the model (the stage's trainable spec)
            probe = stages[name]
            gradsim[name] = (stage_gradient_similarity(ex.model, probe, probe_dirs, gradsim_utts, seed=seed,
                                                       batch_size=batch_size)
                             if probe is not None else {"skipped": "the model directory does not say which stage "
                                                                   "made it (no stage_config in info.json)"})
    log.info("computing metrics for %d models x %d points", len(models), len(points))
    metrics = compute_metrics(reps, utts, langs, speakers, sentences, n_folds=n_folds, seed=seed)
    metrics["data_dirs"] = [str(d) for d in data_dirs]
    metrics["model_dirs"] = {n: str(d) for n, d in models}
    if gradsim:
        metrics["gradient_similarity"] = gradsim
    files = draw_plots(metrics, reps, langs, out_dir / "plots", projections=projections, seed=seed)
    atomic_write(out_dir / "metrics.json", metrics_json(metrics))
    atomic_write(out_dir / "analysis.md", render_markdown(_clean(metrics), files))
    return metrics
