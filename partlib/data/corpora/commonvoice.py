"""Common Voice: the 15.0 release (ASR recipe) and the 4 release (CoVoST 2's audio).

Release layout (15.0)::

    cv-corpus-15.0-2023-09-08/<locale>/{train,dev,test,validated}.tsv
    cv-corpus-15.0-2023-09-08/<locale>/clips/common_voice_<locale>_<n>.mp3

Speaker = ``client_id`` (128 hex chars) shortened to its shortest unique prefix of at least 16
characters; utterance id = ``<speaker>-<clip stem>``. The ``wav.scp`` value is the mp3 path itself:
``partlib.data.audio.load_audio`` decodes any libsndfile format and resamples to 16 kHz.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from partlib.common import DataError, PathLike
from partlib.data import langs
from partlib.data.corpora.base import (
    Counts, DataDirBuilder, check_audio, clean_text, gender_code, require, shorten_ids, write_all)
from partlib.data.corpora.tsv import read_tsv

CV15_LAYOUT = """  <cv15_root>/<locale>/{train,dev,test}.tsv   (header: client_id path sentence ... gender ...)
  <cv15_root>/<locale>/clips/<clip>.mp3"""
SPLITS = ("train", "dev", "test")


def clip_key(path: str) -> str:
    """Join key of a Common Voice ``path`` field: the file name without ``.mp3`` (releases differ)."""
    return path[:-4] if path.endswith(".mp3") else path


@dataclass
class Clip:
    """One row of a Common Voice table."""

    client_id: str
    path: str       # file name relative to clips/
    sentence: str   # cleaned transcript
    gender: Optional[str]

    @property
    def stem(self) -> str:
        """Clip name without extension: the tail of the utterance id and the join key of CoVoST 2."""
        return clip_key(self.path)


def clip_file(clips_dir: Path, path: str) -> Path:
    """The audio file of a ``path`` field (``.mp3`` appended when a release omits it)."""
    return clips_dir / (path if path.endswith(".mp3") else path + ".mp3")


def read_clips(tsv: Path) -> List[Clip]:
    """Read a Common Voice table (any release: columns by name, raw quotes kept)."""
    clips = []
    for line, row in read_tsv(tsv, ("client_id", "path", "sentence")):
        if not row["client_id"] or not row["path"] or any(c.isspace() for c in row["path"]):
            raise DataError("empty client_id, or path empty or with whitespace", tsv, line)
        clips.append(Clip(row["client_id"], row["path"], clean_text(row["sentence"]),
                          gender_code(row.get("gender", ""))))
    return clips


def speaker_map(client_ids: Iterable[str]) -> Dict[str, str]:
    """Short, unique, whitespace-free speaker ids for client ids."""
    client_ids = set(client_ids)
    for cid in client_ids:
        if any(c.isspace() for c in cid):
            raise DataError(f"client_id contains whitespace: {cid!r}")
    return shorten_ids(client_ids)


def add_clips(builder: DataDirBuilder, clips: Sequence[Clip], spk: Dict[str, str], clips_dir: Path,
              lang: str, counts: Counts, skip: Iterable[str] = (), **extra_of: Dict[str, str]) -> None:
    """Add Common Voice clips to a builder; ``extra_of[file][path]`` gives per-clip extra values."""
    skip = set(skip)
    for c in clips:
        if c.path in skip:
            continue
        if not c.sentence:
            counts.empty_text += 1
            continue
        utt = f"{spk[c.client_id]}-{c.stem}"
        if utt in builder.utt2spk:
            counts.duplicates += 1
            continue
        extra = {name: m[c.path] for name, m in extra_of.items()}
        builder.add(utt, spk[c.client_id], c.sentence, lang,
                    wav=str(clip_file(clips_dir, c.path).resolve()), gender=c.gender, **extra)
        counts.kept += 1


def prepare_commonvoice(root: PathLike, out_dir: PathLike, locales: Sequence[str],
                        splits: Sequence[str] = SPLITS, allow_missing: bool = False,
                        prefix: str = "cv15") -> Dict[str, Counts]:
    """Write ``<out_dir>/<prefix>_<locale>_<split>`` for each locale and split; return the counts."""
    root, out_dir = Path(root), Path(out_dir)
    require(root, CV15_LAYOUT, "folder")
    pending: Dict[str, Tuple[DataDirBuilder, Counts]] = {}
    for locale in locales:
        lang = langs.canonical(locale)
        base = require(root / locale, CV15_LAYOUT, "folder")
        clips_dir = require(base / "clips", CV15_LAYOUT, "folder")
        tables = {s: read_clips(require(base / f"{s}.tsv", CV15_LAYOUT)) for s in splits}
        # One speaker map per locale so that a speaker keeps the same id in all splits.
        spk = speaker_map(c.client_id for t in tables.values() for c in t)
        for split, clips in tables.items():
            counts = Counts()
            missing, counts.missing_audio = check_audio(
                [(c.path, clip_file(clips_dir, c.path)) for c in clips], allow_missing, base / f"{split}.tsv")
            builder = DataDirBuilder()
            add_clips(builder, clips, spk, clips_dir, lang, counts, skip=missing)
            pending[f"{prefix}_{locale}_{split}"] = (builder, counts)
    return write_all(pending, out_dir)
