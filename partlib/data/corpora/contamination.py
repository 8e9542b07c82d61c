"""Keep evaluation material out of training data.

CoVoST 2's audio is Common Voice 4, which Common Voice 15 contains, and the text tasks reuse
transcripts and translations. An evaluation set is *protected* by its clip names (the audio file
name without extension, so ``common_voice_de_17300796`` matches in every Common Voice release) and
by its sentences (``text`` and every ``text.<lang>``, compared whole after
:func:`partlib.text.overlap.normalize`, the project's one normalisation for text overlap).
:func:`decontaminate` removes every training utterance that shares a clip or a sentence with a
protected set; :func:`find_overlap` re-checks, and :func:`assert_clean` fails when anything remains.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set, Tuple

from partlib.common import DataError, PathLike, atomic_write
from partlib.data.corpora.base import log, write_dir_atomically
from partlib.data.datadir import DataDir, MANAGED_FILES
from partlib.data.kv import read_kv, write_kv
from partlib.text.overlap import normalize


def clip_name(wav_value: str) -> Optional[str]:
    """The clip name of a plain-path ``wav.scp`` value; ``None`` for pipes and ark offsets."""
    v = wav_value.strip()
    if v.endswith("|") or ".ark:" in v:
        return None
    name = Path(v).name
    return name.rsplit(".", 1)[0] if "." in name else name


def _sentences(dd: DataDir, utt: str) -> List[str]:
    texts = [dd.text[utt]] if dd.text is not None else []
    texts += [m[utt] for m in dd.translations.values()]
    return [k for k in map(normalize, texts) if k]


def _clip(dd: DataDir, utt: str) -> Optional[str]:
    if dd.segments is not None or dd.wav_scp is None:  # segments cut long recordings, not clips
        return None
    return clip_name(dd.wav_scp[utt])


@dataclass
class Protected:
    """Clip names and sentence keys that must not occur in training data."""

    clips: Set[str] = field(default_factory=set)
    sentences: Set[str] = field(default_factory=set)

    @classmethod
    def from_dirs(cls, dirs: Iterable[PathLike]) -> "Protected":
        """Collect the clips and sentences of evaluation data dirs."""
        p = cls()
        for d in dirs:
            dd = DataDir.load(d)
            for utt in dd.utts:
                clip = _clip(dd, utt)
                if clip:
                    p.clips.add(clip)
                p.sentences.update(_sentences(dd, utt))
        return p

    def reason(self, dd: DataDir, utt: str) -> Optional[str]:
        """``"clip"`` or ``"sentence"`` when the utterance overlaps, else ``None``."""
        if _clip(dd, utt) in self.clips:
            return "clip"
        if any(s in self.sentences for s in _sentences(dd, utt)):
            return "sentence"
        return None


def find_overlap(train_dir: PathLike, protected: Protected) -> List[Tuple[str, str]]:
    """``(utt, reason)`` for every training utterance that overlaps the protected sets."""
    dd = DataDir.load(train_dir)
    return [(u, r) for u in dd.utts if (r := protected.reason(dd, u))]


def decontaminate(train_dir: PathLike, protected: Protected) -> Dict[str, int]:
    """Remove overlapping utterances from ``train_dir`` (rewritten atomically when anything goes).

    Per-utterance files that :class:`DataDir` does not manage (``utt2sent``) are filtered too.
    Returns ``{"kept": n, "clip": n, "sentence": n}``.
    """
    train_dir = Path(train_dir)
    dd = DataDir.load(train_dir)
    counts = {"kept": 0, "clip": 0, "sentence": 0}
    keep = set()
    for utt in dd.utts:
        r = protected.reason(dd, utt)
        counts[r or "kept"] += 1
        if r is None:
            keep.add(utt)
    if len(keep) < len(dd):
        if not keep:
            raise DataError("every utterance overlaps the evaluation sets", train_dir)
        others = [f for f in sorted(train_dir.glob("utt2*")) if f.name not in MANAGED_FILES]

        def fill(tmp: Path) -> None:
            dd.subset(keep).write(tmp)
            for f in others:
                write_kv(tmp / f.name, {u: v for u, v in read_kv(f).items() if u in keep})

        write_dir_atomically(train_dir, fill, no_wav=dd.wav_scp is None)
    log.info("%s: removed %d by clip, %d by sentence, kept %d",
             train_dir.name, counts["clip"], counts["sentence"], counts["kept"])
    return counts


def assert_clean(train_dirs: Iterable[PathLike], protected: Protected) -> None:
    """Raise :class:`DataError` if any training dir still shares a clip or sentence with ``protected``."""
    for d in train_dirs:
        overlap = find_overlap(d, protected)
        if overlap:
            utt, reason = overlap[0]
            raise DataError(f"{len(overlap)} utterance(s) overlap the evaluation sets "
                            f"(first by {reason})", d, utt=utt)


def decontaminate_all(train_dirs: Iterable[PathLike], eval_dirs: Iterable[PathLike],
                      report: Optional[PathLike] = None) -> Dict[str, Dict[str, int]]:
    """Decontaminate each training dir against all eval dirs, verify, and write a JSON report."""
    train_dirs = list(train_dirs)
    protected = Protected.from_dirs(eval_dirs)
    result = {Path(d).name: decontaminate(d, protected) for d in train_dirs}
    assert_clean(train_dirs, protected)
    if report is not None:
        atomic_write(report, json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result
