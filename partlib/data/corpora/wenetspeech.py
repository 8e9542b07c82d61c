"""WenetSpeech (Mandarin, 10k h): segments-based data dirs from ``WenetSpeech.json``.

Layout::

    <wenet_root>/WenetSpeech.json            ({"audios": [{aid, path, duration, segments: [...]}, ...]})
    <wenet_root>/audio/.../<aid>.opus        (``path`` in the JSON, relative to its folder)

The JSON (several GB) is parsed as a stream, one ``audios`` entry at a time, so memory holds one
recording's metadata plus the selected segments (a few hundred bytes per segment: a few GB for L). Data dirs: ``wenetspeech_train_<s|m|l>``,
``wenetspeech_dev``, ``wenetspeech_test_net``, ``wenetspeech_test_meeting``; recording = ``aid``,
speaker = ``aid``, utterance = ``sid`` (which starts with the aid, so the speaker prefixes it).
Membership of a segment is its own ``subsets`` list. Ids may start with ``-``; they
only ever travel inside files, never as command-line arguments. Chinese is scored by CER (``zh`` is a
no-space language in ``partlib.data.langs``).

:func:`dump_segments` writes each segment's audio once into a kaldiio ark (16 kHz, 16-bit wav), so
training never decodes a long recording per segment.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Iterator, List, Sequence

import numpy as np

from partlib.common import DataError, PathLike
from partlib.data.corpora.base import (
    Counts, DataDirBuilder, clean_text, log, require, write_all, write_dir_atomically)
from partlib.data.datadir import DataDir

LAYOUT = """  <wenet_root>/WenetSpeech.json     (top-level key "audios")
  <wenet_root>/<path of each audio>  (e.g. audio/train/youtube/B00000/<aid>.opus)"""
TRAIN_SUBSETS = ("S", "M", "L", "W")
EVAL_SUBSETS = ("DEV", "TEST_NET", "TEST_MEETING")


class _Stream:
    """Incremental JSON reading: ``raw_decode`` on a buffer refilled from the file."""

    def __init__(self, path: Path, chunk: int = 1 << 20) -> None:
        self.f = open(path, encoding="utf-8")
        self.path, self.chunk = path, chunk
        self.buf, self.pos, self.eof = "", 0, False
        self.dec = json.JSONDecoder()

    def _fill(self) -> bool:
        data = self.f.read(self.chunk)
        if not data:
            self.eof = True
            return False
        self.buf = self.buf[self.pos:] + data
        self.pos = 0
        return True

    def peek(self) -> str:
        """The next non-whitespace character ('' at the end of the file)."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos].isspace():
                self.pos += 1
            if self.pos < len(self.buf) or not self._fill():
                return self.buf[self.pos:self.pos + 1]

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise DataError(f"malformed JSON: expected '{char}' near offset {self.pos}", self.path)
        self.pos += 1

    def value(self):
        """Decode the next JSON value (refilling until it is complete)."""
        self.peek()
        while True:
            try:
                obj, end = self.dec.raw_decode(self.buf, self.pos)
                # A number at the buffer end may continue in the next chunk.
                if end < len(self.buf) or self.eof or not self._fill():
                    self.pos = end
                    return obj
            except json.JSONDecodeError as e:
                if not self._fill():
                    raise DataError(f"malformed JSON: {e.msg}", self.path) from None

    def close(self) -> None:
        self.f.close()


def iter_audios(path: PathLike, chunk: int = 1 << 20) -> Iterator[dict]:
    """Yield the entries of the top-level ``audios`` array of a WenetSpeech JSON, one at a time
    (``chunk`` characters are read at once)."""
    path = Path(path)
    s = _Stream(path, chunk)
    try:
        s.expect("{")
        found = False
        while s.peek() != "}":
            key = s.value()
            s.expect(":")
            if key == "audios":
                found = True
                s.expect("[")
                while s.peek() != "]":
                    yield s.value()
                    if s.peek() == ",":
                        s.pos += 1
                s.expect("]")
            else:
                s.value()
            if s.peek() == ",":
                s.pos += 1
            elif s.peek() != "}":
                raise DataError(f"malformed JSON near offset {s.pos}", path)
        if not found:
            raise DataError('no top-level "audios" key', path)
    finally:
        s.close()


def _set_name(subset: str) -> str:
    return "train_" + subset.lower() if subset in TRAIN_SUBSETS else subset.lower()


def prepare_wenetspeech(root: PathLike, out_dir: PathLike, train_subset: str = "S",
                        eval_subsets: Sequence[str] = EVAL_SUBSETS, allow_missing: bool = False,
                        prefix: str = "wenetspeech") -> Dict[str, Counts]:
    """Write ``<prefix>_train_<subset>`` and the eval data dirs; return counts per data dir."""
    root, out_dir = Path(root), Path(out_dir)
    if train_subset not in TRAIN_SUBSETS:
        raise DataError(f"unknown training subset '{train_subset}' (one of {' '.join(TRAIN_SUBSETS)})")
    jpath = require(root / "WenetSpeech.json", LAYOUT)
    wanted = [train_subset, *eval_subsets]
    builders = {s: DataDirBuilder() for s in wanted}
    counts = {s: Counts() for s in wanted}
    missing_recordings: List[str] = []
    for audio in iter_audios(jpath):
        try:
            aid, rel, segments = audio["aid"], audio["path"], audio["segments"]
        except KeyError as e:
            raise DataError(f"audio entry without {e.args[0]!r}", jpath) from None
        if not aid or aid != aid.strip() or any(c.isspace() for c in aid):
            raise DataError(f"invalid aid {aid!r}", jpath)
        wav = (jpath.parent / rel).resolve()
        present = wav.is_file()
        for seg in segments:
            try:
                sid, text = seg["sid"], clean_text(seg["text"])
                begin, end = float(seg["begin_time"]), float(seg["end_time"])
            except (KeyError, TypeError, ValueError) as e:
                raise DataError(f"bad segment of audio '{aid}' ({type(e).__name__}: {e})", jpath) from None
            if not sid.startswith(aid) or any(c.isspace() for c in sid):
                raise DataError(f"segment id does not start with its aid '{aid}'", jpath, utt=sid)
            for subset in set(seg.get("subsets", ())) & set(wanted):
                b, c = builders[subset], counts[subset]
                if not present:
                    c.missing_audio += 1
                elif not text:
                    c.empty_text += 1
                else:
                    b.add(sid, aid, text, "zh")
                    b.segments[sid] = (aid, begin, end)
                    b.wav_scp[aid] = str(wav)
                    c.kept += 1
        if not present and any(set(s.get("subsets", ())) & set(wanted) for s in segments):
            missing_recordings.append(str(wav))
    if missing_recordings:
        n = sum(c.missing_audio for c in counts.values())
        if not allow_missing:
            raise DataError(f"{len(missing_recordings)} recording(s) listed but absent on disk "
                            f"({n} segments), e.g. {missing_recordings[0]}; pass --allow-missing true "
                            "to skip them", jpath)
        log.warning("%s: skipping %d segment(s) of %d recording(s) absent on disk",
                    jpath, n, len(missing_recordings))
    return write_all({f"{prefix}_{_set_name(s)}": (builders[s], counts[s]) for s in wanted}, out_dir)


def dump_segments(src_dir: PathLike, out_dir: PathLike, dump_dir: PathLike) -> int:
    """Decode each recording once and write its segments into ``<dump_dir>/audio.ark``.

    ``out_dir`` becomes a copy of ``src_dir`` without ``segments`` whose ``wav.scp`` points into the
    ark (``<ark>:<offset>``, 16 kHz 16-bit wav entries) and which has ``utt2dur``. Returns the number
    of segments.
    """
    import kaldiio

    from partlib.data.audio import TARGET_SR, AudioReader

    src = DataDir.load(src_dir)
    if src.segments is None:
        raise DataError("no segments file: nothing to dump", src_dir)
    dump_dir = Path(dump_dir).resolve()
    dump_dir.mkdir(parents=True, exist_ok=True)
    ark = dump_dir / "audio.ark"
    tmp_ark, tmp_scp = dump_dir / ".audio.ark.tmp", dump_dir / ".audio.scp.tmp"
    reader = AudioReader(src, sr=TARGET_SR)
    # Ordered by recording and start time, so the reader decodes each recording once.
    order = sorted(src.segments, key=lambda u: (src.segments[u][0], src.segments[u][1]))
    durations = {}
    try:
        with kaldiio.WriteHelper(f"ark,scp:{tmp_ark},{tmp_scp}", write_function="soundfile") as writer:
            for utt in order:
                pcm = (np.clip(reader[utt], -1.0, 1.0) * 32767.0).round().astype(np.int16)
                writer(utt, (TARGET_SR, pcm))
                durations[utt] = len(pcm) / TARGET_SR
        # The scp names the temporary ark; keep the offsets, point at the final name.
        wav_scp = {}
        for line in tmp_scp.read_text(encoding="utf-8").splitlines():
            utt, loc = line.split(maxsplit=1)
            wav_scp[utt] = f"{ark}:{loc.rsplit(':', 1)[1]}"
        tmp_ark.replace(ark)
    finally:
        tmp_scp.unlink(missing_ok=True)
        tmp_ark.unlink(missing_ok=True)
    out = DataDir(src.utt2spk, wav_scp=wav_scp, text=src.text, utt2lang=src.utt2lang,
                  translations=src.translations, utt2dur=durations)
    write_dir_atomically(out_dir, out.write)
    return len(wav_scp)
