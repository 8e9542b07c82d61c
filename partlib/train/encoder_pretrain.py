"""Pretrain a Whisper-architecture encoder with a character CTC objective.

Recipes without pretrained Whisper weights (the embedded ``mini_synth`` recipe) use this to give
the encoder what Whisper brings to PART: acoustic representations learned on speech of every
language, before any alignment with the LLM. The CTC head (a linear layer over characters of the
training transcripts) is discarded; the encoder is saved with ``save_pretrained`` and loaded by
``SpeechLLM`` through the same code path as ``openai/whisper-*`` checkpoints.
"""
from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from partlib.common import PathLike, atomic_write, get_logger, replace_dir
from partlib.data.batching import collate, make_batches
from partlib.data.datadir import DataDir
from partlib.data.examples import Example, TaskSpec, build_examples
from partlib.features.source import FeatureSource
from partlib.models.encoder import SpeechEncoder, whisper_encoder_from_config
from partlib.train import optim
from partlib.train.optim import LRSchedule, Optim

logger = get_logger("partlib.train.encoder_pretrain")
BLANK = "<blank>"


def ctc_units(text: str) -> List[str]:
    """Characters of a transcript for CTC: NFKC, lower-cased, whitespace folded to one space."""
    return list(" ".join(unicodedata.normalize("NFKC", text).lower().split()))


class CTCModel(nn.Module):
    """Variable-length Whisper encoder + linear CTC head."""

    def __init__(self, encoder: SpeechEncoder, vocab_size: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.d_model, vocab_size)

    def forward(self, feats: torch.Tensor, lens: torch.Tensor):
        h, out_lens = self.encoder(feats, lens)
        return self.head(h).log_softmax(-1), out_lens


def _greedy(logp: torch.Tensor, lens: torch.Tensor, vocab: Sequence[str]) -> List[str]:
    out = []
    for row, n in zip(logp.argmax(-1).tolist(), lens.tolist()):
        chars, prev = [], -1
        for t in row[:n]:
            if t != prev and t != 0:
                chars.append(vocab[t])
            prev = t
        out.append("".join(chars).strip())
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

    def optim(self) -> Tuple[Optim, LRSchedule]:
        """AdamW (betas 0.9, 0.98) with linear warmup and cosine decay to 0."""
        return (Optim(lr=self.lr, weight_decay=self.weight_decay, betas=(0.9, 0.98)),
                LRSchedule(type="cosine", warmup_steps=self.warmup))


def pretrain_encoder(arch: Dict, train_dirs: Sequence[PathLike], dev_dirs: Sequence[PathLike], out_dir: PathLike,
                     cfg: EncoderPretrainConfig) -> Dict[str, float]:
    """Train encoder + CTC head on the train dirs; save the encoder to ``out_dir``; return dev CER."""
    from partlib.scoring.wer import ErrorCounts, score_units

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    encoder = SpeechEncoder(whisper_encoder_from_config({"model_type": "whisper", **arch}))
    dirs = [DataDir.load(p) for p in list(train_dirs) + list(dev_dirs)]
    n_train = len(train_dirs)

    def examples(ds, offset):
        spec = TaskSpec("asr", 1.0, ["-"])
        return [e for i, d in enumerate(ds)
                for e in build_examples(spec, [d], lambda t: [0] * len(t), lambda f: 0, dir_offset=offset + i)]

    train = examples(dirs[:n_train], 0)
    dev = examples(dirs[n_train:], n_train)
    vocab = [BLANK] + sorted({c for e in train for c in ctc_units(e.target)})
    index = {c: i for i, c in enumerate(vocab)}
    model = CTCModel(encoder, len(vocab))
    feats = FeatureSource(dirs, encoder.n_mels)
    batches = make_batches(train, cfg.max_frames, 10**9, 10**6)
    opt, sched = optim.build(list(model.parameters()), *cfg.optim(), cfg.steps)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)

    def targets(exs: Sequence[Example]):
        seqs = [[index[c] for c in ctc_units(e.target) if c in index] for e in exs]
        return torch.tensor([t for s in seqs for t in s]), torch.tensor([len(s) for s in seqs])

    model.train()
    order: List[int] = []
    for step in range(cfg.steps):
        if not order:
            order = list(rng.permutation(len(batches)))
        b = batches[order.pop()]
        batch = collate(b, feats.load([(e.dir_index, e.utt) for e in b]))
        logp, out_lens = model(batch["feats"], batch["feat_lens"])
        tgt, tgt_lens = targets(b)
        loss = ctc(logp.transpose(0, 1), tgt, out_lens, tgt_lens)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if (step + 1) % cfg.log_interval == 0 or step == 0:
            logger.info("encoder CTC pretraining step %d/%d: loss %.3f", step + 1, cfg.steps, float(loss))

    model.eval()
    counts = []
    with torch.no_grad():
        for b in make_batches(dev, cfg.max_frames, 10**9, 10**6) if dev else []:
            batch = collate(b, feats.load([(e.dir_index, e.utt) for e in b]))
            logp, out_lens = model(batch["feats"], batch["feat_lens"])
            for e, hyp in zip(b, _greedy(logp, out_lens, vocab)):
                counts.append(score_units([c for c in ctc_units(e.target) if c != " "],
                                          [c for c in hyp if c != " "])[0])
    cer = ErrorCounts.total(counts).rate() if counts else float("nan")
    logger.info("encoder CTC pretraining: dev CER %.2f%% on %d utterances", cer, len(counts))
    out = Path(out_dir)
    tmp = out.parent / f".{out.name}.tmp"
    encoder.whisper.save_pretrained(str(tmp))
    atomic_write(tmp / "ctc_pretrain.json", json.dumps(
        {"config": asdict(cfg), "steps": cfg.steps, "dev_cer": round(cer, 2), "vocab_size": len(vocab),
         "train_utts": len(train)},
        sort_keys=True) + "\n")
    replace_dir(tmp, out)
    return {"dev_cer": cer}
