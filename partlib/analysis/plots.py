"""PNG plots of the representation analysis (matplotlib, non-interactive Agg backend).

Each function draws one self-explanatory figure (title, axis labels, legend or colour bar) and
writes it atomically to ``path``.
"""
from __future__ import annotations

import io
from typing import List, Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen first)
import numpy as np  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

from partlib.common import ConfigError, PathLike, atomic_write  # noqa: E402


def _save(fig: "plt.Figure", path: PathLike) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def language_heatmap(
    matrix: np.ndarray,
    labels: Sequence[str],
    title: str,
    path: PathLike,
    *,
    value_label: str = "cosine similarity",
    row_label: str = "language",
    col_label: str = "language",
) -> None:
    """Heatmap of a square matrix over languages (or other labels, e.g. (task, language) groups),
    values in [-1, 1] or [0, 1], annotated up to 12 labels.

    NaN cells (e.g. a diagonal that has no meaning) are left blank.
    """
    matrix = np.asarray(matrix, dtype=float)
    n = len(labels)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.8 + 0.6 * n), max(4.0, 1.2 + 0.6 * n)))
    vmin = min(0.0, float(np.nanmin(matrix)))
    im = ax.imshow(np.ma.masked_invalid(matrix), cmap="viridis", vmin=vmin, vmax=1.0)
    long_labels = max((len(str(x)) for x in labels), default=0) > 3  # e.g. "s2tt:de->en" groups
    ax.set_xticks(range(n), labels, rotation=90 if long_labels else 0)
    ax.set_yticks(range(n), labels)
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    if n <= 12:
        for i in range(n):
            for j in range(n):
                if not np.isnan(matrix[i, j]):
                    ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if matrix[i, j] < (vmin + 1.0) / 2 else "black")
    fig.colorbar(im, ax=ax, label=value_label)
    ax.set_title(title, fontsize=10)
    _save(fig, path)


def projection_2d(
    X: np.ndarray,
    langs: Sequence[str],
    method: str,
    title: str,
    path: PathLike,
    *,
    max_points: int = 1500,
    seed: int = 0,
) -> None:
    """Scatter plot of a 2-D projection (``pca`` or ``tsne``) of ``X``, one colour per language.

    Rows are randomly subsampled (fixed seed) to ``max_points`` so t-SNE stays fast.
    """
    X = np.asarray(X, dtype=np.float64)
    langs = np.asarray(list(langs), dtype=object)
    idx = np.arange(len(X))
    if len(X) > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(len(X), max_points, replace=False))
    X, langs = X[idx], langs[idx]
    if method == "pca":
        Y = PCA(n_components=2, random_state=seed).fit_transform(X)
        axis = "principal component"
    elif method == "tsne":
        X50 = PCA(n_components=min(50, *X.shape), random_state=seed).fit_transform(X)
        perplexity = float(max(2.0, min(30.0, (len(X) - 1) / 3)))
        Y = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(X50)
        axis = "t-SNE dimension"
    else:
        raise ConfigError(f"unknown projection method {method!r} (pca or tsne)")
    fig, ax = plt.subplots(figsize=(6, 5))
    for lang in sorted(set(langs)):
        m = langs == lang
        ax.scatter(Y[m, 0], Y[m, 1], s=10, alpha=0.7, label=lang)
    ax.set_xlabel(f"{axis} 1")
    ax.set_ylabel(f"{axis} 2")
    ax.legend(title="language", fontsize=8, markerscale=1.5, loc="best")
    ax.set_title(title)
    _save(fig, path)


def grouped_bars(
    values: Mapping[str, Mapping[str, float]],
    title: str,
    ylabel: str,
    path: PathLike,
    *,
    reference: Optional[Mapping[str, float]] = None,
    ylim: Optional[tuple] = (0.0, 1.05),
) -> None:
    """Grouped bar chart: one group per x label (e.g. a representation point), one bar per series.

    ``values[series][x]`` is the bar height (missing or NaN values are left out). ``reference``
    draws labelled horizontal dashed lines (e.g. chance level).
    """
    series: List[str] = list(values)
    xs: List[str] = []
    for s in series:
        xs += [x for x in values[s] if x not in xs]
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(xs) * max(1, len(series)) + 2), 4))
    for k, s in enumerate(series):
        pos = [i + (k - (len(series) - 1) / 2) * width for i in range(len(xs))]
        h = [values[s].get(x, float("nan")) for x in xs]
        ax.bar(pos, np.nan_to_num(h, nan=0.0), width=width, label=s)
    for k, (name, y) in enumerate(sorted((reference or {}).items())):
        ax.axhline(y, linestyle="--", color=f"C{(len(series) + k) % 10}", linewidth=1, label=name)
    ax.set_xticks(range(len(xs)), xs, rotation=30 if len(xs) > 4 else 0, ha="right" if len(xs) > 4 else "center")
    ax.set_xlabel("representation point")
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title, fontsize=10)
    _save(fig, path)

