"""Examples per task, dynamic batches, the deterministic mixture sampler (partlib.data)."""
from collections import Counter

import pytest

from partlib.common import ConfigError
from partlib.data.datadir import DataDir
from partlib.data.batching import MixtureSampler, make_batches, padding_fraction
from partlib.data.examples import TaskSpec, build_examples, resolve_data_dirs
from partlib.tasks import split_for_lm


def count_tokens(task, rows):
    """Words of each example's source text and target (the model counts its prompt's tokens)."""
    return [len((src_text or "").split()) + len(target.split()) for _, _, src_text, target in rows]


def speech_len(frames):
    return frames // 8


def make_dir(path, lang, n, translations=(), audio=True, frames0=100):
    utts = [f"spk{lang}-{i:03d}" for i in range(n)]
    d = DataDir(
        {u: f"spk{lang}" for u in utts},
        wav_scp={u: f"/nonexistent/{u}.wav" for u in utts} if audio else None,
        text={u: f"{lang} sentence number {i}" for i, u in enumerate(utts)},
        utt2lang={u: lang for u in utts},
        translations={t: {u: f"{t} translation {i}" for i, u in enumerate(utts)} for t in translations},
        utt2num_frames={u: frames0 + 37 * i for i, u in enumerate(utts)} if audio else None,
    )
    d.write(path)
    return DataDir.load(path)


@pytest.fixture
def dirs(tmp_path):
    return {
        "de": make_dir(tmp_path / "train_de", "de", 20, translations=["en"]),
        "en": make_dir(tmp_path / "train_en", "en", 10, translations=["de", "fr"]),
        "text": make_dir(tmp_path / "text_train", "fr", 6, translations=["en"], audio=False),
    }


def test_examples_per_task(dirs):
    asr = build_examples(TaskSpec("asr", 1, ["x"]), [dirs["de"]], count_tokens, speech_len)
    assert len(asr) == 20 and all(e.src_lang == e.tgt_lang == "de" for e in asr)
    assert asr[0].target == "de sentence number 0" and asr[0].num_frames == 100
    assert asr[0].n_tokens == 100 // 8 + 4  # speech embeddings + the text counter's 4 words
    s2tt = build_examples(TaskSpec("s2tt", 1, ["x"]), [dirs["en"]], count_tokens, speech_len)
    assert Counter(e.tgt_lang for e in s2tt) == {"de": 10, "fr": 10}
    only_de = build_examples(TaskSpec("s2tt", 1, ["x"], directions=["en-de"]), [dirs["en"], dirs["de"]],
                             count_tokens, speech_len)
    assert {(e.src_lang, e.tgt_lang) for e in only_de} == {("en", "de")}
    t2tt = build_examples(TaskSpec("t2tt", 1, ["x"]), [dirs["text"]], count_tokens, speech_len)
    assert t2tt[0].src_text == "fr sentence number 0" and t2tt[0].target == "en translation 0"
    assert t2tt[0].num_frames == 0
    lm = build_examples(TaskSpec("lm", 1, ["x"]), [dirs["text"]], count_tokens, speech_len)
    assert lm[0].src_text + " " + lm[0].target == "fr sentence number 0"


def test_task_data_errors(dirs):
    with pytest.raises(ConfigError, match="needs speech"):
        build_examples(TaskSpec("asr", 1, ["x"]), [dirs["text"]], count_tokens, speech_len)
    with pytest.raises(ConfigError, match="no text.fr"):
        build_examples(TaskSpec("s2tt", 1, ["x"], tgt_langs=["fr"]), [dirs["de"]], count_tokens, speech_len)
    with pytest.raises(ConfigError, match="no data directory matches"):
        resolve_data_dirs(["nothing_*"], str(dirs["de"].path.parent))
    assert [p.name for p in resolve_data_dirs(["train_*"], str(dirs["de"].path.parent))] == ["train_de", "train_en"]


def test_split_for_lm():
    assert split_for_lm("a b c d e", "en") == ("a b", "c d e")
    assert split_for_lm("我 爱 北京天安门", "zh") == ("我爱北", "京天安门")


def test_dynamic_batches_respect_limits(dirs):
    exs = build_examples(TaskSpec("asr", 1, ["x"]), [dirs["de"]], count_tokens, speech_len)
    batches = make_batches(exs, max_frames=2000, max_tokens=10**6, max_utts=100)
    assert sorted(e.key for b in batches for e in b) == sorted(e.key for e in exs)
    for b in batches:
        assert len(b) * max(e.num_frames for e in b) <= 2000
    # length-sorted dynamic batches pad much less than random fixed-size batches would
    pf, _ = padding_fraction(batches)
    assert pf < 0.15
    with pytest.raises(ConfigError, match="smaller than the longest utterance"):
        make_batches(exs, max_frames=500, max_tokens=10**6, max_utts=100)
    with pytest.raises(ConfigError, match="max_tokens"):
        make_batches(exs, max_frames=10**6, max_tokens=5, max_utts=100)


def test_sampler_deterministic_and_weighted(dirs):
    groups = {}
    for key, d in (("de", dirs["de"]), ("en", dirs["en"])):
        exs = build_examples(TaskSpec("asr", 1, ["x"]), [d], count_tokens, speech_len)
        groups[("asr", key)] = make_batches(exs, 10**6, 10**6, 2)
    s1 = MixtureSampler(groups, {"asr": 1.0}, temperature=1.0, seed=5)
    s2 = MixtureSampler(groups, {"asr": 1.0}, temperature=1.0, seed=5)
    seq = [[e.key for e in s1.batch(m)] for m in range(300)]
    # random access in any order gives the same batches (resume needs only the index)
    assert [[e.key for e in s2.batch(m)] for m in reversed(range(300))][::-1] == seq
    assert seq != [[e.key for e in MixtureSampler(groups, {"asr": 1.0}, 1.0, seed=6).batch(m)] for m in range(300)]
    # T=1: groups drawn in proportion to their sizes (20 vs 10 examples)
    share = Counter(s1.group_of(m)[1] for m in range(3000))
    assert 0.6 < share["de"] / 3000 < 0.73
    # T -> large: uniform over languages
    flat = MixtureSampler(groups, {"asr": 1.0}, temperature=100.0, seed=5)
    share = Counter(flat.group_of(m)[1] for m in range(3000))
    assert 0.45 < share["de"] / 3000 < 0.55
    # every batch of a group is visited once per epoch of that group
    de_batches = [tuple(e.key for e in s1.batch(m)) for m in range(3000) if s1.group_of(m)[1] == "de"]
    n = len(groups[("asr", "de")])
    assert len(set(de_batches[:n])) == n
