"""sclite's ``trn`` transcript format and its ``pra``-style alignment printout.

A trn line is ``unit unit ... (<id>)``; sclite reads the id in the final parentheses and takes the
speaker as the part of the id before its first ``-`` or ``_``. We write the Kaldi utterance id
unchanged as the trn id (Kaldi ids start with the speaker id by convention, so sclite's per-speaker
grouping is meaningful). For CER languages the units are characters, so sclite's word counts are
character counts.
"""
from __future__ import annotations

from typing import Iterable, List, Sequence, Tuple

from partlib.common import PathLike, atomic_open
from partlib.scoring.align import CORRECT, Alignment


def trn_line(utt: str, units: Sequence[str]) -> str:
    """One trn line (without newline); an empty transcript gives ``(<id>)`` alone."""
    return " ".join([*units, f"({utt})"])


def write_trn(path: PathLike, rows: Iterable[Tuple[str, Sequence[str]]]) -> None:
    """Write ``(utt, units)`` rows as a trn file, atomically, in the given order."""
    with atomic_open(path) as f:
        for utt, units in rows:
            f.write(trn_line(utt, units) + "\n")


def pra_rows(ali: Alignment) -> List[str]:
    """``REF:``, ``HYP:`` and ``Eval:`` rows like sclite's ``-o pra``: errors upper-cased,
    ``*`` for the missing side, columns padded to the wider token."""
    ref_cells, hyp_cells, eval_cells = [], [], []
    for r, h, op in ali.pairs:
        r_s = "*" if r is None else (r if op == CORRECT else r.upper())
        h_s = "*" if h is None else (h if op == CORRECT else h.upper())
        width = max(len(r_s), len(h_s))
        ref_cells.append(r_s.ljust(width))
        hyp_cells.append(h_s.ljust(width))
        eval_cells.append(("" if op == CORRECT else op).ljust(width))
    rows = [("REF:  ", ref_cells), ("HYP:  ", hyp_cells), ("Eval: ", eval_cells)]
    return [(head + " ".join(cells)).rstrip() for head, cells in rows]
