"""Kaldi data dirs exported to Lhotse Shar shards, and random access inside one shard.

Layout of an export (``<data dir>/shar`` by default)::

    shards/cuts.000000.jsonl.gz      Lhotse cuts (one supervision each), read by CutSet.from_shar
    shards/recording.000000.tar      the audio of those cuts: <utt>.flac (+ <utt>.json), in order
    done/000000.json                 written when shard 0 is complete: counts, bytes, sha256 of both
    manifest.json                    written last: every shard, utterances and hours per language,
                                     the hash of the source data dir and the export options

``shards/`` is plain Lhotse Shar (``lhotse.CutSet.from_shar(in_dir=".../shards")`` reads it), so
icefall or NeMo can read an export too. Audio is FLAC, 16 kHz mono 16-bit; a recording that is
already a short compressed clip (a plain ``.mp3``/``.opus``/``.ogg``/``.flac`` path in wav.scp
and no ``segments``) keeps its original bytes. A recording with ``segments`` is decoded once and
every segment of it is cut from that one decode. Text-only data dirs (no wav.scp) export cuts
without audio: text tasks stream from them the same way.

Each cut carries what batching and the tasks need without opening audio: ``custom.num_frames``
(the log-mel frames the in-memory path computes from utt2num_frames/utt2dur), the language, the
speaker, ``text``, every ``text.<lang>`` (``custom.translations``), ``utt2sent`` (``custom.sent``)
and the source dir's name. LLM token counts are not stored: they belong to the tokenizer of the
model being trained, so the streaming loader counts them (the shards serve any LLM).

The shard plan is a pure function of the data dir and the options, so jobs (``--nj``) write
disjoint shards (shard i by job ``i % nj + 1``) without talking to each other; every file is
written under a temporary name and renamed; a re-run keeps the complete shards and writes the rest;
the manifest is written only when every shard of the plan is complete.

Shar that lhotse itself wrote is *adopted* instead (:mod:`partlib.data.lhotse_shar`): the same
manifest and cut files, with ``adopted_from`` naming the lhotse dir whose tars hold the audio.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

from partlib.common import (ConfigError, DataError, PathLike, atomic_write, file_sha256, get_logger,
                            named_write_errors, run_jobs)
from partlib.data import audio
from partlib.data.datadir import MANAGED_FILES, META_FILES, DataDir
from partlib.data.examples import utt_num_frames

logger = get_logger("partlib.data.shards")

SHARD_DIR = "shar"  # an export's place inside its data dir
MANIFEST = "manifest.json"
FORMAT = "part-shar-1"
# A plain audio file with one of these endings and no segments keeps its bytes in the shard.
ORIGINAL_EXTENSIONS = (".mp3", ".opus", ".ogg", ".flac")
# FLAC of 16 kHz 16-bit speech: an estimate used only to plan shard sizes before encoding.
_FLAC_BYTES_PER_S = 20000.0
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class ExportOptions:
    """Shard bounds: a shard closes after the recording that reaches either bound."""

    shard_utts: int = 20000
    shard_mb: float = 1024.0

    def check(self) -> "ExportOptions":
        if self.shard_utts < 1 or self.shard_mb <= 0:
            raise ConfigError(f"shard bounds must be positive (shard_utts={self.shard_utts}, "
                              f"shard_mb={self.shard_mb})")
        return self


def shard_dir(data_dir: PathLike) -> Path:
    """Where the export of ``data_dir`` lives."""
    return Path(data_dir) / SHARD_DIR


def _paths(out: Path, index: int) -> Tuple[Path, Path, Path]:
    """(cuts, recording tar, completion record) of shard ``index``."""
    return (out / "shards" / f"cuts.{index:06d}.jsonl.gz", out / "shards" / f"recording.{index:06d}.tar",
            out / "done" / f"{index:06d}.json")


# Files a shard's contents do not depend on: dumping features into a dir leaves its export current.
_UNHASHED = {"feats.scp", *META_FILES}


def source_hash(data_dir: PathLike) -> str:
    """sha256 over the data dir's Kaldi files (names and contents): what an export was made from."""
    h = hashlib.sha256()
    names = sorted(set(MANAGED_FILES) - _UNHASHED) + sorted(p.name for p in Path(data_dir).glob("text.*"))
    for name in names:
        p = Path(data_dir) / name
        if p.is_file():
            h.update(name.encode() + b"\0")
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
                    h.update(chunk)
    return h.hexdigest()


def _original_ext(d: DataDir, reco: str) -> Optional[str]:
    """The extension of a recording kept as its original bytes, else None (re-encoded to FLAC)."""
    if d.segments is not None or d.wav_scp is None:
        return None
    value = d.wav_scp[reco].strip()
    ext = os.path.splitext(value)[1].lower()
    return ext if ext in ORIGINAL_EXTENSIONS and os.path.isfile(value) else None


def plan(d: DataDir, opts: ExportOptions) -> List[List[str]]:
    """The shards of a data dir: lists of utterance ids, recordings kept whole, grouped by language
    (recordings of one language are contiguous, so most shards hold one language)."""
    by_reco: Dict[str, List[str]] = {}
    for utt in d.utts:
        by_reco.setdefault(d.recording(utt), []).append(utt)
    recos = sorted(by_reco, key=lambda r: (d.lang(by_reco[r][0]), r))
    shards: List[List[str]] = []
    cur: List[str] = []
    size = 0.0
    for reco in recos:
        utts = by_reco[reco]
        for utt in utts:
            if d.has_audio():
                ext = _original_ext(d, reco)
                size += (os.path.getsize(d.wav_scp[reco].strip()) if ext
                         else utt_num_frames(d, utt) / 100.0 * _FLAC_BYTES_PER_S)
            size += 200  # metadata
        cur += utts
        if len(cur) >= opts.shard_utts or size >= opts.shard_mb * 2**20:
            shards.append(cur)
            cur, size = [], 0.0
    if cur:
        shards.append(cur)
    return shards


def _cut_dict(d: DataDir, utt: str, n_samples: Optional[int], ext: Optional[str], rate: int) -> Dict[str, Any]:
    """The Lhotse MonoCut (as its dict) of one utterance; the recording is a Shar placeholder."""
    frames = utt_num_frames(d, utt) if d.has_audio() else 0
    duration = n_samples / rate if n_samples is not None else frames / 100.0
    sup: Dict[str, Any] = {"id": utt, "recording_id": utt, "start": 0.0, "duration": duration, "channel": 0,
                           "language": d.lang(utt), "speaker": d.utt2spk[utt]}
    if d.text is not None:
        sup["text"] = d.text[utt]
    custom: Dict[str, Any] = {"num_frames": frames, "source": d.path.name,
                              "translations": {t: m[utt] for t, m in d.translations.items() if utt in m}}
    if d.utt2sent is not None and utt in d.utt2sent:
        custom["sent"] = d.utt2sent[utt]
    cut: Dict[str, Any] = {"id": utt, "start": 0.0, "duration": duration, "channel": 0,
                           "supervisions": [sup], "custom": custom, "type": "MonoCut"}
    if n_samples is not None:
        cut["recording"] = {"id": utt, "sources": [{"type": "shar", "channels": [0], "source": ""}],
                            "sampling_rate": rate, "num_samples": n_samples, "duration": duration,
                            "channel_ids": [0]}
    return cut


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _flac(samples: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, audio.TARGET_SR, format="FLAC", subtype="PCM_16", compression_level=1.0)
    return buf.getvalue()


def _audio_items(d: DataDir, utts: Sequence[str]) -> Iterator[Tuple[str, bytes, str, int, int]]:
    """(utt, payload, extension, samples, rate) for each utterance; one decode per recording."""
    reader = audio.AudioReader(d)  # caches the last recording: segments of one are contiguous here
    for utt in utts:
        reco = d.recording(utt)
        ext = _original_ext(d, reco)
        if ext is not None:
            path = d.wav_scp[reco].strip()
            with open(path, "rb") as f:
                payload = f.read()
            try:
                info = sf.info(io.BytesIO(payload))
            except (sf.LibsndfileError, RuntimeError, TypeError) as e:
                raise DataError(f"cannot decode audio: {e}", path, utt=utt) from None
            if info.frames <= 0:  # a header without a length: decode to count the samples
                n, rate = len(audio.decode(path, utt)[0]), info.samplerate
            else:
                n, rate = info.frames, info.samplerate
            yield utt, payload, ext.lstrip("."), n, rate
        else:
            samples = reader[utt]
            yield utt, _flac(samples), "flac", len(samples), audio.TARGET_SR


def write_shard(d: DataDir, out: Path, index: int, utts: Sequence[str], src_hash: str, key: str) -> Dict[str, Any]:
    """Write shard ``index`` (cuts + audio tar) under temporary names, then rename them and write
    its completion record last; return the record. ``key`` names what the shard holds
    (:func:`_shard_key`)."""
    cuts_path, tar_path, done_path = _paths(out, index)
    done_path.unlink(missing_ok=True)  # an older shard of this index is no longer complete
    cuts_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_cuts = cuts_path.with_name(f".{cuts_path.name}.tmp")
    tmp_tar = tar_path.with_name(f".{tar_path.name}.tmp")
    langs: Dict[str, int] = {}
    seconds: Dict[str, float] = {}
    longest = 0.0
    try:
        # mtime 0 in the gzip header: the same data and options give byte-identical shards
        with named_write_errors(f"shard {index} ({cuts_path}, {tar_path})"), contextlib.ExitStack() as stack:
            cf = stack.enter_context(io.TextIOWrapper(gzip.GzipFile(tmp_cuts, "wb", mtime=0), encoding="utf-8"))
            tar = stack.enter_context(tarfile.open(tmp_tar, "w")) if d.has_audio() else None
            items = (_audio_items(d, utts) if tar is not None
                     else ((utt, b"", None, None, audio.TARGET_SR) for utt in utts))  # text only: no audio
            for utt, payload, ext, n, rate in items:
                cut = _cut_dict(d, utt, n, ext, rate)
                if tar is not None:
                    _add_member(tar, f"{utt}.{ext}", payload)
                    _add_member(tar, f"{utt}.json", json.dumps(cut["recording"]).encode("utf-8"))
                cf.write(json.dumps(cut, ensure_ascii=False) + "\n")
                lang = cut["supervisions"][0]["language"]
                langs[lang] = langs.get(lang, 0) + 1
                if n is not None:
                    seconds[lang] = seconds.get(lang, 0.0) + cut["duration"]
                    longest = max(longest, cut["duration"])
        files = {"cuts": tmp_cuts} if not d.has_audio() else {"cuts": tmp_cuts, "recording": tmp_tar}
        record = {"index": index, "utterances": len(utts), "languages": dict(sorted(langs.items())),
                  "seconds": {k: round(v, 3) for k, v in sorted(seconds.items())}, "longest_s": longest,
                  "source_hash": src_hash, "key": key,
                  "files": {k: {"path": str(_paths(out, index)[0 if k == "cuts" else 1].relative_to(out)),
                                "bytes": p.stat().st_size, "sha256": file_sha256(p)} for k, p in files.items()}}
        for tmp in files.values():  # on disk before the record that says they are
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp_cuts, cuts_path)
        if d.has_audio():
            os.replace(tmp_tar, tar_path)
    finally:
        for p in (tmp_cuts, tmp_tar):
            if p.exists():
                p.unlink()
    atomic_write(done_path, json.dumps(record, indent=1) + "\n")
    return record


def _shard_key(src_hash: str, opts: ExportOptions, utts: Sequence[str]) -> str:
    """What a shard holds: the source, the bounds and its utterances (a record of another plan never
    passes for this one)."""
    return hashlib.sha256(json.dumps([src_hash, asdict(opts), list(utts)]).encode("utf-8")).hexdigest()


def _complete(out: Path, index: int, key: str) -> Optional[Dict[str, Any]]:
    """The completion record of shard ``index`` if it holds what the plan puts there and its files
    are whole."""
    done = _paths(out, index)[2]
    if not done.is_file():
        return None
    try:
        record = json.loads(done.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    if record.get("key") != key:
        return None
    for f in record["files"].values():
        p = out / f["path"]
        if not p.is_file() or p.stat().st_size != f["bytes"]:
            return None
    return record


def _prepare(data_dir: PathLike, out_dir: Optional[PathLike], opts: ExportOptions, nj: int
             ) -> Tuple[DataDir, Path, str, List[Tuple[List[str], str]]]:
    """The data dir, the export dir, the source hash and the plan: (utterances, key) per shard."""
    if nj < 1:
        raise ConfigError(f"--nj must be >= 1, got {nj}")
    opts.check()
    d = DataDir.load(data_dir)
    if not len(d):
        raise DataError("data dir has no utterances", d.path)
    out = Path(out_dir) if out_dir is not None else shard_dir(data_dir)
    src_hash = source_hash(data_dir)
    manifest = out / MANIFEST
    if manifest.is_file():
        try:
            old = json.loads(manifest.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            old = {}
        if old.get("source_hash") != src_hash or old.get("options") != asdict(opts):
            manifest.unlink()  # stale: the data dir or the options changed since
    return d, out, src_hash, [(utts, _shard_key(src_hash, opts, utts)) for utts in plan(d, opts)]


def export_job(data_dir: PathLike, out_dir: Optional[PathLike], opts: ExportOptions, job: int, nj: int) -> int:
    """Write the missing shards of job ``job`` (1-based) of ``nj``; return how many were written."""
    if not 1 <= job <= nj:
        raise ConfigError(f"--job must be in 1..{nj}, got {job}")
    d, out, src_hash, shards = _prepare(data_dir, out_dir, opts, nj)
    written = 0
    for index, (utts, key) in enumerate(shards):
        if index % nj == job - 1 and _complete(out, index, key) is None:
            write_shard(d, out, index, utts, src_hash, key)
            written += 1
    return written


def export(data_dir: PathLike, out_dir: Optional[PathLike] = None, opts: ExportOptions = ExportOptions(),
           nj: int = 1, cmd: Optional[str] = None) -> Path:
    """Export ``data_dir`` to Lhotse Shar shards (default ``<data_dir>/shar``); return the manifest path.

    With ``cmd`` (a Kaldi-style runner such as ``utils/run.pl``) the ``nj`` jobs run through it;
    without, in this process. Shards of an earlier run over the same data and options are kept;
    shards beyond the plan (a smaller re-export) are removed. A bad data dir stops with the data
    layer's named error before any shard is written.
    """
    d, out, src_hash, shards = _prepare(data_dir, out_dir, opts, nj)
    manifest = out / MANIFEST
    if manifest.is_file():
        logger.info("%s: complete export exists (%d shards)", out, len(shards))
        return manifest
    if cmd:
        run_jobs(cmd, nj, out / "log" / "export_shards.JOB.log",
                 ["-m", "partlib.bin.export_shards", "--shard-utts", str(opts.shard_utts),
                  "--shard-mb", str(opts.shard_mb), "--nj", str(nj), "--job", "JOB",
                  "--out-dir", str(out.absolute()), str(Path(data_dir).absolute())], "shard export",
                 failed=lambda: sorted({i % nj + 1 for i, (_, key) in enumerate(shards)
                                        if _complete(out, i, key) is None}))
    records = []
    for index, (utts, key) in enumerate(shards):
        record = _complete(out, index, key)
        if record is None:
            record = write_shard(d, out, index, utts, src_hash, key)
        records.append(record)
    for stale in list((out / "shards").glob("*.*.*")) + list((out / "done").glob("*.json")):
        number = stale.name.split(".")[1] if stale.parent.name == "shards" else stale.stem
        if not number.isdigit() or int(number) >= len(shards):  # of a larger earlier plan, or a temp file
            stale.unlink()
    body = {"format": FORMAT, "source": d.path.name, "source_hash": src_hash, "options": asdict(opts),
            "audio": d.has_audio(), "translations": sorted(d.translations),
            "utterances": sum(r["utterances"] for r in records), "languages": language_totals(records),
            "bytes": sum(f["bytes"] for r in records for f in r["files"].values()),
            "shards": records}
    atomic_write(manifest, json.dumps(body, indent=1, ensure_ascii=False) + "\n")
    logger.info("%s: %d utterances in %d shards (%.1f MB)", out, body["utterances"], len(records),
                body["bytes"] / 1e6)
    return manifest


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------
def language_totals(records: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """A manifest's ``languages``: utterances and hours per language over its shard records."""
    hours: Dict[str, float] = {}
    utterances: Dict[str, int] = {}
    for r in records:
        for lang, n in r["languages"].items():
            utterances[lang] = utterances.get(lang, 0) + n
            hours[lang] = hours.get(lang, 0.0) + r["seconds"].get(lang, 0.0) / 3600
    return {k: {"utterances": utterances[k], "hours": round(hours[k], 4)} for k in sorted(utterances)}


def load_manifest(export_dir: PathLike) -> Dict[str, Any]:
    """The manifest of a complete export; a named error when there is none or it is not ours."""
    path = Path(export_dir) / MANIFEST
    if not path.is_file():
        raise ConfigError(f"{export_dir} has no complete shard export ({MANIFEST} missing): run "
                          f"python -m partlib.bin.export_shards on its data dir (part.sh stage 3 with "
                          f"--features shards; for Shar that lhotse wrote, python -m partlib.bin.adopt_shar)")
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON: {e}", path) from None
    if body.get("format") != FORMAT:
        raise DataError(f"format {body.get('format')!r}, expected {FORMAT!r}", path)
    return body


def check_current(data_dir: PathLike, manifest: Dict[str, Any]) -> None:
    """Raise ConfigError when the export of ``data_dir`` no longer describes its source: a data dir
    whose files changed since (their hash), or adopted lhotse files that changed size or vanished
    (a stat each: the audio is not read)."""
    export = shard_dir(data_dir)
    origin = manifest.get("adopted_from")
    if origin is None:
        if manifest["source_hash"] != source_hash(data_dir):
            raise ConfigError(f"{export} was exported from an earlier state of {data_dir}: export it again "
                              f"(python -m partlib.bin.export_shards {data_dir})")
        return
    for record in manifest["shards"]:
        for f in (record["lhotse_cuts"], record["files"]["recording"]):
            p = Path(f["path"])
            size = p.stat().st_size if p.is_file() else None
            if size != f["bytes"]:
                now = "is gone" if size is None else f"has {size} bytes, {f['bytes']} when adopted"
                raise ConfigError(f"{export} adopted the lhotse Shar dir {origin}, whose {p.name} {now}: adopt it "
                                  f"again (python -m partlib.bin.adopt_shar {origin} {data_dir})")


def read_cuts(export_dir: PathLike, record: Dict[str, Any], skip: int = 0) -> Iterator[Dict[str, Any]]:
    """The cut dicts of one shard in order, starting after ``skip`` of them."""
    path = Path(export_dir) / record["files"]["cuts"]["path"]
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i >= skip:
                    yield json.loads(line)
    except (OSError, EOFError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read shard: {e}", path) from None


class ShardAudio:
    """Random access to the audio members of one shard's tar (an index of member offsets built
    from the tar headers when opened; the audio data is read only when asked for)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._f: Optional[BinaryIO] = open(path, "rb")
        except OSError as e:
            raise DataError(f"cannot open the shard's audio: {e.strerror}", path) from None
        self.index: Dict[str, Tuple[int, int, str]] = {}  # utt -> (offset, size, extension)
        try:
            with tarfile.open(fileobj=self._f, mode="r:") as tar:
                for m in tar:
                    if not m.name.endswith(".json"):
                        utt, _, ext = m.name.rpartition(".")
                        self.index[utt] = (m.offset_data, m.size, ext)
                    tar.members.clear()  # tarfile keeps every header it read: not needed here
        except tarfile.TarError as e:
            self.close()
            raise DataError(f"not a readable tar: {e}", path) from None

    def load(self, utt: str) -> np.ndarray:
        """float32 mono samples at 16 kHz of one utterance."""
        if utt not in self.index:
            raise DataError("utterance missing from the shard's audio", self.path, utt=utt)
        if self._f is None:
            self._f = open(self.path, "rb")
        offset, size, ext = self.index[utt]
        self._f.seek(offset)
        data = self._f.read(size)
        if len(data) != size:
            raise DataError(f"truncated: {len(data)} of {size} bytes", self.path, utt=utt)
        try:
            if ext == "flac":  # the export's own 16 kHz mono 16-bit FLAC: integers, scaled as libsndfile does
                pcm, rate = sf.read(io.BytesIO(data), dtype="int16")
                if rate == audio.TARGET_SR and pcm.ndim == 1 and pcm.size:
                    return pcm.astype(np.float32) / np.float32(32768)
            samples, rate = sf.read(io.BytesIO(data), dtype="float32")
        except (sf.LibsndfileError, RuntimeError, TypeError) as e:
            raise DataError(f"cannot decode audio: {e}", self.path, utt=utt) from None
        return audio.from_array(samples, rate, audio.TARGET_SR, name=f"{self.path} ({utt})")

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
