"""Representation metrics on constructed data whose answers are known."""
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, cross_val_score

from partlib.analysis import metrics as M


def corpus(n_langs=3, n_spk=4, n_sent=8):
    """Parallel design: every speaker of every language reads every sentence once."""
    langs, spks, sents = [], [], []
    for l in range(n_langs):
        for s in range(n_spk):
            for k in range(n_sent):
                langs.append(f"l{l}")
                spks.append(f"l{l}s{s}")
                sents.append(f"sent{k}")
    return np.array(langs), np.array(spks), np.array(sents)


def test_folds_are_speaker_and_sentence_disjoint_and_test_each_utterance_once():
    langs, spks, sents = corpus()
    folds, speaker_disjoint = M.disjoint_folds(langs, spks, sents, n_folds=3, seed=0)
    assert speaker_disjoint
    tested = np.concatenate([te for _, te in folds])
    assert sorted(tested) == list(range(len(langs)))
    for train, test in folds:
        assert not set(spks[train]) & set(spks[test])
        assert not set(sents[train]) & set(sents[test])
        assert set(langs[test]) <= set(langs[train])  # every tested language is also trained


def test_folds_fall_back_to_sentence_disjoint_with_one_speaker_per_language():
    langs, spks, sents = corpus(n_spk=1)
    folds, speaker_disjoint = M.disjoint_folds(langs, spks, sents, n_folds=3)
    assert not speaker_disjoint
    for train, test in folds:
        assert not set(sents[train]) & set(sents[test])
    with pytest.raises(M.NoDisjointFolds):
        M.disjoint_folds(langs, spks, None)


def test_probe_separable_languages_is_perfect_and_shuffled_is_chance():
    langs, spks, sents = corpus(n_langs=3, n_spk=4, n_sent=12)
    rng = np.random.default_rng(0)
    offsets = {l: rng.normal(size=16) * 10 for l in set(langs)}
    X = np.stack([offsets[l] for l in langs]) + rng.normal(size=(len(langs), 16))
    res = M.language_probe(X, langs, spks, sents)
    assert res["accuracy"] == 1.0
    assert res["n_test"] == len(langs)
    assert res["majority"] == pytest.approx(1 / 3)
    shuffled = M.language_probe(X, langs, spks, sents, shuffle_labels=True)
    assert abs(shuffled["accuracy"] - 1 / 3) < 0.15


def test_probe_cannot_use_speaker_identity():
    # Each speaker has its own random vector and nothing else: language is only knowable through
    # the speaker, so speaker-disjoint folds must give chance, not the leak's 1.0.
    langs, spks, sents = corpus(n_langs=2, n_spk=60, n_sent=2)
    rng = np.random.default_rng(1)
    spk_vec = {s: rng.normal(size=256) * 5 for s in sorted(set(spks))}
    X = np.stack([spk_vec[s] for s in spks]) + 0.1 * rng.normal(size=(len(spks), 256))
    assert M.language_probe(X, langs, spks, sents)["accuracy"] < 0.65
    # the same probe on folds that share speakers does see the leak
    cv = KFold(3, shuffle=True, random_state=0)
    leaky = cross_val_score(LogisticRegression(max_iter=2000), X, langs, cv=cv).mean()
    assert leaky > 0.8


def test_cross_lingual_retrieval_identical_is_perfect_and_random_is_chance():
    rng = np.random.default_rng(0)
    n = 200
    langs = np.array(["de"] * n + ["en"] * n)
    sents = np.array([f"s{k}" for k in range(n)] * 2)
    content = rng.normal(size=(n, 32))
    X = np.concatenate([content + 5.0, content - 3.0])  # same content, different language offsets
    res = M.cross_lingual_retrieval(X, langs, sents)
    assert set(res) == {"de->en", "en->de"}
    assert all(r["top1"] == 1.0 and r["n"] == n for r in res.values())
    assert res["de->en"]["chance"] == pytest.approx(1 / n)
    rand = M.cross_lingual_retrieval(rng.normal(size=(2 * n, 32)), langs, sents)
    assert all(r["top1"] < 0.03 for r in rand.values())
    assert M.mean_of(res) == 1.0


def test_retrieval_counts_any_recording_of_the_sentence_and_skips_unmatched_queries():
    Q = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    C = np.array([[0.0, 1.0], [1.0, 0.1], [0.9, 0.0]])
    res = M.retrieval_top1(Q, C, ["a", "b", "zzz"], ["b", "a", "a"])
    assert res["n"] == 2 and res["top1"] == 1.0
    assert res["chance"] == pytest.approx((2 / 3 + 1 / 3) / 2)


def test_speech_text_retrieval():
    rng = np.random.default_rng(0)
    n = 60
    langs = np.array(["de"] * n + ["fr"] * n)
    keys = np.array([f"u{k}" for k in range(2 * n)])
    S = rng.normal(size=(2 * n, 24))
    res = M.speech_text_retrieval(S, S + 0.01 * rng.normal(size=S.shape) + 7.0, langs, keys)
    assert set(res) == {"de:speech->text", "de:text->speech", "fr:speech->text", "fr:text->speech"}
    assert all(r["top1"] == 1.0 for r in res.values())
    rand = M.speech_text_retrieval(S, rng.normal(size=S.shape), langs, keys)
    assert M.mean_of(rand) < 0.1
    assert M.mean_of(rand, "chance") == pytest.approx(1 / n)


def test_centroid_similarity_symmetric_unit_diagonal_known_values():
    X = np.array([[1.0, 0, 0], [3.0, 0, 0], [0, 2.0, 0], [0, 1.0, 1.0]])
    langs, S = M.centroid_similarity(X, ["b", "b", "a", "a"])
    assert langs == ["a", "b"]
    assert np.allclose(S, S.T) and np.allclose(np.diag(S), 1.0)
    assert S[0, 1] == pytest.approx(0.0)


def test_separability_extremes():
    X = np.repeat(np.eye(3) * 4.0, 10, axis=0)
    langs = np.repeat(["a", "b", "c"], 10)
    sep = M.separability(X, langs)
    assert sep["between_var_fraction"] == pytest.approx(1.0)
    assert sep["silhouette"] == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    mixed = M.separability(rng.normal(size=(600, 8)), rng.choice(["a", "b"], 600))
    assert mixed["between_var_fraction"] < 0.02 and abs(mixed["silhouette"]) < 0.05


def test_linear_cka_invariances_and_independence():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 10))
    Q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    assert M.linear_cka(X, X) == pytest.approx(1.0)
    assert M.linear_cka(X, X @ Q) == pytest.approx(1.0)
    assert M.linear_cka(X, 3.0 * X + 1.0) == pytest.approx(1.0)
    assert M.linear_cka(X, rng.normal(size=(2000, 12))) < 0.05
    # a partial dependence lies strictly between
    mid = M.linear_cka(X, np.hstack([X[:, :5], rng.normal(size=(2000, 5))]))
    assert 0.2 < mid < 0.8
    with pytest.raises(ValueError):
        M.linear_cka(X, X[:10])
