"""Our Corr/Sub/Del/Ins counts equal NIST sclite's, per utterance, including tie cases."""
from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from partlib.bin import score as score_cli
from partlib.scoring.trn import write_trn
from partlib.scoring.wer import score_units

SCLITE = shutil.which("sclite") or "/usr/lib/sctk/bin/sclite"
pytestmark = pytest.mark.skipif(not Path(SCLITE).exists(), reason="sclite (sctk) is not installed")

_ID = re.compile(r"^id: \((.*)\)$")
_SCORES = re.compile(r"^Scores: \(#C #S #D #I\) (\d+) (\d+) (\d+) (\d+)$")


def sclite_counts(ref_trn: Path, hyp_trn: Path) -> Dict[str, Tuple[int, int, int, int]]:
    """Per-utterance (C, S, D, I) from ``sclite -o pra``."""
    out = subprocess.run([SCLITE, "-r", str(ref_trn), "trn", "-h", str(hyp_trn), "trn", "-i", "rm",
                          "-o", "pra", "stdout"], capture_output=True, text=True, check=True).stdout
    counts, utt = {}, None
    for line in out.splitlines():
        if m := _ID.match(line):
            utt = m.group(1)
        elif m := _SCORES.match(line):
            counts[utt] = tuple(int(x) for x in m.groups())
    return counts


def random_pairs(n: int, seed: int) -> List[Tuple[List[str], List[str]]]:
    """Random pairs over tiny vocabularies (many equal-cost alignments), empty sides included."""
    rng = random.Random(seed)
    pairs = [([], []), (["a"], []), ([], ["a", "b"])]
    while len(pairs) < n:
        vocab = ["a", "b", "c", "dd"][: rng.randint(1, 4)]
        pairs.append(([rng.choice(vocab) for _ in range(rng.randint(0, 14))],
                      [rng.choice(vocab) for _ in range(rng.randint(0, 14))]))
    return pairs


@pytest.mark.parametrize("seed", [0, 1])
def test_counts_equal_sclite_on_random_ties(tmp_path, seed):
    pairs = random_pairs(1500, seed)
    ids = [f"spk{k % 7}-utt{k:05d}" for k in range(len(pairs))]
    write_trn(tmp_path / "ref.trn", [(u, r) for u, (r, _) in zip(ids, pairs)])
    write_trn(tmp_path / "hyp.trn", [(u, h) for u, (_, h) in zip(ids, pairs)])
    expected = sclite_counts(tmp_path / "ref.trn", tmp_path / "hyp.trn")
    assert len(expected) == len(pairs)
    mismatches = []
    for u, (r, h) in zip(ids, pairs):
        c = score_units(r, h)[0]
        if (c.corr, c.sub, c.dele, c.ins) != expected[u]:
            mismatches.append((u, r, h, expected[u]))
    assert not mismatches, mismatches[:5]


def test_score_cli_trn_files_match_sclite_totals(tmp_path):
    (tmp_path / "ref").write_text("u1 我爱北京天安门\nu2 the quick brown fox\nu3 a b a b\n", encoding="utf-8")
    (tmp_path / "hyp").write_text("u1 我爱南京天门门\nu2 the quik brown brown fox\nu3 b a b a a\n",
                                  encoding="utf-8")
    (tmp_path / "utt2lang").write_text("u1 zh\nu2 en\nu3 de\n", encoding="utf-8")
    out = tmp_path / "out"
    assert score_cli.main(["--ref", str(tmp_path / "ref"), "--hyp", str(tmp_path / "hyp"),
                           "--utt2lang", str(tmp_path / "utt2lang"), str(out)]) == 0
    res = json.loads((out / "scores.json").read_text(encoding="utf-8"))
    got = res["sets"]["overall"]["scores"]["mixed"]["counts"]
    per_utt = sclite_counts(out / "ref.trn", out / "hyp.trn")
    total = [sum(c[k] for c in per_utt.values()) for k in range(4)]
    assert [got["corr"], got["sub"], got["del"], got["ins"]] == total
    assert per_utt["u1"][0] == 5      # characters: sclite saw the CJK text split
