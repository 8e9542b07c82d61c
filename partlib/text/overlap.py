"""Check that no held-out (dev/test) sentence occurs in training text.

A held-out sentence counts as occurring in training text when, after normalisation (lower case,
punctuation removed, whitespace collapsed), it equals a training sentence or, for text with
spaces between words, occurs inside one on word boundaries ("the dog sleeps" inside "today the
dog sleeps"). Text without spaces (Chinese) is compared whole, since any character substring
would match across word boundaries there.
"""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Dict, Iterable, List

from partlib.common import PathLike
from partlib.data.kv import read_kv

_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Lower-case, replace punctuation and symbols by spaces, collapse whitespace."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)
    return _SPACES.sub(" ", text).strip()


def data_dir_texts(path: PathLike) -> Dict[str, str]:
    """All sentences of a Kaldi data dir, from ``text`` and every ``text.<lang>``, keyed by
    ``<file>:<utt>``."""
    path = Path(path)
    out: Dict[str, str] = {}
    for f in sorted(path.glob("text*")):
        if f.name == "text" or f.name.startswith("text."):
            out.update({f"{f.name}:{utt}": t for utt, t in read_kv(f).items()})
    return out


def find_overlap(heldout: Iterable[str], train: Iterable[str]) -> List[str]:
    """The held-out sentences that occur in the training sentences (see module docstring)."""
    train_norm = {normalize(t) for t in train}
    train_norm.discard("")
    joined = "\n".join(f" {t} " for t in train_norm)
    found = []
    for h in heldout:
        n = normalize(h)
        if not n:
            continue
        if n in train_norm or (" " in n and f" {n} " in joined):
            found.append(h)
    return found
