"""FLEURS: 102 languages, n-way parallel read FLoRes sentences.

Layout::

    <fleurs_root>/<locale>/{train,dev,test}.tsv     (no header; 7 columns)
    <fleurs_root>/<locale>/audio/<split>/<file>.wav  or  <fleurs_root>/<locale>/audio/<split>.tar.gz

Archives are extracted once into ``<dump_dir>/<locale>/audio/<split>/``. Data dirs are
``fleurs_<locale>_<split>``; ``text`` = ``raw_transcription`` (cased, punctuated, odd Unicode spaces
normalised); ``utt2sent`` = the FLoRes sentence id, which pairs utterances across languages. Fleurs
has no speaker ids, so each utterance is its own speaker (``fleurs-<locale>-<file stem>``).
"""
from __future__ import annotations

import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from partlib.common import DataError, PathLike, plain_modes
from partlib.data import langs
from partlib.data.corpora.base import (
    Counts, DataDirBuilder, LayoutError, check_audio, clean_text, gender_code, log, require, write_all)
from partlib.data.corpora.tsv import read_tsv
from partlib.data.datadir import DataDir
from partlib.data.kv import read_kv

COLUMNS = ("id", "file_name", "raw_transcription", "transcription", "chars", "num_samples", "gender")
SPLITS = ("train", "dev", "test")
LAYOUT = """  <fleurs_root>/<locale>/{train,dev,test}.tsv   (no header: id file_name raw_transcription ...)
  <fleurs_root>/<locale>/audio/<split>/<file>.wav  or  <fleurs_root>/<locale>/audio/<split>.tar.gz"""


def audio_dir(base: Path, locale: str, split: str, dump_dir: Optional[Path]) -> Path:
    """The folder holding a split's wav files, extracting ``audio/<split>.tar.gz`` once if needed."""
    plain = base / "audio" / split
    if plain.is_dir():
        return plain
    archive = base / "audio" / f"{split}.tar.gz"
    if not archive.is_file():
        raise LayoutError(f"missing folder (and no {archive.name}); expected layout:\n{LAYOUT}", plain)
    if dump_dir is None:
        raise DataError("audio is archived: give a dump dir to extract it into", archive)
    target = dump_dir / locale / "audio" / split
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{split}.", dir=target.parent))
    try:
        log.info("extracting %s", archive)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        # The archive holds <split>/<file>.wav; accept a flat archive too.
        inner = tmp / split if (tmp / split).is_dir() else tmp
        plain_modes(inner)  # mkdtemp's 0700 (a flat archive) or the archive's own modes
        inner.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def prepare_fleurs(root: PathLike, out_dir: PathLike, locales: Sequence[str],
                   splits: Sequence[str] = SPLITS, allow_missing: bool = False,
                   dump_dir: Optional[PathLike] = None, prefix: str = "fleurs") -> Dict[str, Counts]:
    """Write ``<out_dir>/<prefix>_<locale>_<split>`` for each locale and split; return the counts."""
    root, out_dir = Path(root), Path(out_dir)
    dump = None if dump_dir is None else Path(dump_dir)
    require(root, LAYOUT, "folder")
    pending: Dict[str, Tuple[DataDirBuilder, Counts]] = {}
    for locale in locales:
        lang = langs.canonical(locale)
        base = require(root / locale, LAYOUT, "folder")
        for split in splits:
            tsv = require(base / f"{split}.tsv", LAYOUT)
            rows = list(read_tsv(tsv, header=False, columns=COLUMNS, escape=False))
            wavs = audio_dir(base, locale, split, dump)
            counts = Counts()
            missing, counts.missing_audio = check_audio(
                [(r["file_name"], wavs / r["file_name"]) for _, r in rows], allow_missing, tsv)
            builder = DataDirBuilder()
            for line, r in rows:
                name = r["file_name"]
                if name in missing:
                    continue
                text = clean_text(r["raw_transcription"])
                if not text:
                    counts.empty_text += 1
                    continue
                utt = f"{prefix}-{locale}-{Path(name).stem}"
                if utt in builder.utt2spk:  # a recording listed twice
                    counts.duplicates += 1
                    continue
                if any(c.isspace() for c in utt) or not r["id"].strip():
                    raise DataError("file name with whitespace or empty sentence id", tsv, line, utt)
                builder.add(utt, utt, text, lang, wav=str((wavs / name).resolve()),
                            gender=gender_code(r["gender"]), utt2sent=r["id"].strip())
                counts.kept += 1
            pending[f"{prefix}_{locale}_{split}"] = (builder, counts)
    return write_all(pending, out_dir)


def text_pairs(src_dir: PathLike, tgt_dir: PathLike, out_dir: PathLike) -> int:
    """Write a text-only data dir of Fleurs sentence pairs (source ``text``, target ``text.<tgt>``).

    Utterances of the two dirs are paired by ``utt2sent``; each FLoRes sentence appears once.
    Returns the number of pairs.
    """
    src, tgt = DataDir.load(src_dir), DataDir.load(tgt_dir)
    tgt_lang = tgt.lang(tgt.utts[0])
    tgt_by_sent: Dict[str, str] = {}
    for utt, sent in read_kv(Path(tgt_dir) / "utt2sent").items():
        tgt_by_sent.setdefault(sent, tgt.text[utt])
    out = DataDirBuilder()
    for utt, sent in read_kv(Path(src_dir) / "utt2sent").items():
        pair_id = f"{Path(src_dir).name}-{tgt_lang}-{sent}"
        if sent in tgt_by_sent and pair_id not in out.utt2spk:
            out.add(pair_id, pair_id, src.text[utt], src.lang(utt),
                    **{f"text.{tgt_lang}": tgt_by_sent[sent], "utt2sent": sent})
    out.write(out_dir)
    return len(out)
