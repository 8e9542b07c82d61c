"""The mini_synth corpus generator: grammar, splits, espeak-ng synthesis and Kaldi data dirs."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from partlib.data.kv import read_kv, read_kv_list
from partlib.data.validate import validate_data_dir
from partlib.text.overlap import find_overlap

LOCAL = Path(__file__).resolve().parents[1] / "egs" / "mini_synth" / "part1" / "local"
sys.path.insert(0, str(LOCAL))

import grammar as G  # noqa: E402
import make_corpus as MC  # noqa: E402

LEX = G.Lexicon()


def S(subj, verb, obj=None, **kw):
    return G.Sentence(subj=subj, verb=verb, obj=obj, **kw)


def test_french_agreement_and_adjective_position():
    s = S(G.NP("dog", "def", adj="small"), "sleep", prep="in", loc=G.NP("house", "def", adj="small"))
    assert G.render(LEX, s, "fr") == "Le petit chien dort dans la petite maison."
    s = S(G.NP("cat", "def", True, adj="white"), "watch", G.NP("car", "indef", adj="red"))
    assert G.render(LEX, s, "fr") == "Les chats blancs regardent une voiture rouge."
    s = S(G.NP("woman", "def", adj="old"), "love", G.NP("dog", "def"), neg=True)
    assert G.render(LEX, s, "fr") == "La vieille femme n'aime pas le chien."
    s = S(G.NP("girl", "def"), "have", G.NP("book", "indef"), neg=True)
    assert G.render(LEX, s, "fr") == "La fille n'a pas de livre."
    s = S(G.NP("duck", "indef"), "play", prep="near", loc=G.NP("table", "def"), mood="question")
    assert G.render(LEX, s, "fr") == "Est-ce qu'un canard joue près de la table?"
    s = S(G.NP("duck", "def"), "wait", prep="near", loc=G.NP("garden", "def"))
    assert G.render(LEX, s, "fr") == "Le canard attend près du jardin."  # de le -> du


def test_german_case_gender_and_word_order():
    s = S(G.NP("dog", "def", adj="big"), "watch", G.NP("cat", "indef", adj="black"), time="today")
    assert G.render(LEX, s, "de") == "Heute beobachtet der große Hund eine schwarze Katze."  # V2
    s = S(G.NP("dog", "def"), "watch", G.NP("horse", "indef", adj="small"), neg=True)
    assert G.render(LEX, s, "de") == "Der Hund beobachtet kein kleines Pferd."
    s = S(G.NP("cat", "num", True, num=2), "sleep", prep="in", loc=G.NP("garden", "def"), mood="embedded")
    assert G.render(LEX, s, "de") == "Ich glaube, dass zwei Katzen im Garten schlafen."  # verb-final, im
    s = S(G.NP("cow", "def"), "eat", G.NP("apple", "def"), neg=True)
    assert G.render(LEX, s, "de") == "Die Kuh frisst den Apfel nicht."  # animals fressen
    s = S(G.NP("teacher", "def", True), "eat", G.NP("cake", "def"), mood="question")
    assert G.render(LEX, s, "de") == "Essen die Lehrer den Kuchen?"
    s = S(G.NP("ball", "def"), "be", prep="under", loc=G.NP("chair", "def", True))
    assert G.render(LEX, s, "de") == "Der Ball ist unter den Stühlen."  # dative plural -n


def test_spanish_english_chinese():
    s = S(G.NP("girl", "def", adj="beautiful"), "love", G.NP("dog", "def"))
    assert G.render(LEX, s, "es") == "La niña bonita ama al perro."  # personal a + el -> al
    s = S(G.NP("doctor", "def"), "have", G.NP("key", "indef"), neg=True)
    assert G.render(LEX, s, "es") == "El médico no tiene ninguna llave."
    s = S(G.NP("mouse", "def", True), "eat", G.NP("apple", "indef", adj="old"), mood="question")
    assert G.render(LEX, s, "es") == "¿Los ratones comen una manzana vieja?"
    assert G.render(LEX, s, "en") == "Do the mice eat an old apple?"
    s = S(G.NP("cat", "num", True, num=2, adj="small"), "have", G.NP("book", "indef"), neg=True)
    assert G.render(LEX, s, "en") == "Two small cats do not have a book."
    assert G.render_zh(LEX, s) == ("两只小猫没有书。", "liang3 zhi1 xiao3 mao1 mei2 you3 shu1 .")
    s = S(G.NP("dog", "def"), "sleep", prep="under", loc=G.NP("car", "indef"), time="today", neg=True)
    text, pinyin = G.render_zh(LEX, s)
    assert text == "狗今天不在一辆车下面睡觉。"
    assert "bu2 zai4 yi2 liang4" in pinyin  # tone sandhi before 4th tones
    assert G.render(LEX, S(G.NP("cat", "def"), "be", prep="in", loc=G.NP("house", "def"),
                           mood="question"), "zh") == "猫在房子里吗？"


def test_sampler_is_deterministic_and_renders_every_language():
    s1, s2 = G.SentenceSampler(LEX, 7), G.SentenceSampler(LEX, 7)
    seq1 = [s1.sample() for _ in range(50)]
    seq2 = [s2.sample() for _ in range(50)]
    assert seq1 == seq2
    assert seq1 != [G.SentenceSampler(LEX, 8).sample() for _ in range(50)]
    for s in seq1:
        for lang in G.LANGS:
            text = G.render(LEX, s, lang)
            assert text[-1] in ".?。？" and "  " not in text
        assert " " not in G.render(LEX, s, "zh")


def test_splits_are_new_combinations_without_overlap():
    recs = MC.build_corpus(LEX, seed=3, n_train=150, n_dev=30, n_test=30, n_extra=50)
    by = {sp: [r for r in recs if r.split == sp] for sp in ("train", "dev", "test", "extra")}
    assert [len(by[k]) for k in ("train", "dev", "test", "extra")] == [150, 30, 30, 50]
    train_keys = {r.sentence.key() for r in by["train"] + by["extra"]}
    train_lemmas = set().union(*(r.sentence.lemmas() for r in by["train"]))
    held = by["dev"] + by["test"]
    assert len({r.sentence.key() for r in held}) == len(held)
    for r in held:
        assert r.sentence.key() not in train_keys
        assert r.sentence.lemmas() <= train_lemmas  # only known words
    for lang in G.LANGS:
        texts = [r.texts[lang] for r in recs]
        assert len(set(texts)) == len(texts)
        assert find_overlap([r.texts[lang] for r in held],
                            [r.texts[lang] for r in by["train"] + by["extra"]]) == []
    again = MC.build_corpus(LEX, seed=3, n_train=150, n_dev=30, n_test=30, n_extra=50)
    assert [r.texts for r in again] == [r.texts for r in recs]


def test_overlap_detection():
    assert find_overlap(["The dog sleeps."], ["Today the dog sleeps in the garden."]) == ["The dog sleeps."]
    assert find_overlap(["The dog sleeps."], ["The dogs sleep."]) == []
    assert find_overlap(["狗睡觉。"], ["狗睡觉"]) == ["狗睡觉。"]
    assert find_overlap(["狗睡觉。"], ["大狗睡觉。"]) == []  # no word boundaries to trust in zh


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_tiny_corpus_with_speech(tmp_path):
    data, db = tmp_path / "data", tmp_path / "db"
    MC.main(["--data-dir", str(data), "--db", str(db), "--seed", "2", "--num-train", "6",
             "--num-dev", "2", "--num-test", "2", "--num-text-extra", "2", "--num-spk-train", "2",
             "--num-spk-dev", "1", "--num-spk-test", "1", "--nj", "2"])
    for split in ("train", "dev", "test"):
        for lang in G.LANGS:
            d = data / f"{split}_{lang}"
            validate_data_dir(d, no_feats=True)
            utt2spk = read_kv(d / "utt2spk")
            assert all(u.startswith(s + "-") for u, s in utt2spk.items())
            assert set(read_kv(d / "utt2lang").values()) == {lang}
            trans = {"en": ["de", "es", "fr", "zh"]}.get(lang, ["en"])
            for t in trans:
                assert read_kv(d / f"text.{t}").keys() == read_kv(d / "text").keys()
            for utt, path in read_kv(d / "wav.scp").items():
                info = sf.info(path)
                assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
                assert 0.5 < info.duration < 10
            validate_data_dir(data / f"text_{split}_{lang}", no_wav=True, no_feats=True)
    # Parallel: the same sentence id holds translations of each other across languages.
    de = read_kv(data / "train_de" / "utt2sent")
    en_text = {read_kv(data / "train_en" / "utt2sent")[u]: t for u, t in read_kv(data / "train_en" / "text").items()}
    for utt, t in read_kv(data / "train_de" / "text.en").items():
        assert en_text[de[utt]] == t
    spk_dev = set(read_kv_list(data / "dev_de" / "spk2utt"))
    assert spk_dev.isdisjoint(read_kv_list(data / "train_de" / "spk2utt"))
    assert len(read_kv(data / "text_train_fr" / "text")) == 8  # train + text-only extra
    assert MC.check_no_overlap(data, G.LANGS) == 0


def test_data_sh_fast_option_parsing(tmp_path):
    recipe = LOCAL.parent
    res = subprocess.run(["bash", "local/data.sh", "--help"], cwd=recipe, capture_output=True, text=True)
    if not (recipe / "utils").exists():
        pytest.skip("recipe utils link not set up")
    assert res.returncode == 0 and "--fast" in res.stdout
    res = subprocess.run(["bash", "local/data.sh", "--no_such_option", "1"], cwd=recipe,
                         capture_output=True, text=True)
    assert res.returncode != 0
