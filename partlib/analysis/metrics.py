"""Representation metrics: how language-specific and how shared utterance vectors are.

Every function takes one row per utterance (``X[n, d]``, numpy) plus per-utterance labels
(language, speaker, parallel-sentence id) and returns plain Python numbers / dicts, so the
results serialise to JSON unchanged. Definitions are in ``docs/analysis.md``.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import silhouette_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

Folds = List[Tuple[np.ndarray, np.ndarray]]


class NoDisjointFolds(ValueError):
    """Neither speaker-disjoint nor sentence-disjoint cross-validation is possible."""


def _as_array(labels: Sequence[str]) -> np.ndarray:
    return np.asarray(list(labels), dtype=object)


def _l2_normalise(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, 1e-12)


def center_per_group(X: np.ndarray, groups: Sequence[str]) -> np.ndarray:
    """Subtract from each row the mean of the rows of its group (e.g. its language)."""
    X = np.asarray(X, dtype=np.float64)
    groups = _as_array(groups)
    out = np.empty_like(X)
    for g in np.unique(groups):
        idx = groups == g
        out[idx] = X[idx] - X[idx].mean(axis=0)
    return out


# --------------------------------------------------------------------------------------------
# Language-identification probe
# --------------------------------------------------------------------------------------------
def disjoint_folds(
    langs: Sequence[str],
    speakers: Sequence[str],
    sentences: Optional[Sequence[str]] = None,
    n_folds: int = 3,
    seed: int = 0,
) -> Tuple[Folds, bool]:
    """Cross-validation splits whose train and test sets share no speaker and no sentence.

    Speakers are dealt into ``n_folds`` folds separately within each language (a speaker belongs
    to the language it speaks most), so every fold tests every language that has at least
    ``n_folds`` speakers; sentences are dealt into ``n_folds`` folds. Cell ``(i, j)`` tests the
    utterances of speaker fold ``i`` and sentence fold ``j`` and trains on the utterances of all
    *other* speaker folds and sentence folds, so each utterance is tested exactly once over the
    ``n_folds**2`` cells. Without sentence ids the folds are speaker folds only.

    When some language has fewer than two speakers a speaker-disjoint split cannot both train and
    test that language; the split is then sentence-disjoint only and the returned flag
    ``speaker_disjoint`` is False (the report says so). Raises :class:`NoDisjointFolds` when
    neither constraint can be met.
    """
    langs, speakers = _as_array(langs), _as_array(speakers)
    rng = np.random.default_rng(seed)
    spk_lang: Dict[str, str] = {}
    for spk in sorted(set(speakers)):
        values, counts = np.unique(langs[speakers == spk], return_counts=True)
        spk_lang[spk] = values[np.argmax(counts)]
    per_lang: Dict[str, List[str]] = {}
    for spk, lang in spk_lang.items():
        per_lang.setdefault(lang, []).append(spk)
    speaker_disjoint = all(len(v) >= 2 for v in per_lang.values())
    if speaker_disjoint:
        spk_fold: Dict[str, int] = {}
        offset = 0
        for lang in sorted(per_lang):
            spks = [per_lang[lang][i] for i in rng.permutation(len(per_lang[lang]))]
            for k, spk in enumerate(spks):
                spk_fold[spk] = (k + offset) % n_folds
            offset += len(spks)  # rotate so small languages do not all land in fold 0
        spk_of = np.array([spk_fold[s] for s in speakers])
    if sentences is None:
        if not speaker_disjoint:
            raise NoDisjointFolds("a language has a single speaker and there are no sentence ids (utt2sent): "
                                  "no held-out split avoids speaker overlap")
        cells = [(spk_of == i, spk_of != i) for i in range(n_folds)]
    else:
        sentences = _as_array(sentences)
        uniq = sorted(set(sentences))
        sent_fold = {s: k % n_folds for k, s in enumerate(uniq[i] for i in rng.permutation(len(uniq)))}
        sent_of = np.array([sent_fold[s] for s in sentences])
        if speaker_disjoint:
            cells = [
                ((spk_of == i) & (sent_of == j), (spk_of != i) & (sent_of != j))
                for i in range(n_folds)
                for j in range(n_folds)
            ]
        else:
            cells = [(sent_of == j, sent_of != j) for j in range(n_folds)]
    # cells hold (test mask, train mask); folds are returned as (train indices, test indices)
    folds = [(np.flatnonzero(tr), np.flatnonzero(te)) for te, tr in cells if te.any() and tr.any()]
    return folds, speaker_disjoint


def language_probe(
    X: np.ndarray,
    langs: Sequence[str],
    speakers: Sequence[str],
    sentences: Optional[Sequence[str]] = None,
    *,
    n_folds: int = 3,
    shuffle_labels: bool = False,
    seed: int = 0,
) -> Dict[str, object]:
    """Cross-validated accuracy of a linear language-ID classifier on standardised features.

    Folds come from :func:`disjoint_folds`. With ``shuffle_labels`` the language labels are
    randomly permuted over utterances first (same folds): the chance level of this very probe.
    Returns ``accuracy`` (over all tested utterances), ``n_test``, ``n_cells``,
    ``majority`` (accuracy of always answering the most frequent language) and
    ``speaker_disjoint``.
    """
    X = np.asarray(X, dtype=np.float64)
    y = _as_array(langs)
    folds, speaker_disjoint = disjoint_folds(y, speakers, sentences, n_folds=n_folds, seed=seed)
    if shuffle_labels:
        y = y[np.random.default_rng(seed + 1).permutation(len(y))]
    correct = n_test = 0
    for train, test in folds:
        if len(set(y[train])) < 2:
            pred = np.full(len(test), y[train][0], dtype=object)
        else:
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            clf.fit(X[train], y[train])
            pred = clf.predict(X[test])
        correct += int(np.sum(pred == y[test]))
        n_test += len(test)
    _, counts = np.unique(y, return_counts=True)
    return {
        "accuracy": correct / n_test if n_test else float("nan"),
        "n_test": n_test,
        "n_cells": len(folds),
        "majority": float(counts.max() / counts.sum()),
        "speaker_disjoint": speaker_disjoint,
    }


# --------------------------------------------------------------------------------------------
# Retrieval
# --------------------------------------------------------------------------------------------
def retrieval_top1(
    Q: np.ndarray, C: np.ndarray, q_keys: Sequence[str], c_keys: Sequence[str]
) -> Dict[str, float]:
    """Top-1 accuracy of cosine nearest-neighbour retrieval of a matching candidate.

    Query ``i`` is correct when its nearest candidate (cosine) has the same key (e.g. the same
    parallel-sentence id: any recording of that sentence counts). Queries with no matching
    candidate are skipped. ``chance`` is the mean over the queries of
    (#matching candidates / #candidates): the accuracy of a random pick.
    """
    q_keys, c_keys = _as_array(q_keys), _as_array(c_keys)
    keep = np.isin(q_keys, c_keys)
    if not keep.any() or len(c_keys) == 0:
        return {"top1": float("nan"), "n": 0, "chance": float("nan")}
    Qn, Cn = _l2_normalise(np.asarray(Q, np.float64)[keep]), _l2_normalise(np.asarray(C, np.float64))
    best = np.argmax(Qn @ Cn.T, axis=1)
    qk = q_keys[keep]
    n_match = np.array([np.sum(c_keys == k) for k in qk])
    return {
        "top1": float(np.mean(c_keys[best] == qk)),
        "n": int(keep.sum()),
        "chance": float(np.mean(n_match / len(c_keys))),
    }


def cross_lingual_retrieval(
    X: np.ndarray, langs: Sequence[str], sentences: Sequence[str]
) -> Dict[str, Dict[str, float]]:
    """Retrieval of the parallel utterance in another language, for every ordered language pair.

    Vectors are first centred per language (each language's mean removed), which takes out the
    constant language offset so that the cosine compares content; then for each pair ``a->b``
    each utterance of ``a`` queries all utterances of ``b`` (see :func:`retrieval_top1`).
    Keys of the result are ``"a->b"``.
    """
    langs, sentences = _as_array(langs), _as_array(sentences)
    Xc = center_per_group(X, langs)
    out: Dict[str, Dict[str, float]] = {}
    for a in sorted(set(langs)):
        for b in sorted(set(langs)):
            if a == b:
                continue
            qa, cb = langs == a, langs == b
            out[f"{a}->{b}"] = retrieval_top1(Xc[qa], Xc[cb], sentences[qa], sentences[cb])
    return out


def speech_text_retrieval(
    S: np.ndarray, T: np.ndarray, langs: Sequence[str], keys: Sequence[str]
) -> Dict[str, Dict[str, float]]:
    """Speech<->text retrieval within each language, both directions.

    ``S[i]`` and ``T[i]`` are the speech and text vectors of utterance ``i``; ``keys[i]`` says
    which texts match (the sentence id, or the utterance id). Within a language, speech vectors
    and text vectors are each centred by their own mean (removes the modality offset) before the
    cosine. Keys of the result are ``"<lang>:speech->text"`` and ``"<lang>:text->speech"``.
    """
    langs, keys = _as_array(langs), _as_array(keys)
    out: Dict[str, Dict[str, float]] = {}
    for lang in sorted(set(langs)):
        idx = langs == lang
        s = np.asarray(S, np.float64)[idx]
        t = np.asarray(T, np.float64)[idx]
        s, t = s - s.mean(axis=0), t - t.mean(axis=0)
        out[f"{lang}:speech->text"] = retrieval_top1(s, t, keys[idx], keys[idx])
        out[f"{lang}:text->speech"] = retrieval_top1(t, s, keys[idx], keys[idx])
    return out


def mean_of(results: Dict[str, Dict[str, float]], field: str = "top1") -> float:
    """Unweighted mean of ``field`` over the entries of a retrieval result (NaN entries skipped)."""
    vals = [r[field] for r in results.values() if r.get("n", 0) > 0]
    return float(np.mean(vals)) if vals else float("nan")


# --------------------------------------------------------------------------------------------
# Language geometry
# --------------------------------------------------------------------------------------------
def centroid_similarity(X: np.ndarray, langs: Sequence[str]) -> Tuple[List[str], np.ndarray]:
    """Cosine similarity between the language centroids (mean vector per language, uncentred).

    Returns the sorted language list and the symmetric ``[L, L]`` matrix with unit diagonal.
    """
    langs = _as_array(langs)
    order = sorted(set(langs))
    cent = np.stack([np.asarray(X, np.float64)[langs == l].mean(axis=0) for l in order])
    Cn = _l2_normalise(cent)
    M = Cn @ Cn.T
    M = (M + M.T) / 2  # exact symmetry despite rounding
    np.fill_diagonal(M, 1.0)
    return order, M


def separability(
    X: np.ndarray, langs: Sequence[str], *, max_points: int = 4000, seed: int = 0
) -> Dict[str, float]:
    """How far apart the languages are: between-language variance fraction and silhouette.

    ``between_var_fraction`` = sum_l n_l ||mu_l - mu||^2 / sum_i ||x_i - mu||^2 (in [0, 1]: 0 when
    all language means coincide, 1 when every utterance sits on its language mean).
    ``silhouette`` = mean silhouette coefficient of the language labels under cosine distance on
    globally centred vectors (in [-1, 1]; a random subsample of ``max_points`` when larger).
    """
    X = np.asarray(X, np.float64)
    langs = _as_array(langs)
    mu = X.mean(axis=0)
    total = float(np.sum((X - mu) ** 2))
    between = sum(
        float(np.sum(langs == l) * np.sum((X[langs == l].mean(axis=0) - mu) ** 2))
        for l in set(langs)
    )
    out = {"between_var_fraction": between / total if total > 0 else 0.0}
    if len(set(langs)) >= 2:
        idx = np.arange(len(X))
        if len(X) > max_points:
            idx = np.sort(np.random.default_rng(seed).choice(len(X), max_points, replace=False))
        out["silhouette"] = float(silhouette_score(X[idx] - mu, list(langs[idx]), metric="cosine"))
    else:
        out["silhouette"] = float("nan")
    return out


def linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Linear centred kernel alignment between two representations of the same utterances.

    CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) with column-centred ``Xc``, ``Yc``;
    invariant to orthogonal transforms and isotropic scaling, 1 for identical representations.
    """
    Xc = np.asarray(X, np.float64) - np.mean(X, axis=0)
    Yc = np.asarray(Y, np.float64) - np.mean(Y, axis=0)
    if len(Xc) != len(Yc):
        raise ValueError(f"CKA needs the same utterances: {len(Xc)} vs {len(Yc)} rows")
    num = np.linalg.norm(Yc.T @ Xc) ** 2
    den = np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc)
    return float(num / den) if den > 0 else float("nan")
