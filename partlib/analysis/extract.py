"""Extract one mean-pooled vector per utterance at chosen points of a SpeechLLM.

Points (``--points``):

- ``mel``: the input log-mel features (the floor: what is there before any model);
- ``encoder``: the speech encoder output; ``adapter``: the adapter output (the LLM's speech inputs);
- ``llm:K``: LLM hidden state ``K`` at the speech positions, with the speech spliced into the ASR
  prompt (``K`` = 0 is the input embedding, ``K`` = i the output of decoder layer i, negative
  counts from the end, -1 is the last layer). For these points the LLM's representation of the
  utterance's transcript (the text alone, mean over its tokens at the same layer) is extracted too.

Every vector is a mean over the utterance's valid frames / tokens only (padding masked out).
Results are cached as one ``.npz`` per (model, data dir, point), keyed by a hash of the model
directory, the data directory, the utterance list and the point, and reused when present.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from partlib.common import ConfigError, DataError, PathLike, atomic_write, get_logger
from partlib.data.batching import collate
from partlib.data.datadir import DataDir
from partlib.data.kv import read_kv
from partlib.data.examples import Example
from partlib.features.source import FeatureSource, pad_features
from partlib.models.lora import unwrap
from partlib.models.speech_llm import SpeechLLM

log = get_logger(__name__)
CACHE_VERSION = 1
_KINDS = ("mel", "encoder", "adapter", "llm")


@dataclass(frozen=True)
class Point:
    """A place in the model where representations are taken (see the module docstring)."""

    kind: str
    layer: Optional[int] = None

    @classmethod
    def parse(cls, spec: str) -> "Point":
        """``mel``, ``encoder``, ``adapter`` or ``llm:K`` (K an integer, may be negative)."""
        kind, _, layer = spec.strip().partition(":")
        if kind not in _KINDS or (kind == "llm") != bool(layer):
            raise ConfigError(f"invalid point {spec!r}: use mel, encoder, adapter or llm:K")
        try:
            return cls(kind, int(layer) if layer else None)
        except ValueError:
            raise ConfigError(f"invalid point {spec!r}: the layer K of llm:K must be an integer") from None

    def __str__(self) -> str:
        return self.kind if self.layer is None else f"{self.kind}:{self.layer}"

    @property
    def slug(self) -> str:
        """File-name form: ``llm:-1`` -> ``llm_m1``."""
        return str(self).replace(":", "_").replace("-", "m")


def parse_points(spec: str) -> List[Point]:
    """Comma-separated points, duplicates dropped, order kept."""
    out: List[Point] = []
    for item in spec.split(","):
        if item.strip():
            p = Point.parse(item)
            if p not in out:
                out.append(p)
    if not out:
        raise ConfigError("no representation points given")
    return out


@dataclass
class Utterances:
    """The analysed utterances of one data dir; row ``i`` of every array belongs to ``utts[i]``.

    ``sentences`` are parallel-sentence ids from ``utt2sent`` (None without that file); ``texts``
    are the transcripts from ``text`` (None without it); ``lengths`` are durations or frame
    counts (``utt2dur`` / ``utt2num_frames``; None without them) used to batch similar lengths.
    """

    data_dir: Path
    utts: List[str]
    langs: List[str]
    speakers: List[str]
    sentences: Optional[List[str]]
    texts: Optional[List[str]]
    lengths: Optional[List[float]] = None


@dataclass
class Reps:
    """Vectors of one point: ``speech[n, d]`` and, for LLM points with transcripts, ``text[n, d]``."""

    speech: np.ndarray
    text: Optional[np.ndarray] = None


def _stable_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def load_utterances(data_dir: PathLike, max_utts: Optional[int] = None) -> Utterances:
    """The utterances of a (validated) data dir with language, speaker and, when present,
    parallel-sentence id (``utt2sent``) and transcript.

    With ``max_utts`` a deterministic subset is kept: utterances ordered by a hash of their
    sentence id (then utterance id) so that whole parallel sentences are kept together and the
    same sentences are chosen in every language's data dir.
    """
    d = Path(data_dir)
    dd = DataDir.load(d)
    if dd.utt2lang is None:
        raise DataError("utt2lang is needed to analyse languages", d / "utt2lang")
    if not dd.has_audio():
        raise DataError("neither feats.scp nor wav.scp: nothing to analyse", d)
    utts = dd.utts
    utt2sent = None
    if (d / "utt2sent").is_file():
        utt2sent = read_kv(d / "utt2sent")
        missing = [u for u in utts if u not in utt2sent]
        if missing:
            raise DataError(f"{len(missing)} utterances have no sentence id", d / "utt2sent", utt=missing[0])
    if dd.text is not None:
        empty = [u for u in utts if not dd.text.get(u, "").strip()]
        if empty:
            raise DataError("empty transcript (the speech<->text measures need every text)", d / "text", utt=empty[0])
    if max_utts is not None and len(utts) > max_utts:
        key = (lambda u: (_stable_hash(utt2sent[u]), u)) if utt2sent else (lambda u: (_stable_hash(u), u))
        keep = set(sorted(utts, key=key)[:max_utts])
        utts = [u for u in utts if u in keep]
    lengths = dd.utt2num_frames or dd.utt2dur
    return Utterances(
        data_dir=d,
        utts=utts,
        langs=[dd.lang(u) for u in utts],
        speakers=[dd.utt2spk[u] for u in utts],
        sentences=[utt2sent[u] for u in utts] if utt2sent else None,
        texts=[dd.text[u] for u in utts] if dd.text is not None else None,
        lengths=[float(lengths[u]) for u in utts] if lengths and all(u in lengths for u in utts) else None,
    )


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``h[B, T, D]`` over the positions where ``mask[B, T]`` is True -> ``[B, D]``."""
    m = mask.to(h.dtype).unsqueeze(-1)
    return (h * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


def length_mask(lens: torch.Tensor, max_len: int) -> torch.Tensor:
    """``[B, max_len]`` True at positions ``< lens[b]``."""
    return torch.arange(max_len, device=lens.device)[None, :] < lens[:, None]


# ------------------------------------------------------------------------------------------
# Cache
# ------------------------------------------------------------------------------------------
def _fingerprint(path: Path) -> List[Tuple[str, int, int]]:
    """(relative name, size, mtime) of every non-hidden file under ``path``: changes when it does."""
    out = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.startswith("split"))
        for name in sorted(files):
            if not name.startswith("."):
                st = os.stat(os.path.join(root, name))
                out.append((os.path.relpath(os.path.join(root, name), path), st.st_size, st.st_mtime_ns))
    return out


def cache_key(model_dir: PathLike, data_dir: PathLike, utts: Sequence[str], point: Point) -> str:
    """Hash of the model dir and data dir (paths and file stats), the utterance list and the point."""
    blob = json.dumps({
        "version": CACHE_VERSION,
        "model": [str(Path(model_dir).resolve()), _fingerprint(Path(model_dir))],
        "data": [str(Path(data_dir).resolve()), _fingerprint(Path(data_dir))],
        "utts": list(utts),
        "point": str(point),
    })
    return _stable_hash(blob)[:16]


def _save_npz(path: Path, utts: Sequence[str], reps: Reps) -> None:
    arrays = {"utts": np.asarray(utts, dtype=str), "speech": reps.speech}
    if reps.text is not None:
        arrays["text"] = reps.text
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(path, buf.getvalue())


def _load_npz(path: Path, utts: Sequence[str]) -> Optional[Reps]:
    with np.load(path) as z:
        if list(z["utts"]) != list(utts):
            return None
        return Reps(z["speech"], z["text"] if "text" in z.files else None)


# ------------------------------------------------------------------------------------------
# Extraction
# ------------------------------------------------------------------------------------------
class Extractor:
    """Mean-pooled representations of one model, cached under ``cache_dir``.

    The model (``SpeechLLM.from_pretrained(model_dir)``) is only loaded when something is not
    cached yet. ``batch_size`` utterances are processed at a time, in order of length.
    """

    def __init__(self, model_dir: PathLike, cache_dir: PathLike, *, batch_size: int = 8,
                 device: str = "cpu") -> None:
        self.model_dir = Path(model_dir)
        self.cache_dir = Path(cache_dir)
        self.batch_size = batch_size
        self.device = torch.device(device)
        self._model: Optional[SpeechLLM] = None

    @property
    def model(self) -> SpeechLLM:
        """The SpeechLLM in eval mode, loaded on first use."""
        if self._model is None:
            log.info("loading %s", self.model_dir)
            self._model = SpeechLLM.from_pretrained(self.model_dir).to(self.device).eval()
        return self._model

    def cache_path(self, data: Utterances, point: Point) -> Path:
        """Where the vectors of ``point`` for ``data`` are cached."""
        key = cache_key(self.model_dir, data.data_dir, data.utts, point)
        return self.cache_dir / f"{data.data_dir.name}.{point.slug}.{key}.npz"

    def extract(self, data: Utterances, points: Sequence[Point]) -> Dict[Point, Reps]:
        """Vectors of every point for every utterance of ``data`` (cached ones are reused)."""
        out: Dict[Point, Reps] = {}
        for p in points:
            path = self.cache_path(data, p)
            if path.is_file():
                reps = _load_npz(path, data.utts)
                if reps is not None:
                    out[p] = reps
        todo = [p for p in points if p not in out]
        if todo:
            log.info("extracting %s for %d utterances of %s", ",".join(map(str, todo)),
                     len(data.utts), data.data_dir)
            computed = self._compute(data, todo)
            for p in todo:
                _save_npz(self.cache_path(data, p), data.utts, computed[p])
            out.update(computed)
        return {p: out[p] for p in points}

    @torch.no_grad()
    def _compute(self, data: Utterances, points: Sequence[Point]) -> Dict[Point, Reps]:
        model = self.model
        n_layers = model.num_llm_layers()
        for p in points:
            if p.kind == "llm" and not -(n_layers + 1) <= p.layer <= n_layers:
                raise ConfigError(f"point {p}: the LLM has hidden states 0..{n_layers} (or -1..-{n_layers + 1})")
        feats_src = FeatureSource([DataDir.load(data.data_dir)], model.n_mels)
        order = _length_order(data)
        speech: Dict[Point, List[np.ndarray]] = {p: [] for p in points}
        text: Dict[Point, List[np.ndarray]] = {p: [] for p in points if p.kind == "llm"}
        llm_layers = [p.layer for p in points if p.kind == "llm"]
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            utts = [data.utts[i] for i in idx]
            feats, lens = pad_features(feats_src.load([(0, u) for u in utts]))
            feats, lens = feats.to(self.device), lens.to(self.device)
            pooled = self._speech_batch(model, data, idx, feats, lens, points, llm_layers)
            for p in points:
                speech[p].append(pooled[p])
            if text and data.texts is not None:
                per_layer = self._text_batch(model, [data.texts[i] for i in idx], llm_layers)
                for p in text:
                    text[p].append(per_layer[p.layer])
        inverse = np.argsort(order)  # back to the order of data.utts
        result = {}
        for p in points:
            sp = np.concatenate(speech[p])[inverse]
            tx = np.concatenate(text[p])[inverse] if p in text and text[p] else None
            result[p] = Reps(sp, tx)
        return result

    def _speech_batch(self, model: SpeechLLM, data: Utterances, idx: Sequence[int], feats: torch.Tensor,
                      lens: torch.Tensor, points: Sequence[Point], llm_layers: List[int]) -> Dict[Point, np.ndarray]:
        """Pooled speech vectors of one batch at every point."""
        kinds = {p.kind for p in points}
        vecs: Dict[str, torch.Tensor] = {}
        hidden: Dict[int, torch.Tensor] = {}
        if "mel" in kinds:
            vecs["mel"] = masked_mean(feats, length_mask(lens, feats.shape[1]))
        if kinds & {"encoder", "adapter", "llm"}:
            # The ASR decoding prompt with the speech spliced in, as the model decodes it.
            batch = collate([_asr_example(data, i) for i in idx], None)
            batch.update(feats=feats, feat_lens=lens, targets=None)
            states = model.hidden_states(batch, llm_layers)
            vecs["encoder"] = masked_mean(states["encoder"], length_mask(states["encoder_lens"], states["encoder"].shape[1]))
            vecs["adapter"] = masked_mean(states["adapter"], length_mask(states["adapter_lens"], states["adapter"].shape[1]))
            for k in llm_layers:
                hidden[k] = masked_mean(states["llm"][k], states["speech_mask"])
        return {p: (hidden[p.layer] if p.kind == "llm" else vecs[p.kind]).float().cpu().numpy() for p in points}

    def _text_batch(self, model: SpeechLLM, texts: Sequence[str], layers: List[int]) -> Dict[int, np.ndarray]:
        """Mean over the transcript's tokens (the text alone, no prompt) at each LLM hidden state."""
        ids = [model.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        lens = torch.tensor([len(i) for i in ids], device=self.device)
        width = max(1, int(lens.max()))
        input_ids = torch.full((len(ids), width), model.prompt.pad_id, dtype=torch.long, device=self.device)
        for b, seq in enumerate(ids):
            input_ids[b, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask = length_mask(lens, width)
        backbone = unwrap(model.llm).get_decoder()
        hs = backbone(input_ids=input_ids, attention_mask=mask.long(), output_hidden_states=True,
                      use_cache=False).hidden_states
        return {k: masked_mean(hs[k], mask).float().cpu().numpy() for k in layers}


def _asr_example(data: Utterances, i: int) -> Example:
    """The ASR example of utterance ``i`` (speech only: no target is needed to read states)."""
    lang = data.langs[i]
    return Example(key=data.utts[i], utt=data.utts[i], dir_index=0, task="asr", src_lang=lang, tgt_lang=lang,
                   num_frames=0, src_text=None, target="", n_tokens=0)


def _length_order(data: Utterances) -> List[int]:
    """Utterance indices sorted by length when lengths are known, to limit padding."""
    if data.lengths is None:
        return list(range(len(data.utts)))
    return sorted(range(len(data.utts)), key=lambda i: data.lengths[i])
