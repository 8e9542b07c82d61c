"""Pretrain a tiny Qwen2 causal LM on a recipe's training text, in the chat format the SpeechLLM uses.

The examples are built by the SpeechLLM's own :class:`~partlib.models.prompt.PromptBuilder`, so
the LLM meets exactly the token layout of the later alignment stages (ChatML, default system
message, task instruction, target + ``<|im_end|>``; loss on the target only):

- ``lm``: "Continue this German text.\\n<first words>" -> the rest of the sentence;
- ``t2tt``: "Translate the following German text into English.\\n<src>" -> translation, for
  every ``text.<lang>`` translation file of the data dirs (X->en and en->X in the recipes);
- ``plain``: the bare sentence after ``<|endoftext|>`` (loss on every token), plain LM;
- ``tlid``: "Which language is the following text written in?\\n<sentence>" -> the language's
  name (``lid_per_sentence``): the answers of speech language identification, which an LLM
  pretrained on the web knows and a tiny one trained on transcripts alone never has to produce;
- ``copy``: the t2tt prompt with the source language as target ("Translate the following German
  text into German.") -> the same sentence: the repeat-what-you-read ability that instruction-tuned
  LLMs have and that a frozen LLM needs to turn aligned speech embeddings into a transcript.

Before training, :func:`check_contamination` refuses to train when any held-out sentence occurs in
the training text.
"""
from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

import sacrebleu
import torch
import yaml
from transformers import (AutoTokenizer, GenerationConfig, PreTrainedTokenizerBase, Qwen2Config,
                          Qwen2ForCausalLM)

from partlib import tasks
from partlib.common import DataError, PathLike, atomic_write, get_logger, replace_dir
from partlib.config import Invalid
from partlib.data import langs
from partlib.data.kv import read_kv
from partlib.models.prompt import IGNORE_INDEX, PromptBuilder, PromptExample
from partlib.text.overlap import data_dir_texts, find_overlap
from partlib.train import optim
from partlib.train.engine import Loss, Objective, Steps, check_same_run, train_in_process
from partlib.train.optim import LRSchedule, Optim

log = get_logger(__name__)


@dataclass
class LMPretrainConfig:
    """Model size and training options (all overridable from YAML or the command line).

    The defaults suit the mini_synth recipe on a 2-core CPU: text translation only works after
    the model learns to align target words with source positions, which took about 3000-4000
    updates of batch 16 there (a wider model with fewer, larger batches did not get there).
    """

    hidden: int = field(default=128, metadata={"min": 1})
    layers: int = field(default=2, metadata={"min": 1})
    heads: int = field(default=4, metadata={"min": 1})
    kv_heads: int = field(default=2, metadata={"min": 1})
    intermediate: int = field(default=256, metadata={"min": 1})
    max_positions: int = field(default=512, metadata={"min": 1})
    steps: int = field(default=4000, metadata={"min": 1})
    batch: int = field(default=16, metadata={"min": 1})
    lr: float = field(default=3e-3, metadata={"gt": 0})
    warmup: int = field(default=50, metadata={"min": 0})
    weight_decay: float = field(default=0.01, metadata={"min": 0})
    seed: int = 1
    plain_per_sentence: int = field(default=1, metadata={"min": 0})  # plain-LM examples per sentence
    # "Continue this text" examples: the lm task's (partlib.tasks.split_for_lm: the middle word), repeated
    lm_per_sentence: int = field(default=1, metadata={"min": 0})
    save_interval: int = field(default=200, metadata={"min": 1})  # checkpoint every this many steps (resume)
    copy_per_sentence: int = field(default=1, metadata={"min": 0})  # "Translate ... into the same language"
    lid_per_sentence: int = field(default=0, metadata={"min": 0})  # "Which language is ..." -> its name (tlid)
    eval_batch: int = field(default=64, metadata={"min": 1})
    num_translate_examples: int = field(default=5, metadata={"min": 0})  # dev sentences translated in the log
    max_eval_sentences: int = field(default=200, metadata={"min": 1})  # dev examples for loss/accuracy/BLEU

    def validate(self) -> None:
        if self.hidden % self.heads:
            raise Invalid("heads", f"must divide hidden ({self.hidden}), got {self.heads}")
        if self.heads % self.kv_heads:
            raise Invalid("kv_heads", f"must divide heads ({self.heads}), got {self.kv_heads}")

    def optim(self) -> Tuple[Optim, LRSchedule]:
        """AdamW (betas 0.9, 0.95) with warmup and cosine decay to 10% of ``lr``."""
        return (Optim(lr=self.lr, weight_decay=self.weight_decay, betas=(0.9, 0.95)),
                LRSchedule(type="cosine", warmup_steps=self.warmup, min_lr_ratio=0.1))


# options a resumed run may change: they decide what is evaluated and checkpointed, not the weights
REPORTING_OPTIONS = frozenset({"save_interval", "eval_batch", "num_translate_examples", "max_eval_sentences"})


@dataclass
class TextSentence:
    """One sentence of a text data dir with its translations (``lang -> text``)."""

    utt: str
    lang: str
    text: str
    translations: Dict[str, str]


def load_text_dir(path: PathLike) -> List[TextSentence]:
    """Sentences of a Kaldi data dir: ``text``, ``utt2lang`` and every ``text.<lang>``."""
    path = Path(path)
    text = read_kv(path / "text")
    utt2lang = read_kv(path / "utt2lang")
    trans = {f.name.split(".", 1)[1]: read_kv(f) for f in sorted(path.glob("text.*"))}
    out = []
    for utt, t in text.items():
        if utt not in utt2lang:
            raise DataError("utterance missing from utt2lang", path / "utt2lang", utt=utt)
        out.append(TextSentence(utt, langs.canonical(utt2lang[utt]), t,
                                {lang: m[utt] for lang, m in trans.items() if utt in m}))
    return out


def check_contamination(train_dirs: Sequence[PathLike], heldout_dirs: Sequence[PathLike]) -> int:
    """Raise DataError when a held-out sentence (any language: ``text`` and ``text.<lang>`` of
    ``heldout_dirs``) occurs in the training text; return the overlap count (0)."""
    train = [t for d in train_dirs for t in data_dir_texts(d).values()]
    heldout = [t for d in heldout_dirs for t in data_dir_texts(d).values()]
    overlap = find_overlap(heldout, train)
    log.info("contamination check: %d held-out sentences vs %d training sentences: overlap %d",
             len(heldout), len(train), len(overlap))
    if overlap:
        raise DataError(f"{len(overlap)} held-out sentences occur in the LM training text, e.g. "
                        f"{overlap[:3]}; the LM must not see dev/test text")
    return 0


def build_examples(sentences: Sequence[TextSentence], prompt: PromptBuilder,
                   cfg: LMPretrainConfig) -> List[Tuple[str, PromptExample]]:
    """(kind, example) pairs: plain, lm (cut by the ``lm`` task's rule, :func:`partlib.tasks.split_for_lm`),
    copy, tlid and one t2tt per translation of every sentence."""
    tok = prompt.tokenizer
    bos = tok.convert_tokens_to_ids("<|endoftext|>")
    out: List[Tuple[str, PromptExample]] = []
    for s in sentences:
        for _ in range(cfg.plain_per_sentence):
            ids = tok(s.text, add_special_tokens=False)["input_ids"]
            out.append(("plain", PromptExample([bos], 0, [], ids + [bos])))
        prefix, rest = tasks.split_for_lm(s.text, s.lang)
        for _ in range(cfg.lm_per_sentence if rest else 0):
            out.append(("lm", prompt.build("lm", s.lang, s.lang, src_text=prefix, target=rest, utt=s.utt)))
        for _ in range(cfg.copy_per_sentence):
            out.append(("copy", prompt.build("t2tt", s.lang, s.lang, src_text=s.text, target=s.text, utt=s.utt)))
        for _ in range(cfg.lid_per_sentence):
            out.append(("tlid", prompt.build("tlid", s.lang, s.lang, src_text=s.text, target=langs.name(s.lang),
                                             utt=s.utt)))
        for tgt, t in s.translations.items():
            out.append((f"t2tt_{s.lang}-{tgt}", prompt.build("t2tt", s.lang, tgt, src_text=s.text, target=t, utt=s.utt)))
    return out


def length_grouped_batches(lengths: Sequence[int], batch: int, rng: random.Random,
                           group: int = 16) -> List[List[int]]:
    """One epoch of batches in random order, each drawn from ``group`` batches' worth of shuffled
    examples sorted by length, so that little of a batch is padding."""
    perm = list(range(len(lengths)))
    rng.shuffle(perm)
    out = []
    for i in range(0, len(perm), batch * group):
        chunk = sorted(perm[i:i + batch * group], key=lambda j: lengths[j])
        out += [chunk[k:k + batch] for k in range(0, len(chunk), batch)]
    rng.shuffle(out)
    return out


def build_model(cfg: LMPretrainConfig, tokenizer: PreTrainedTokenizerBase) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2 causal LM sized to the tokenizer (tied embeddings)."""
    torch.manual_seed(cfg.seed)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=cfg.max_positions, rope_theta=10000.0, tie_word_embeddings=True,
        bos_token_id=tokenizer.pad_token_id, eos_token_id=im_end, pad_token_id=tokenizer.pad_token_id)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=[im_end, tokenizer.eos_token_id], pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.pad_token_id, do_sample=False)
    return model


@torch.no_grad()
def evaluate(model: Qwen2ForCausalLM, prompt: PromptBuilder, examples: Sequence[Tuple[str, PromptExample]],
             batch_size: int) -> Dict[str, Dict[str, float]]:
    """Per example kind and overall: target-token loss, perplexity and next-token accuracy."""
    model.eval()
    sums: Dict[str, List[float]] = {}
    for i in range(0, len(examples), batch_size):
        chunk = examples[i:i + batch_size]
        b = prompt.collate([ex for _, ex in chunk], left_pad=False)
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1]
        labels = b["labels"][:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX,
                                                reduction="none")
        correct = (logits.argmax(-1) == labels) & (labels != IGNORE_INDEX)
        for j, (kind, _) in enumerate(chunk):
            n = int((labels[j] != IGNORE_INDEX).sum())
            for key in (kind.split("_")[0], "all"):
                acc = sums.setdefault(key, [0.0, 0.0, 0.0])
                acc[0] += float(nll[j].sum()); acc[1] += float(correct[j].sum()); acc[2] += n
    model.train()
    return {k: {"loss": v[0] / v[2], "ppl": math.exp(v[0] / v[2]), "acc": v[1] / v[2], "tokens": int(v[2])}
            for k, v in sums.items()}


@torch.no_grad()
def translate(model: Qwen2ForCausalLM, prompt: PromptBuilder, items: Sequence[Tuple[str, str, str]],
              max_new_tokens: int = 48, batch_size: int = 32) -> List[str]:
    """Greedy translations of ``(src_lang, tgt_lang, text)`` items."""
    model.eval()
    out: List[str] = []
    for i in range(0, len(items), batch_size):
        exs = [prompt.build("t2tt", s, t, src_text=x) for s, t, x in items[i:i + batch_size]]
        b = prompt.collate(exs, left_pad=True)
        gen = model.generate(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                             max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=prompt.stop_ids, pad_token_id=prompt.pad_id)
        new = gen[:, b["input_ids"].shape[1]:]
        out += [prompt.tokenizer.decode(row, skip_special_tokens=True).strip() for row in new]
    model.train()
    return out


class _LMPretraining(Objective):
    """The LM on its chat-format examples, as an objective of the training engine: the mean
    target-token loss of length-grouped batches in random order, epoch after epoch. Its data order
    and the losses so far are checkpointed."""

    name = "LM pretraining"

    def __init__(self, model: Qwen2ForCausalLM, prompt: PromptBuilder, train: List[Tuple[str, PromptExample]],
                 cfg: LMPretrainConfig, options: Dict) -> None:
        self.model, self.prompt, self.train, self.options = model, prompt, train, options
        self.rng = random.Random(cfg.seed)
        self.names = [n for n, _ in model.named_parameters()]
        self.params = list(model.parameters())
        self.steps = Steps(max_steps=cfg.steps, log_interval=max(1, cfg.steps // 10), save_interval=cfg.save_interval)
        self.batch = cfg.batch
        self.lengths = [len(ex.prefix) + len(ex.suffix) + len(ex.target) for _, ex in train]
        self.order: List[List[int]] = []  # batches left of the current epoch (the next one last)
        self.losses: List[float] = []

    def batches(self, start: int) -> Iterator[Dict]:
        while True:
            if not self.order:
                self.order = length_grouped_batches(self.lengths, self.batch, self.rng)
            yield self.prompt.collate([self.train[i][1] for i in self.order.pop()], left_pad=False)

    def loss(self, b: Dict) -> Loss:
        return Loss(self.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss)

    def after_step(self, step: int, loss: float, stats: Dict) -> bool:
        self.losses.append(loss)
        return False

    def log_step(self, step: int, loss: float, grad_norm: float, units: int, lr: float, rate: float) -> None:
        n = min(len(self.losses), 50)
        log.info("step %d/%d: loss %.4f (mean of last %d: %.4f), lr %.2e", step, self.steps.max_steps,
                 loss, n, sum(self.losses[-n:]) / n, lr)

    def state_dict(self) -> Dict:
        return {"options": self.options, "data_order": {"rng": self.rng.getstate(), "order": self.order},
                "losses": self.losses}

    def load_state_dict(self, state: Dict, path) -> None:
        check_same_run(state["options"], self.options, path, REPORTING_OPTIONS)
        self.rng.setstate(state["data_order"]["rng"])
        self.order = [list(b) for b in state["data_order"]["order"]]
        self.losses = list(state["losses"])


def pretrain(tokenizer_dir: PathLike, data_dirs: Sequence[PathLike], out_dir: PathLike,
             cfg: LMPretrainConfig, heldout_dirs: Sequence[PathLike] = (),
             dev_dirs: Sequence[PathLike] = ()) -> Dict:
    """Check contamination, train, evaluate on ``dev_dirs``, save model + tokenizer to ``out_dir``.

    Trains through the training engine, with checkpoints in ``<out_dir>.checkpoints`` (a killed run
    resumes exactly; removed once the output is complete). Writes into ``<out_dir>.tmp`` and renames
    at the end, so ``out_dir`` exists only when complete.
    Returns the metrics written to ``<out_dir>/pretrain_metrics.json``.
    """
    t0 = time.time()
    check_contamination(data_dirs, heldout_dirs)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    prompt = PromptBuilder(tokenizer)
    train_sents = [s for d in data_dirs for s in load_text_dir(d)]
    if not train_sents:
        raise DataError("no training sentences", data_dirs[0] if data_dirs else None)
    train = build_examples(train_sents, prompt, cfg)
    dev_sents = [s for d in dev_dirs for s in load_text_dir(d)]
    dev = build_examples(dev_sents, prompt, cfg)
    random.Random(cfg.seed + 2).shuffle(dev)
    dev = dev[:cfg.max_eval_sentences]
    kinds: Dict[str, int] = {}
    for k, _ in train:
        kinds[k.split("_")[0]] = kinds.get(k.split("_")[0], 0) + 1
    log.info("training examples: %d (%s) from %d sentences; dev examples: %d",
             len(train), kinds, len(train_sents), len(dev))

    model = build_model(cfg, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("Qwen2 LM: hidden %d, layers %d, heads %d/%d, vocab %d: %.2fM parameters",
             cfg.hidden, cfg.layers, cfg.heads, cfg.kv_heads, len(tokenizer), n_params / 1e6)
    opt, sched = optim.build(list(model.parameters()), *cfg.optim(), cfg.steps)
    out_dir = Path(out_dir)
    options = {**asdict(cfg), "tokenizer": str(Path(tokenizer_dir).resolve()),
               "data": [str(Path(p).resolve()) for p in data_dirs]}
    objective = _LMPretraining(model, prompt, train, cfg, options)
    ckpt_dir = out_dir.with_name(out_dir.name + ".checkpoints")
    train_in_process(objective, opt, sched, ckpt_dir)
    losses = objective.losses
    train_time = time.time() - t0

    metrics: Dict = {"train": {"first_loss": losses[0], "last_loss": sum(losses[-20:]) / min(20, len(losses)),
                               "steps": cfg.steps, "examples": len(train), "seconds": round(train_time, 1)},
                     "params": n_params, "contamination_overlap": 0}
    if dev:
        metrics["dev"] = evaluate(model, prompt, dev, cfg.eval_batch)
        for k, v in sorted(metrics["dev"].items()):
            log.info("dev %-6s loss %.3f ppl %.2f token accuracy %.3f (%d tokens)",
                     k, v["loss"], v["ppl"], v["acc"], v["tokens"])
        to_en = [(s.lang, "en", s.text, s.translations["en"]) for s in dev_sents if "en" in s.translations]
        to_en = to_en[:cfg.max_eval_sentences]
        if to_en:
            hyps = translate(model, prompt, [x[:3] for x in to_en])
            bleu = sacrebleu.corpus_bleu(hyps, [[x[3] for x in to_en]]).score
            metrics["dev_t2tt_to_en_bleu"] = round(bleu, 2)
            log.info("dev text translation X->en: BLEU %.2f over %d sentences", bleu, len(to_en))
            for (src, _, text, ref), hyp in list(zip(to_en, hyps))[:cfg.num_translate_examples]:
                log.info("  [%s->en] %s\n      hyp: %s\n      ref: %s", src, text, hyp, ref)

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    atomic_write(tmp / "pretrain_config.yaml", yaml.safe_dump(asdict(cfg), sort_keys=True))
    atomic_write(tmp / "pretrain_metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    replace_dir(tmp, out_dir)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    log.info("saved to %s (%.1f s in all)", out_dir, time.time() - t0)
    return metrics
