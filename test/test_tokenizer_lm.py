"""The recipe tokenizer (byte-level BPE + ChatML) and the tiny Qwen2 LM pretraining."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from partlib.bin import pretrain_lm, train_tokenizer
from partlib.common import DataError
from partlib.data.kv import write_kv
from partlib.train.lm_pretrain import LMPretrainConfig, check_contamination, pretrain

PAIRS = [  # (de, en, zh)
    ("Der Hund schläft im Garten.", "The dog sleeps in the garden.", "狗在花园里睡觉。"),
    ("Die Katze frisst einen Apfel.", "The cat eats an apple.", "猫吃一个苹果。"),
    ("Ein Pferd spielt neben dem Haus.", "A horse plays near the house.", "一匹马在房子旁边玩。"),
    ("Zwei Kühe beobachten den Hund.", "Two cows watch the dog.", "两头牛看狗。"),
    ("Die Maus ist unter dem Tisch.", "The mouse is under the table.", "老鼠在桌子下面。"),
    ("Heute kauft die Frau ein Buch.", "Today the woman buys a book.", "女人今天买一本书。"),
]


def _text_dir(path: Path, lang: str, rows: List[Dict[str, str]]) -> Path:
    """A text-only data dir: rows hold the text in ``lang`` and translations in other languages."""
    utts = {f"{lang}-text-s{i:03d}": r for i, r in enumerate(rows)}
    write_kv(path / "text", {u: r[lang] for u, r in utts.items()})
    write_kv(path / "utt2spk", {u: u for u in utts})
    write_kv(path / "spk2utt", {u: u for u in utts})
    write_kv(path / "utt2lang", {u: lang for u in utts})
    for tgt in rows[0]:
        if tgt != lang:
            write_kv(path / f"text.{tgt}", {u: r[tgt] for u, r in utts.items()})
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmcorpus")
    rows = [{"de": d, "en": e, "zh": z} for d, e, z in PAIRS]
    train = [_text_dir(root / f"text_train_{lang}", lang, rows[:5]) for lang in ("de", "en", "zh")]
    dev = [_text_dir(root / f"text_dev_{lang}", lang, rows[5:]) for lang in ("de", "en", "zh")]
    tok_dir = root / "tok"
    assert train_tokenizer.main(["--vocab-size", "700", "--min-frequency", "1", "--langs", "en de zh",
                                 *map(str, train), str(tok_dir)]) == 0
    return root, train, dev, tok_dir


def test_tokenizer_roundtrip_and_chat_template(corpus):
    _, _, _, tok_dir = corpus
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    assert 259 < len(tok) <= 700
    assert tok.eos_token == tok.pad_token == "<|endoftext|>"
    for text in ["Der Hund schläft im Garten.", "狗在花园里睡觉。", "unseen 字 ¿Qué? 123"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    # Chinese seen in training gets merges beyond single bytes (3 bytes per character).
    assert len(tok("狗在花园里睡觉。", add_special_tokens=False)["input_ids"]) < len("狗在花园里睡觉。".encode()) // 2
    im_start, im_end = tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    msgs = [{"role": "user", "content": "Translate the following German text into English.\nHallo"}]
    rendered = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert rendered == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                        "Translate the following German text into English.\nHallo<|im_end|>\n"
                        "<|im_start|>assistant\n")
    ids = tok(rendered, add_special_tokens=False)["input_ids"]
    assert ids.count(im_start) == 3 and ids.count(im_end) == 2
    sys_msgs = [{"role": "system", "content": "Be brief."}] + msgs
    assert tok.apply_chat_template(sys_msgs, tokenize=False).startswith("<|im_start|>system\nBe brief.<|im_end|>\n")


def test_weighted_prompts_shorten_the_instructions(tmp_path):
    """Weighted instructions (with a model config's own templates) become a few tokens even when a
    larger corpus competes for the merges; added once, they stay split into many pieces."""
    import random

    from partlib.text.tokenizer import prompt_texts, train_tokenizer as train_bpe
    rng = random.Random(0)
    words = ["".join(rng.choice("aeioulmnrstkp") for _ in range(rng.randint(3, 8))) for _ in range(300)]
    corpus = [" ".join(rng.choice(words) for _ in range(8)) + "." for _ in range(3000)]
    templates = {"asr": "Transcribe the following {src_lang} speech.\n{speech}"}
    lengths = {}
    for weight in (1, 20):
        tok = train_bpe(corpus + prompt_texts(["en", "de", "zh"], templates, weight), 600, tmp_path / f"t{weight}")
        lengths[weight] = {t: len(tok(t, add_special_tokens=False)["input_ids"]) for t in (
            "Transcribe the following German speech.", "You are a helpful assistant.", "assistant")}
    assert lengths[20]["Transcribe the following German speech."] <= 6 < lengths[1]["Transcribe the following German speech."]
    assert lengths[20]["You are a helpful assistant."] <= 6 < lengths[1]["You are a helpful assistant."]
    assert lengths[20]["assistant"] == 1


def test_contamination_check_fails_on_planted_overlap(corpus, tmp_path):
    root, train, dev, tok_dir = corpus
    assert check_contamination(train, dev) == 0
    planted = _text_dir(tmp_path / "text_test_en", "en",
                        [{"en": "Today the woman buys a book.", "de": "x"}, {"en": "The dog sleeps.", "de": "y"}])
    with pytest.raises(DataError, match="2 held-out sentences"):
        check_contamination(train + dev, [planted])  # one exact, one inside a training sentence
    out = tmp_path / "llm"
    rc = pretrain_lm.main(["--tokenizer", str(tok_dir), "--data", *map(str, train + dev),
                           "--check-heldout", str(planted), "--steps", "2", str(out)])
    assert rc == 1 and not out.exists()


def test_pretrain_loss_falls_and_model_loads(corpus, tmp_path):
    root, train, dev, tok_dir = corpus
    torch.set_num_threads(1)
    cfg = LMPretrainConfig(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, steps=60,
                           batch=16, lr=5e-3, warmup=5, seed=3, num_translate_examples=2)
    out = tmp_path / "llm"
    metrics = pretrain(tok_dir, train, out, cfg, heldout_dirs=dev, dev_dirs=dev)
    assert metrics["train"]["last_loss"] < 0.5 * metrics["train"]["first_loss"]
    assert metrics["contamination_overlap"] == 0
    assert {"lm", "t2tt", "plain", "all"} <= set(metrics["dev"])
    assert json.loads((out / "pretrain_metrics.json").read_text()) == metrics
    model = AutoModelForCausalLM.from_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(out))
    assert model.config.model_type == "qwen2" and model.config.tie_word_embeddings
    assert model.config.vocab_size == len(tok)
    assert tok.convert_tokens_to_ids("<|im_end|>") in model.generation_config.eos_token_id
    # Same seed, same weights.
    again = pretrain(tok_dir, train, tmp_path / "llm2", cfg, heldout_dirs=dev)
    assert again["train"]["last_loss"] == metrics["train"]["last_loss"]
    m2 = AutoModelForCausalLM.from_pretrained(str(tmp_path / "llm2"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), m2.state_dict().values()))


def test_config_rejects_unknown_options():
    from partlib import config
    from partlib.common import ConfigError

    with pytest.raises(ConfigError, match="lm.yaml: hiddenn: unknown key"):
        config.parse(LMPretrainConfig, {"hiddenn": 3}, "lm.yaml")
    assert config.parse(LMPretrainConfig, {"lr": "3e-3", "steps": 5}, "lm.yaml").lr == 3e-3


def test_text_lid_examples_answer_with_the_language_name(corpus):
    """``lid_per_sentence`` adds "Which language ...?\\n<sentence>" -> the language's English name
    (the answers speech LID needs), with the loss on the name and the end token only."""
    from partlib.models.prompt import PromptBuilder
    from partlib.train.lm_pretrain import build_examples, load_text_dir

    _, train, _, tok_dir = corpus
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    prompt = PromptBuilder(tok)
    sents = [s for d in train for s in load_text_dir(d)]
    assert not [k for k, _ in build_examples(sents, prompt, LMPretrainConfig())
                if k == "tlid"]  # off by default
    exs = [(k, ex) for k, ex in build_examples(sents, prompt, LMPretrainConfig(lid_per_sentence=1))
           if k == "tlid"]
    assert len(exs) == len(sents) == 15
    names = {"de": "German", "en": "English", "zh": "Chinese"}
    for s, (_, ex) in zip(sents, exs):
        assert tok.decode(ex.target) == names[s.lang] + "<|im_end|>"
        shown = tok.decode(ex.prefix + ex.suffix)
        assert "Which language is the following text written in?\n" + s.text in shown
        assert names[s.lang] not in shown
