"""Multi-task training data: examples from Kaldi data dirs, length-bucketed dynamic batches, a
deterministic resumable sampler, and batch loading (dumped or on-the-fly features).

Data flow::

    TaskSpec + data dirs ──build_examples──▶ [Example]  (one per utterance × task × direction)
    [Example] ──group by (task, language)──▶ dynamic batches, bounded by encoder frames and LLM tokens
    micro-batch index m ──MixtureSampler.batch(m)──▶ a batch: the group is drawn from the mixture
        (task weight × temperature-scaled language share), the batch from that group's shuffled order

The sampler is a pure function of (seed, m): resuming at micro-batch m needs nothing but m, and
every rank of a distributed run draws the same global batch, then takes its own slice.
"""
from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from partlib.common import ConfigError, DataError, get_logger
from partlib.data import langs
from partlib.data.datadir import DataDir
from partlib.train.schedule import SPEECH_TASKS, TaskSpec

logger = get_logger(__name__)

FRAME_RATE = 100  # Whisper log-mel frames per second (hop 160 at 16 kHz)
# Tokens of chat template + instruction around the content; an estimate used only for batching.
PROMPT_TOKENS = 24


@dataclass(frozen=True)
class Example:
    """One training/decoding example: a source (speech or text) and a target text."""

    key: str  # unique: "<data dir name>/<utt>/<task>/<tgt_lang>"
    utt: str
    dir_index: int  # index into the list of data dirs the examples were built from
    task: str
    src_lang: str
    tgt_lang: str
    num_frames: int  # log-mel frames (0 for text tasks)
    src_text: Optional[str]
    target: str
    n_tokens: int  # estimated LLM sequence length (prompt + speech embeddings + text)


def resolve_data_dirs(patterns: Sequence[str], data_root: Optional[str]) -> List[Path]:
    """Expand data-dir patterns (globs allowed; relative to ``data_root``), sorted, de-duplicated."""
    out: List[Path] = []
    for pat in patterns:
        full = pat if data_root is None or Path(pat).is_absolute() else str(Path(data_root) / pat)
        hits = sorted(p for p in glob.glob(full) if Path(p).is_dir())
        if not hits:
            raise ConfigError(f"no data directory matches {pat!r} (looked for {full})")
        for h in hits:
            if Path(h) not in out:
                out.append(Path(h))
    return out


def utt_num_frames(d: DataDir, utt: str) -> int:
    """Log-mel frames of an utterance from utt2num_frames, else from utt2dur."""
    if d.utt2num_frames is not None and utt in d.utt2num_frames:
        return int(d.utt2num_frames[utt])
    if d.utt2dur is not None and utt in d.utt2dur:
        return int(round(float(d.utt2dur[utt]) * 16000)) // 160
    raise DataError("no utt2num_frames or utt2dur entry (run stage 2 of the recipe, or utils/data/get_utt2dur)",
                    d.path, utt=utt)


def split_for_lm(text: str, lang: str) -> Tuple[str, str]:
    """Split a sentence into (prefix, continuation) for the ``lm`` task: at the middle word, or the
    middle character for languages written without spaces."""
    if langs.uses_cer(lang):
        units, sep = list(text.replace(" ", "")), ""
    else:
        units, sep = text.split(), " "
    cut = max(1, len(units) // 2)
    return sep.join(units[:cut]), sep.join(units[cut:])


def _directions(spec: TaskSpec, src: str, available: Sequence[str]) -> List[str]:
    if spec.directions:
        targets = []
        for d in spec.directions:
            s, _, t = d.partition("-")
            if not t:
                raise ConfigError(f"direction {d!r} must look like src-tgt")
            if langs.canonical(s) == src:
                targets.append(langs.canonical(t))
        return targets
    if spec.tgt_langs:
        return [langs.canonical(t) for t in spec.tgt_langs if langs.canonical(t) != src]
    return [t for t in available if t != src]


def build_examples(
    spec: TaskSpec,
    dirs: Sequence[DataDir],
    count_tokens: Callable[[List[str]], List[int]],
    speech_len: Callable[[int], int],
    dir_offset: int = 0,
) -> List[Example]:
    """Examples of one task over the given data dirs.

    ``count_tokens`` maps texts to token counts (the LLM tokenizer); ``speech_len`` maps log-mel
    frames to the number of speech embeddings the adapter produces.
    """
    rows = []  # (dir_index, utt, src_lang, tgt_lang, frames, src_text, target)
    want = None if spec.langs is None else {langs.canonical(x) for x in spec.langs}
    for di, d in enumerate(dirs):
        if spec.task in SPEECH_TASKS and not d.has_audio():
            raise ConfigError(f"task {spec.task!r} needs speech, but {d.path} has no wav.scp or feats.scp")
        if d.text is None:
            raise ConfigError(f"task {spec.task!r}: {d.path} has no 'text' file")
        for utt in d.utts:
            src = d.lang(utt)
            if want is not None and src not in want:
                continue
            frames = utt_num_frames(d, utt) if spec.task in SPEECH_TASKS else 0
            text = d.text[utt]
            if spec.task == "asr":
                rows.append((di, utt, src, src, frames, None, text))
            elif spec.task == "lm":
                prefix, rest = split_for_lm(text, src)
                if rest:
                    rows.append((di, utt, src, src, 0, prefix, rest))
            else:
                for tgt in _directions(spec, src, sorted(d.translations)):
                    if tgt not in d.translations:
                        raise ConfigError(
                            f"task {spec.task!r} {src}->{tgt}: {d.path} has no text.{tgt} (translations present: "
                            f"{sorted(d.translations) or 'none'})")
                    if utt not in d.translations[tgt]:
                        raise DataError(f"no translation into {tgt}", d.path / f"text.{tgt}", utt=utt)
                    rows.append((di, utt, src, tgt, frames, text if spec.task == "t2tt" else None,
                                 d.translations[tgt][utt]))
    if not rows:
        raise ConfigError(f"task {spec.task!r} has no examples in {[str(d.path) for d in dirs]}"
                          + (f" for languages {sorted(want)}" if want else ""))
    n_target = count_tokens([r[6] for r in rows])
    n_src = count_tokens([r[5] or "" for r in rows])
    out = []
    for r, nt, ns in zip(rows, n_target, n_src):
        di, utt, src, tgt, frames, src_text, target = r
        n_tokens = PROMPT_TOKENS + nt + ns + (speech_len(frames) if frames else 0)
        key = f"{dirs[di].path.name}/{utt}/{spec.task}/{tgt}"
        out.append(Example(key, utt, dir_offset + di, spec.task, src, tgt, frames, src_text, target, n_tokens))
    return out


def make_batches(
    examples: Sequence[Example], max_frames: int, max_tokens: int, max_utts: int
) -> List[List[Example]]:
    """Cut length-sorted examples into dynamic batches whose *padded* size stays within the limits:
    batch_size × longest frames ≤ max_frames and batch_size × longest tokens ≤ max_tokens."""
    longest = max(examples, key=lambda e: (e.num_frames, e.n_tokens))
    if longest.num_frames > max_frames:
        raise ConfigError(f"batch.max_frames={max_frames} is smaller than the longest utterance "
                          f"({longest.key}: {longest.num_frames} frames)")
    longest_tok = max(examples, key=lambda e: e.n_tokens)
    if longest_tok.n_tokens > max_tokens:
        raise ConfigError(f"batch.max_tokens={max_tokens} is smaller than the longest example "
                          f"({longest_tok.key}: ~{longest_tok.n_tokens} LLM tokens)")
    ordered = sorted(examples, key=lambda e: (e.num_frames, e.n_tokens, e.key))
    batches: List[List[Example]] = []
    cur: List[Example] = []
    mf = mt = 0
    for e in ordered:
        nf, nt = max(mf, e.num_frames), max(mt, e.n_tokens)
        n = len(cur) + 1
        if cur and (n * nf > max_frames or n * nt > max_tokens or n > max_utts):
            batches.append(cur)
            cur, nf, nt = [], e.num_frames, e.n_tokens
        cur.append(e)
        mf, mt = nf, nt
    if cur:
        batches.append(cur)
    return batches


def padding_fraction(batches: Sequence[Sequence[Example]]) -> Tuple[float, float]:
    """Fraction of padded encoder frames and of padded LLM tokens over a set of batches."""
    pf = rf = pt = rt = 0
    for b in batches:
        rf += sum(e.num_frames for e in b)
        pf += len(b) * max(e.num_frames for e in b)
        rt += sum(e.n_tokens for e in b)
        pt += len(b) * max(e.n_tokens for e in b)
    return (1 - rf / pf if pf else 0.0), (1 - rt / pt if pt else 0.0)


class MixtureSampler:
    """Deterministic sampler over groups of batches.

    Group ``g`` is drawn for micro-batch ``m`` with probability ``w_task(g) · p_lang(g)``, where
    ``p_lang ∝ n^(1/T)`` among the groups of the same task (language sampling with temperature T).
    Each group walks through its batches in an order reshuffled every epoch of that group.
    """

    BLOCK = 4096

    def __init__(self, groups: Dict[Tuple[str, str], List[List[Example]]], task_weights: Dict[str, float],
                 temperature: float, seed: int) -> None:
        if temperature <= 0:
            raise ConfigError("sampling.temperature must be positive")
        self.keys = sorted(groups)
        self.groups = [groups[k] for k in self.keys]
        self.seed = int(seed)
        total_w = sum(task_weights[t] for t in {k[0] for k in self.keys})
        probs = np.zeros(len(self.keys))
        for task in {k[0] for k in self.keys}:
            idx = [i for i, k in enumerate(self.keys) if k[0] == task]
            sizes = np.array([sum(len(b) for b in self.groups[i]) for i in idx], dtype=float)
            share = sizes ** (1.0 / temperature)
            probs[idx] = task_weights[task] / total_w * share / share.sum()
        self.probs = probs / probs.sum()
        self._choices = np.zeros(0, dtype=np.int64)

    def _group_choices(self, upto: int) -> np.ndarray:
        while len(self._choices) < upto:
            block = len(self._choices) // self.BLOCK
            rng = np.random.default_rng([self.seed, 7919, block])
            new = rng.choice(len(self.keys), size=self.BLOCK, p=self.probs)
            self._choices = np.concatenate([self._choices, new])
        return self._choices[:upto]

    def batch(self, m: int) -> List[Example]:
        """The global batch of micro-batch index ``m`` (pure function of seed and m)."""
        choices = self._group_choices(m + 1)
        g = int(choices[m])
        pos = int(np.count_nonzero(choices[:m] == g))
        n = len(self.groups[g])
        epoch, i = divmod(pos, n)
        perm = np.random.default_rng([self.seed, g, epoch]).permutation(n)
        return self.groups[g][int(perm[i])]

    def group_of(self, m: int) -> Tuple[str, str]:
        return self.keys[int(self._group_choices(m + 1)[m])]


def spec_augment(feats: torch.Tensor, lens: torch.Tensor, cfg: Dict, gen: torch.Generator) -> torch.Tensor:
    """SpecAugment (frequency and time masks) on [B, T, M] features, in place on a copy.

    cfg: {freq_masks: 2, freq_width: 27, time_masks: 2, time_width_ratio: 0.05}; masks stay inside
    each utterance's true length and use the given generator (deterministic per micro-batch).
    """
    out = feats.clone()
    n_mels = feats.shape[2]
    for b in range(feats.shape[0]):
        L = int(lens[b])
        for _ in range(int(cfg.get("freq_masks", 2))):
            w = int(torch.randint(0, int(cfg.get("freq_width", 27)) + 1, (1,), generator=gen))
            f0 = int(torch.randint(0, max(1, n_mels - w), (1,), generator=gen))
            out[b, :L, f0:f0 + w] = 0.0
        max_w = max(1, int(L * float(cfg.get("time_width_ratio", 0.05))))
        for _ in range(int(cfg.get("time_masks", 2))):
            w = int(torch.randint(0, max_w + 1, (1,), generator=gen))
            t0 = int(torch.randint(0, max(1, L - w), (1,), generator=gen))
            out[b, t0:t0 + w, :] = 0.0
    return out


class FeatureSource:
    """Loads log-mel features of utterances: from feats.scp (dumped) or computed on the fly."""

    def __init__(self, dirs: Sequence[DataDir], n_mels: int, on_the_fly: Optional[bool] = None) -> None:
        self.dirs = list(dirs)
        self.n_mels = n_mels
        self.on_the_fly = on_the_fly
        self._readers: Dict[int, object] = {}
        self._checked: set = set()

    def _use_dumped(self, d: DataDir) -> bool:
        if self.on_the_fly is None:
            return d.feats_scp is not None
        if not self.on_the_fly and d.feats_scp is None:
            raise ConfigError(f"features are set to 'dumped' but {d.path} has no feats.scp (run the feature stage)")
        return not self.on_the_fly

    def load(self, items: Sequence[Tuple[int, str]]) -> List[torch.Tensor]:
        """Features [T, n_mels] for (dir_index, utt) pairs."""
        import kaldiio

        from partlib.data.audio import AudioReader
        from partlib.features import check_mel_bins, compute_features, read_feats_type

        out: List[Optional[torch.Tensor]] = [None] * len(items)
        wav_idx, wavs, wav_utts = [], [], []
        for i, (di, utt) in enumerate(items):
            d = self.dirs[di]
            if self._use_dumped(d):
                if di not in self._checked:  # once per dir: the dump's mel bins match the encoder
                    check_mel_bins(read_feats_type(d.path).n_mels, self.n_mels, str(d.path))
                    self._checked.add(di)
                out[i] = torch.from_numpy(np.array(kaldiio.load_mat(d.feats_scp[utt]), dtype=np.float32))
            else:
                if di not in self._readers:
                    self._readers[di] = AudioReader(d)
                wav_idx.append(i)
                wavs.append(self._readers[di][utt])
                wav_utts.append(utt)
        if wavs:
            for i, f in zip(wav_idx, compute_features(wavs, self.n_mels, utts=wav_utts)):
                out[i] = f
        return out  # type: ignore[return-value]


def collate(examples: Sequence[Example], feats: Optional[List[torch.Tensor]]) -> Dict:
    """The model's batch dict (see partlib.models.SpeechLLM.forward) from examples and features."""
    batch = {
        "utt_ids": [e.utt for e in examples],
        "keys": [e.key for e in examples],
        "tasks": [e.task for e in examples],
        "src_langs": [e.src_lang for e in examples],
        "tgt_langs": [e.tgt_lang for e in examples],
        "src_texts": [e.src_text for e in examples],
        "targets": [e.target for e in examples],
        "feats": None,
        "feat_lens": None,
    }
    if feats is not None and any(f is not None for f in feats):
        n_mels = next(f for f in feats if f is not None).shape[1]
        filled = [f if f is not None else torch.zeros(0, n_mels) for f in feats]
        batch["feat_lens"] = torch.tensor([f.shape[0] for f in filled], dtype=torch.long)
        batch["feats"] = torch.nn.utils.rnn.pad_sequence(filled, batch_first=True)
    return batch


class BatchDataset(torch.utils.data.Dataset):
    """Map-style dataset whose item ``m`` is the collated slice of micro-batch ``m`` for one rank.

    Used with a DataLoader (``batch_size=None``) so that worker processes load features while the
    model trains; the order of items is the order of micro-batch indices, hence deterministic.
    """

    def __init__(self, sampler: MixtureSampler, features: FeatureSource, rank: int = 0, world_size: int = 1,
                 specaug: Optional[Dict] = None, seed: int = 0) -> None:
        self.sampler = sampler
        self.features = features
        self.rank = rank
        self.world_size = world_size
        self.specaug = specaug
        self.seed = seed

    def __len__(self) -> int:  # effectively unbounded; the trainer decides how many to take
        return 2**62

    def __getitem__(self, m: int) -> Dict:
        global_batch = self.sampler.batch(m)
        mine = global_batch[self.rank :: self.world_size]
        # A rank whose slice of a small global batch is empty still runs forward/backward (sharded
        # training needs every rank in its collectives): it gets one example whose loss counts 0.
        weight = 1.0 if mine else 0.0
        mine = mine or global_batch[:1]
        feats = None
        if mine and mine[0].task in SPEECH_TASKS:
            feats = self.features.load([(e.dir_index, e.utt) for e in mine])
        batch = collate(mine, feats)
        batch["global_n_examples"] = len(global_batch)
        batch["loss_weight"] = weight
        if self.specaug and batch["feats"] is not None:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + m)
            batch["feats"] = spec_augment(batch["feats"], batch["feat_lens"], self.specaug, gen)
        return batch
