"""Whether held-out (dev/test) text occurs in training text: the project's one text-overlap rule.

Sentences are compared after :func:`normalize`. A held-out sentence occurs in training text when
its normal form equals a training sentence's or, for text with spaces between words, occurs
inside one on word boundaries ("the dog sleeps" inside "today the dog sleeps"). Text without
spaces (Chinese) is compared whole, since any character substring would match across word
boundaries there. :func:`find_overlap` checks held-out sentences against training text (the LM
pretraining's contamination check); :mod:`partlib.data.corpora.contamination` keys the sentences
of protected evaluation sets by the same :func:`normalize`.
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
    """The comparison form of a sentence: Unicode NFKC, case folded (``str.casefold``: "Straße"
    and "STRASSE" meet), every punctuation and symbol character (Unicode ``P*``, ``S*``) a space,
    control and format characters (``C*``: zero-width joiners, BOM, ...) removed, whitespace runs
    one space, ends stripped.

    One form for every overlap check, chosen so that the same sentence written differently
    (quotes, full-width forms, case, spacing, invisible characters) is found, while word boundaries
    are kept: containment on word boundaries (:func:`find_overlap`) needs them.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if cat[0] in "PS" else ("" if cat[0] == "C" and not c.isspace() else c)
                   for c, cat in ((c, unicodedata.category(c)) for c in text))
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
