"""Pretrain a Whisper-architecture encoder with a character CTC objective.

Recipes without pretrained Whisper weights (the embedded ``mini_synth`` recipe) use this to give
the encoder what Whisper brings to PART: acoustic representations learned on speech of every
language, before any alignment with the LLM. The encoder is saved with ``save_pretrained`` and
loaded by ``SpeechLLM`` through the same code path as ``openai/whisper-*`` checkpoints; the CTC
head (a linear layer over the characters of the training transcripts) is saved next to it
(``ctc_head.safetensors``, vocabulary in ``ctc_pretrain.json``) so that the encoder's own
recognition can be scored later (:func:`load_ctc_model`, ``partlib.bin.error_breakdown``).

Training can perturb the log-mel features on the fly: a tempo factor per utterance (the frames
resampled in time) and SpecAugment masks, both from generators seeded by (seed, step).
"""
from __future__ import annotations

import itertools
import json
import shutil
import time
import unicodedata
from pathlib import Path
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from partlib.common import PathLike, atomic_write, get_logger, replace_dir
from partlib.data.batching import SpecAug, collate, make_batches, spec_augment
from partlib.data.datadir import DataDir
from partlib.data.examples import Example, TaskSpec, build_examples
from partlib.features.source import FeatureSource
from partlib.models.encoder import SpeechEncoder, whisper_encoder_from_config
from partlib.train import optim
from partlib.train.engine import Loss, Objective, Steps, check_same_run, train_in_process
from partlib.train.optim import LRSchedule, Optim

logger = get_logger("partlib.train.encoder_pretrain")
BLANK = "<blank>"
HEAD_FILE = "ctc_head.safetensors"
INFO_FILE = "ctc_pretrain.json"


def ctc_units(text: str) -> List[str]:
    """Characters of a transcript for CTC: NFKC, lower-cased, whitespace folded to one space."""
    return list(" ".join(unicodedata.normalize("NFKC", text).lower().split()))


class CTCModel(nn.Module):
    """Variable-length Whisper encoder + linear CTC head over ``vocab`` (index 0 is the blank)."""

    def __init__(self, encoder: SpeechEncoder, vocab: Sequence[str]) -> None:
        super().__init__()
        self.encoder = encoder
        self.vocab = list(vocab)
        self.head = nn.Linear(encoder.d_model, len(self.vocab))

    def forward(self, feats: torch.Tensor, lens: torch.Tensor):
        h, out_lens = self.encoder(feats, lens)
        return self.head(h).log_softmax(-1), out_lens

    def greedy(self, feats: torch.Tensor, lens: torch.Tensor) -> List[str]:
        """Best-path CTC transcripts (repeats merged, blanks dropped)."""
        logp, out_lens = self(feats, lens)
        out = []
        for row, n in zip(logp.argmax(-1).tolist(), out_lens.tolist()):
            chars, prev = [], -1
            for t in row[:n]:
                if t != prev and t != 0:
                    chars.append(self.vocab[t])
                prev = t
            out.append("".join(chars).strip())
        return out


def load_ctc_model(encoder_dir: PathLike) -> CTCModel:
    """The encoder and CTC head that :func:`pretrain_encoder` saved in ``encoder_dir``."""
    from safetensors.torch import load_file

    from partlib.common import ConfigError
    from partlib.models.encoder import load_whisper_encoder

    d = Path(encoder_dir)
    if not (d / HEAD_FILE).is_file() or not (d / INFO_FILE).is_file():
        raise ConfigError(f"{d}: no CTC head ({HEAD_FILE}, {INFO_FILE}); it was not made by partlib.bin.pretrain_encoder")
    info = json.loads((d / INFO_FILE).read_text(encoding="utf-8"))
    model = CTCModel(SpeechEncoder(load_whisper_encoder(str(d))), info["vocab"])
    model.head.load_state_dict(load_file(str(d / HEAD_FILE)))
    return model.eval()


def speech_examples(dirs: Sequence[DataDir], offset: int = 0) -> List[Example]:
    """One transcription example per utterance of every dir (``dir_index`` counts from ``offset``)."""
    spec = TaskSpec("asr", 1.0, ["-"])
    return [e for i, d in enumerate(dirs)
            for e in build_examples(spec, [d], lambda task, rows: [0] * len(rows), lambda f: 0, dir_offset=offset + i)]


@torch.no_grad()
def ctc_scores(model: CTCModel, examples: Sequence[Example], feats: FeatureSource,
               max_frames: int = 20000) -> Dict[str, Dict]:
    """Greedy-CTC error counts per source language, scored like the systems' ASR output
    (:func:`partlib.scoring.wer_bleu.score_utterance`: the language's normaliser; words and
    characters). Returns ``lang -> {"cer", "wer", "utts", "char_counts", "word_counts"}`` and
    ``"all"`` pooled (CER over characters of every language)."""
    from partlib.scoring.wer import ErrorCounts
    from partlib.scoring.wer_bleu import score_utterance

    was_training = model.training
    model.eval()
    by_lang: Dict[str, Dict[str, List]] = {}
    for b in make_batches(list(examples), max_frames, 10**9, 10**6):
        batch = collate(b, feats.load([(e.dir_index, e.utt) for e in b]))
        for e, hyp in zip(b, model.greedy(batch["feats"], batch["feat_lens"])):
            s = score_utterance(e.utt, e.target, hyp, e.src_lang, e.src_lang)
            for key in (e.src_lang, "all"):
                acc = by_lang.setdefault(key, {"char": [], "word": []})
                acc["char"].append(s.counts["char"])
                acc["word"].append(s.counts["word"])
    model.train(was_training)
    out = {}
    for lang, acc in by_lang.items():
        char, word = ErrorCounts.total(acc["char"]), ErrorCounts.total(acc["word"])
        out[lang] = {"cer": char.rate(), "wer": word.rate(), "utts": len(acc["char"]),
                     "char_counts": char.as_dict(), "word_counts": word.as_dict()}
    return out


@dataclass
class EncoderPretrainConfig:
    """Options of CTC pretraining (the architecture is a WhisperConfig JSON of its own)."""

    steps: int = field(default=1000, metadata={"min": 1})
    lr: float = field(default=2e-3, metadata={"gt": 0})
    warmup: int = field(default=100, metadata={"min": 0})
    weight_decay: float = field(default=0.01, metadata={"min": 0})
    max_frames: int = field(default=20000, metadata={"min": 1})  # padded log-mel frames per batch
    seed: int = 0
    log_interval: int = field(default=50, metadata={"min": 1})
    save_interval: int = field(default=100, metadata={"min": 1})  # checkpoint every this many steps (resume)
    # dev CER every this many steps (0: at the end only); the curve goes to ctc_pretrain.json
    dev_interval: int = field(default=0, metadata={"min": 0})
    # per-utterance tempo factor drawn uniformly from [min, max] (frames resampled in time)
    tempo: Tuple[float, float] = (1.0, 1.0)
    specaug: Optional[SpecAug] = None

    def optim(self) -> Tuple[Optim, LRSchedule]:
        """AdamW (betas 0.9, 0.98) with linear warmup and cosine decay to 0."""
        return (Optim(lr=self.lr, weight_decay=self.weight_decay, betas=(0.9, 0.98)),
                LRSchedule(type="cosine", warmup_steps=self.warmup))


# options a resumed run may change: they decide what is logged, evaluated and checkpointed, not the weights
REPORTING_OPTIONS = frozenset({"log_interval", "save_interval", "dev_interval"})


def change_tempo(feats: torch.Tensor, factor: float) -> torch.Tensor:
    """``[T, M]`` log-mel frames played ``factor`` times faster (linear interpolation in time)."""
    n = max(1, round(feats.shape[0] / factor))
    if factor == 1.0 or n == feats.shape[0]:
        return feats
    return nn.functional.interpolate(feats.T[None], size=n, mode="linear", align_corners=True)[0].T.contiguous()


class _CTCPretraining(Objective):
    """Encoder + CTC head on the training speech, as an objective of the training engine: the CTC
    loss (a mean over the batch) of batches drawn in random order, epoch after epoch, perturbed by
    tempo and SpecAugment; the dev CER curve. Its data order, curve and clock are checkpointed."""

    name = "encoder CTC pretraining"

    def __init__(self, model: CTCModel, batches: List[List[Example]], dev: List[Example], feats: FeatureSource,
                 cfg: EncoderPretrainConfig, options: Dict) -> None:
        self.model, self.cfg, self.options = model, cfg, options
        self.names = [n for n, _ in model.named_parameters()]
        self.params = list(model.parameters())
        self.steps = Steps(max_steps=cfg.steps, log_interval=cfg.log_interval, save_interval=cfg.save_interval)
        self.train_batches, self.dev, self.feats = batches, dev, feats
        self.index = {c: i for i, c in enumerate(model.vocab)}
        self.ctc = nn.CTCLoss(blank=0, zero_infinity=True)
        self.rng = np.random.default_rng(cfg.seed)
        self.order: List[int] = []  # batches left of the current epoch (the next one last)
        self.curve: List[Dict] = []
        self.cpu0, self.wall0 = time.process_time(), time.time()

    def batches(self, start: int) -> Iterator[Tuple[List[Example], Dict]]:
        cfg, (lo, hi) = self.cfg, self.cfg.tempo
        for step in itertools.count(start):
            if not self.order:
                self.order = list(self.rng.permutation(len(self.train_batches)))
            b = self.train_batches[self.order.pop()]
            utt_feats = self.feats.load([(e.dir_index, e.utt) for e in b])
            if hi > lo or lo != 1.0:
                utt_feats = [change_tempo(f, float(t)) for f, t in zip(utt_feats, self.rng.uniform(lo, hi, len(b)))]
            batch = collate(b, utt_feats)
            if cfg.specaug is not None:
                gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
                batch["feats"] = spec_augment(batch["feats"], batch["feat_lens"], cfg.specaug, gen)
            yield b, batch

    def loss(self, item: Tuple[List[Example], Dict]) -> Loss:
        b, batch = item
        logp, out_lens = self.model(batch["feats"], batch["feat_lens"])
        seqs = [[self.index[c] for c in ctc_units(e.target) if c in self.index] for e in b]
        tgt, tgt_lens = torch.tensor([t for s in seqs for t in s]), torch.tensor([len(s) for s in seqs])
        return Loss(self.ctc(logp.transpose(0, 1), tgt, out_lens, tgt_lens))

    def after_step(self, step: int, loss: float, stats: Dict) -> bool:
        if self.cfg.dev_interval and step % self.cfg.dev_interval == 0 and step < self.cfg.steps:
            self.dev_point(step)
        return False

    def dev_point(self, step: int) -> Dict[str, Dict]:
        """Dev scores of :func:`ctc_scores` now, added to the curve."""
        scores = ctc_scores(self.model, self.dev, self.feats, self.cfg.max_frames) if self.dev else {}
        cer = scores.get("all", {}).get("cer")
        self.curve.append({"step": step, "cpu_s": round(time.process_time() - self.cpu0, 1),
                           "wall_s": round(time.time() - self.wall0, 1),
                           "dev_cer": None if cer is None else round(cer, 2)})
        if self.dev:
            logger.info("encoder CTC pretraining step %d: dev CER %.2f%% (%s)", step, cer,
                        ", ".join(f"{k} {v['cer']:.1f}" for k, v in sorted(scores.items()) if k != "all"))
        return scores

    def state_dict(self) -> Dict:
        return {"options": self.options, "data_order": {"rng": self.rng.bit_generator.state, "order": self.order},
                "curve": self.curve, "clock": [time.process_time() - self.cpu0, time.time() - self.wall0]}

    def load_state_dict(self, state: Dict, path) -> None:
        check_same_run(state["options"], self.options, path, REPORTING_OPTIONS)
        self.rng.bit_generator.state = state["data_order"]["rng"]
        self.order = list(state["data_order"]["order"])
        self.curve = list(state["curve"])
        self.cpu0, self.wall0 = time.process_time() - state["clock"][0], time.time() - state["clock"][1]


def pretrain_encoder(arch: Dict, train_dirs: Sequence[PathLike], dev_dirs: Sequence[PathLike], out_dir: PathLike,
                     cfg: EncoderPretrainConfig) -> Dict[str, Dict]:
    """Train encoder + CTC head on the train dirs through the training engine (checkpoints in
    ``<out_dir>.checkpoints``: a killed run resumes exactly; removed once the output is complete);
    save both to ``out_dir``; return the final dev scores of :func:`ctc_scores` (per language and
    ``"all"``)."""
    torch.manual_seed(cfg.seed)
    encoder = SpeechEncoder(whisper_encoder_from_config({"model_type": "whisper", **arch}))
    dirs = [DataDir.load(p) for p in list(train_dirs) + list(dev_dirs)]
    n_train = len(train_dirs)
    train = speech_examples(dirs[:n_train])
    dev = speech_examples(dirs[n_train:], n_train)
    vocab = [BLANK] + sorted({c for e in train for c in ctc_units(e.target)})
    model = CTCModel(encoder, vocab)
    feats = FeatureSource(dirs, encoder.n_mels)
    batches = make_batches(train, cfg.max_frames, 10**9, 10**6)
    opt, sched = optim.build(list(model.parameters()), *cfg.optim(), cfg.steps)
    out = Path(out_dir)
    options = {**asdict(cfg), "arch": arch, "train": [str(Path(p).resolve()) for p in train_dirs],
               "dev": [str(Path(p).resolve()) for p in dev_dirs]}
    objective = _CTCPretraining(model, batches, dev, feats, cfg, options)
    ckpt_dir = out.with_name(out.name + ".checkpoints")
    train_in_process(objective, opt, sched, ckpt_dir)

    scores = objective.dev_point(cfg.steps)
    cer = scores.get("all", {}).get("cer")
    logger.info("encoder CTC pretraining: dev CER %s on %d utterances",
                "n/a" if cer is None else f"{cer:.2f}%", len(dev))
    from safetensors.torch import save_file

    tmp = out.parent / f".{out.name}.tmp"
    encoder.whisper.save_pretrained(str(tmp))
    save_file({k: v.contiguous() for k, v in model.head.state_dict().items()}, str(tmp / HEAD_FILE))
    atomic_write(tmp / INFO_FILE, json.dumps(
        {"config": asdict(cfg), "steps": cfg.steps, "dev_cer": None if cer is None else round(cer, 2),
         "dev": {k: {m: (None if v[m] is None else round(v[m], 2)) for m in ("cer", "wer")} | {"utts": v["utts"]}
                 for k, v in sorted(scores.items())},
         "curve": objective.curve, "vocab": vocab, "vocab_size": len(vocab), "train_utts": len(train)},
        sort_keys=True, ensure_ascii=False) + "\n")
    replace_dir(tmp, out)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return scores
