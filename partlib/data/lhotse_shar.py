"""Lhotse Shar that lhotse itself wrote, adopted for streaming training without touching its audio.

``CutSet.to_shar(dir, fields={"recording": "flac"})`` and ``lhotse shar export`` (icefall, NeMo)
write ``cuts.NNNNNN.jsonl.gz`` and ``recording.NNNNNN.tar``, the tar holding ``<cut id>.<format>``
and ``<cut id>.json`` per cut: the layout :class:`partlib.data.shards.ShardAudio` reads by offset.
What lhotse does not write is what partlib's streaming reader starts from (:mod:`partlib.data.shards`):
canonical language codes, frame counts, translations under ``custom.translations``, and the
manifest. :func:`adopt` reads the cuts with lhotse's reader, checks that every cut can train, and
writes into ``<data dir>/shar``::

    shards/cuts.NNNNNN.jsonl.gz   lhotse shard N's cuts, fields mapped (still lhotse cuts)
    manifest.json                 an export's manifest; each shard's ``recording`` is lhotse's own
                                  tar (absolute path), ``adopted_from`` the lhotse dir

A cut trains when it is a single-channel cut with its audio in the tar and one supervision with a
text and a language (an ISO code, a corpus code or an English name, as lhotse recipes write it;
``language`` stands in where there is none). Audio at another rate than 16 kHz is resampled when
read. Translations are a ``{language: text}`` dict: the cut's or the supervision's custom
``translations`` (partlib's export) or the supervision's custom ``translated_text`` (lhotse's
IWSLT'22 recipe); each cut needs one into every translation language of the dir but its own, as
every utterance of a data dir is in its ``text.<lang>`` files.

The data dir holds nothing else: a schedule names it in ``data`` like any training set and
``--features shards`` streams it. Training checks that lhotse's files kept their sizes.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
from pathlib import Path
from typing import Any, Dict, FrozenSet, Iterator, List, Optional, Set, Tuple

from lhotse import CutSet, MonoCut
from lhotse.shar import LazySharIterator

from partlib.common import (ConfigError, DataError, PathLike, atomic_open, atomic_write, file_sha256, get_logger,
                            named_write_errors)
from partlib.data import langs, shards
from partlib.data.datadir import MANAGED_FILES
from partlib.data.examples import frames_of_seconds

logger = get_logger("partlib.data.lhotse_shar")

# Where a cut's translations may be: (on the cut or its supervision, custom key), first found wins.
TRANSLATION_FIELDS = (("cut", "translations"), ("supervision", "translations"), ("supervision", "translated_text"))


def shard_files(src: Path) -> List[Tuple[Path, Path]]:
    """(cuts, recording tar) of each shard of a lhotse Shar dir, as lhotse's reader pairs them."""
    if not src.is_dir():
        raise DataError("no such directory", src)
    try:
        streams = LazySharIterator(in_dir=src).streams
    except AssertionError as e:  # lhotse's checks: a cuts field, as many shards in every field
        raise DataError(f"not a lhotse Shar dir: {e or 'no cuts.NNNNNN.jsonl.gz'}", src) from None
    if "recording" not in streams:
        raise DataError("no recording.NNNNNN.tar: partlib trains on the audio (lhotse: "
                        "to_shar(fields={'recording': 'flac'}))", src)
    for tar in streams["recording"]:
        if not str(tar).endswith(".tar"):
            raise DataError("not an uncompressed .tar: partlib reads the audio by offset", tar)
    return [(Path(c), Path(r)) for c, r in zip(streams["cuts"], streams["recording"])]


def read_lhotse_cuts(path: Path) -> Iterator[Tuple[int, Any]]:
    """(line, lhotse cut) of one Shar cuts file, read by lhotse."""
    line = 0
    try:
        for line, cut in enumerate(CutSet.from_jsonl_lazy(path), 1):
            yield line, cut
    except (OSError, EOFError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"lhotse cannot read this cut: {e}", path, line + 1) from None


def _language(value: str, path: Path, line: int, utt: str) -> str:
    try:
        return langs.from_name_or_code(value)
    except langs.UnknownLanguageError as e:
        raise DataError(str(e), path, line, utt) from None


def _translations(cut: Any, path: Path, line: int) -> Dict[str, str]:
    """The cut's ``{canonical language: text}`` (see :data:`TRANSLATION_FIELDS`)."""
    for where, key in TRANSLATION_FIELDS:
        value = ((cut if where == "cut" else cut.supervisions[0]).custom or {}).get(key)
        if value is None:
            continue
        if not isinstance(value, dict) or not all(isinstance(t, str) and t.strip() for t in value.values()):
            raise DataError(f"custom {key!r} of the {where}: expected {{language: text}}, got {value!r}",
                            path, line, cut.id)
        return {_language(code, path, line, cut.id): text for code, text in value.items()}
    return {}


def mapped_cut(cut: Any, path: Path, line: int, source: str, language: Optional[str]) -> Dict[str, Any]:
    """The dict of a lhotse cut as the streaming reader reads it (the fields of
    ``partlib.data.shards``' cuts); a DataError naming the file, line and cut for a cut that cannot
    train. ``language``: the code for a supervision without one (None: such a cut is an error)."""
    if not isinstance(cut, MonoCut) or cut.num_channels != 1:
        raise DataError(f"a {type(cut).__name__} of {cut.num_channels} channels: partlib trains on single-channel "
                        f"cuts (lhotse MonoCut)", path, line, cut.id)
    if not cut.has_recording:
        raise DataError("no audio: the Shar holds a placeholder for this cut's recording", path, line, cut.id)
    if len(cut.supervisions) != 1:
        raise DataError(f"{len(cut.supervisions)} supervisions: partlib trains on one per cut (lhotse: "
                        f"cuts.trim_to_supervisions() before to_shar)", path, line, cut.id)
    sup = cut.supervisions[0]
    if not (sup.text or "").strip():
        raise DataError("no text in the supervision", path, line, cut.id)
    if sup.language is None and language is None:
        raise DataError("no language in the supervision (adopt_shar --language gives one to such cuts)",
                        path, line, cut.id)
    out = cut.to_dict()
    out["supervisions"][0]["language"] = _language(sup.language or language, path, line, cut.id)
    # the frame count the in-memory path takes from utt2dur: the cut's audio is all of the tar member
    out["custom"] = {**(cut.custom or {}), "num_frames": frames_of_seconds(cut.duration), "source": source,
                     "translations": _translations(cut, path, line)}
    return out


def _check_audio(tar: Path, utts: List[str]) -> int:
    """Check that every cut has its member in the tar and that the first decodes (the format);
    return the tar's size."""
    audio = shards.ShardAudio(tar)
    try:
        for utt in utts:
            if utt not in audio.index:
                raise DataError("no member <cut id>.<format> in the shard's tar", tar, utt=utt)
        if utts:
            audio.load(utts[0])
    finally:
        audio.close()
    return tar.stat().st_size


def _adopt_shard(index: int, cuts_path: Path, tar: Path, out: Path, source: str, language: Optional[str],
                 translation_sets: Dict[str, Dict[FrozenSet[str], Tuple[Path, int, str]]]) -> Dict[str, Any]:
    """Write the mapped cuts of lhotse shard ``index`` and check its tar; return its manifest record.
    ``translation_sets`` collects, per language, each set of translation languages that cuts have
    and the first such cut (path, line, id)."""
    mine = out / "shards" / f"cuts.{index:06d}.jsonl.gz"
    utts: List[str] = []
    ids: Set[str] = set()
    counts: Dict[str, int] = {}
    seconds: Dict[str, float] = {}
    longest = 0.0
    # mtime 0 and no name in the gzip header: the same cuts give the same bytes
    with atomic_open(mine, "wb", encoding=None) as raw, \
            gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz, \
            io.TextIOWrapper(gz, encoding="utf-8") as f:
        for line, cut in read_lhotse_cuts(cuts_path):
            if cut.id in ids:  # the tar's members would be ambiguous
                raise DataError("cut id twice in one shard", cuts_path, line, cut.id)
            d = mapped_cut(cut, cuts_path, line, source, language)
            lang = d["supervisions"][0]["language"]
            have = frozenset(d["custom"]["translations"])
            translation_sets.setdefault(lang, {}).setdefault(have, (cuts_path, line, cut.id))
            counts[lang] = counts.get(lang, 0) + 1
            seconds[lang] = seconds.get(lang, 0.0) + cut.duration
            longest = max(longest, cut.duration)
            utts.append(cut.id)
            ids.add(cut.id)
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    tar_bytes = _check_audio(tar, utts)
    return {"index": index, "utterances": len(utts), "languages": dict(sorted(counts.items())),
            "seconds": {k: round(v, 3) for k, v in sorted(seconds.items())}, "longest_s": longest,
            "files": {"cuts": {"path": str(mine.relative_to(out)), "bytes": mine.stat().st_size,
                               "sha256": file_sha256(mine)},
                      "recording": {"path": str(tar), "bytes": tar_bytes}},  # not hashed: never read whole
            "lhotse_cuts": {"path": str(cuts_path), "bytes": cuts_path.stat().st_size,
                            "sha256": file_sha256(cuts_path)}}


def adopt(lhotse_dir: PathLike, data_dir: PathLike, language: Optional[str] = None) -> Path:
    """Adopt the lhotse Shar dir ``lhotse_dir`` as the training set ``data_dir`` (see the module
    docstring); return the manifest path. Every shard is checked before the manifest is written;
    a re-run adopts again (metadata only: the audio is never read whole)."""
    src, dest = Path(lhotse_dir).absolute(), Path(data_dir)
    if language is not None:
        try:
            language = langs.from_name_or_code(language)
        except langs.UnknownLanguageError as e:
            raise ConfigError(f"--language: {e}") from None
    kaldi = [n for n in MANAGED_FILES if (dest / n).is_file()]
    if kaldi:
        raise ConfigError(f"{dest} is a Kaldi data dir ({kaldi[0]}): adopt lhotse shards into a dir of their own")
    files = shard_files(src)
    out = shards.shard_dir(dest)
    (out / shards.MANIFEST).unlink(missing_ok=True)  # a failed re-adoption leaves no manifest behind
    translation_sets: Dict[str, Dict[FrozenSet[str], Tuple[Path, int, str]]] = {}
    with named_write_errors(out):
        records = [_adopt_shard(i, cuts_path, tar, out, dest.name, language, translation_sets)
                   for i, (cuts_path, tar) in enumerate(files)]
        union = {t for by_set in translation_sets.values() for have in by_set for t in have}
        for lang, by_set in translation_sets.items():
            for have, (path, line, utt) in by_set.items():
                missing = sorted(union - have - {lang})
                if missing:  # a cross-lingual task would meet this cut without its target mid-stream
                    raise DataError(f"no translation into {missing[0]}, which other cuts of {src} have (every "
                                    f"cut needs one into each translation language but its own)", path, line, utt)
        written = {Path(r["files"]["cuts"]["path"]).name for r in records}
        for stale in (out / "shards").glob("cuts.*.jsonl.gz"):  # of an earlier, larger adoption
            if stale.name not in written:
                stale.unlink()
        totals = shards.language_totals(records)
        # what the mapped cuts depend on: lhotse's cuts and the options
        src_hash = hashlib.sha256(json.dumps([[r["lhotse_cuts"]["sha256"] for r in records], language])
                                  .encode("utf-8")).hexdigest()
        body = {"format": shards.FORMAT, "source": dest.name, "source_hash": src_hash,
                "options": {"language": language}, "adopted_from": str(src), "audio": True,
                "translations": sorted(union), "utterances": sum(r["utterances"] for r in records),
                "languages": totals,
                "bytes": sum(f["bytes"] for r in records for f in r["files"].values()), "shards": records}
        atomic_write(out / shards.MANIFEST, json.dumps(body, indent=1, ensure_ascii=False) + "\n")
    logger.info("%s: adopted %d cuts in %d shards of %s (%.2f h; languages %s)", out, body["utterances"],
                len(records), src, sum(t["hours"] for t in totals.values()), ", ".join(totals))
    return out / shards.MANIFEST
