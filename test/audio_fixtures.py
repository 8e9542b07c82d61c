"""Speech for tests: espeak-ng renderings at 16 kHz, with the exact sample span of each word."""
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import pytest
import soundfile as sf

from partlib.data import audio

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


def espeak(text: str, voice: str = "en", rate: int = 170) -> np.ndarray:
    """``text`` spoken by espeak-ng: 16 kHz mono float32, leading and trailing silence removed."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-w", str(path), text], check=True)
        x, sr = sf.read(path, dtype="float32")
    x = audio.from_array(x, sr)
    loud = np.nonzero(np.abs(x) > 0.01)[0]
    return x[loud[0]:loud[-1] + 1]


def join(clips: Sequence[np.ndarray], gaps_s: Sequence[float], lead_s: float = 0.3
         ) -> Tuple[np.ndarray, List[Tuple[int, int]]]:
    """The clips in a row, clip i followed by ``gaps_s[i]`` s of silence, after ``lead_s`` s of
    silence; returns the samples and each clip's [start, end) sample span (written out here, not
    with the library's own joiner)."""
    parts = [np.zeros(int(lead_s * 16000), np.float32)]
    spans, pos = [], len(parts[0])
    for clip, gap in zip(clips, gaps_s):
        spans.append((pos, pos + len(clip)))
        parts += [clip, np.zeros(int(gap * 16000), np.float32)]
        pos += len(clip) + int(gap * 16000)
    return np.concatenate(parts), spans
