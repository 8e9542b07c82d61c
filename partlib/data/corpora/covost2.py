"""CoVoST 2 speech translation on Common Voice 4 audio.

Layout::

    <covost_root>/covost_v2.<src>_<tgt>.tsv      (header; columns used: path translation split)
    <cv4_root>/<src>/validated.tsv                (Common Voice 4, 8 columns: client_id path sentence ...)
    <cv4_root>/<src>/clips/<clip>.mp3

Each direction gives ``covost2_<src>_<tgt>_{train,dev,test}`` (train = splits ``train`` and
``train_covost``): ``text`` = transcript, ``text.<tgt>`` = translation (canonical code), so one data
dir serves ASR and S2TT. ``..._text`` twins without audio hold unique transcript/translation pairs for
the T2TT text task. Rows of the translation table absent from ``validated.tsv`` are counted
(``unjoined``) and logged.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, NamedTuple, Sequence, Tuple

from partlib.common import DataError, PathLike
from partlib.data import langs
from partlib.data.corpora.base import (
    Counts, DataDirBuilder, check_audio, clean_text, log, require, write_all)
from partlib.data.corpora.commonvoice import Clip, add_clips, clip_file, clip_key, read_clips, speaker_map
from partlib.data.corpora.tsv import read_tsv

X_EN = ("fr", "de", "es", "ca", "it", "ru", "zh-CN", "pt", "fa", "et", "mn", "nl", "tr", "ar",
        "sv-SE", "lv", "sl", "ta", "ja", "id", "cy")
EN_X = ("de", "tr", "fa", "sv-SE", "mn", "zh-CN", "cy", "ca", "sl", "et", "id", "ar", "ta", "lv", "ja")
DIRECTIONS = tuple(f"{s}_en" for s in X_EN) + tuple(f"en_{t}" for t in EN_X)
SPLIT_OF = {"train": "train", "train_covost": "train", "dev": "dev", "test": "test"}
SPLITS = ("train", "dev", "test")
LAYOUT = """  <covost_root>/covost_v2.<src>_<tgt>.tsv   (header with columns path, translation, split)
  <cv4_root>/<src>/validated.tsv              (Common Voice 4: client_id path sentence ...)
  <cv4_root>/<src>/clips/<clip>.mp3"""


def parse_direction(direction: str) -> Tuple[str, str]:
    """``"zh-CN_en"`` -> ``("zh-CN", "en")``; codes hold hyphens, so the separator is ``_``."""
    if direction not in DIRECTIONS:
        raise DataError(f"unknown CoVoST 2 direction '{direction}'; known: {' '.join(DIRECTIONS)}")
    src, tgt = direction.split("_")
    return src, tgt


def read_translations(path: Path) -> Dict[str, List[Tuple[str, str]]]:
    """Split name -> [(path, translation)] from a ``covost_v2.<src>_<tgt>.tsv`` table."""
    out: Dict[str, List[Tuple[str, str]]] = {s: [] for s in SPLITS}
    for line, row in read_tsv(path, ("path", "translation", "split")):
        split = SPLIT_OF.get(row["split"])
        if split is None:
            raise DataError(f"unknown split '{row['split']}' (expected one of {' '.join(SPLIT_OF)})",
                            path, line)
        out[split].append((row["path"], clean_text(row["translation"])))
    return out


class _Source(NamedTuple):
    """The Common Voice 4 side of one source language."""

    clips_dir: Path
    by_key: Dict[str, Clip]   # clip_key(path) -> row of validated.tsv
    speakers: Dict[str, str]  # client_id -> short speaker id
    tsv: Path


def _load_source(base: Path) -> _Source:
    require(base, LAYOUT, "folder")
    tsv = require(base / "validated.tsv", LAYOUT)
    clips = read_clips(tsv)
    return _Source(require(base / "clips", LAYOUT, "folder"), {clip_key(c.path): c for c in clips},
                   speaker_map(c.client_id for c in clips), tsv)


def prepare_covost2(covost_root: PathLike, cv4_root: PathLike, out_dir: PathLike,
                    directions: Sequence[str] = DIRECTIONS, allow_missing: bool = False,
                    prefix: str = "covost2") -> Dict[str, Counts]:
    """Write the speech and text data dirs of each direction; return counts per data dir."""
    covost_root, cv4_root, out_dir = Path(covost_root), Path(cv4_root), Path(out_dir)
    require(covost_root, LAYOUT, "folder")
    require(cv4_root, LAYOUT, "folder")
    pending: Dict[str, Tuple[DataDirBuilder, Counts]] = {}
    sources: Dict[str, _Source] = {}
    for direction in directions:
        src, tgt = parse_direction(direction)
        table = require(covost_root / f"covost_v2.{src}_{tgt}.tsv", LAYOUT)
        if src not in sources:
            sources[src] = _load_source(cv4_root / src)
        clips_dir, by_key, spk, tsv = sources[src]
        src_lang, tgt_lang = langs.canonical(src), langs.canonical(tgt)
        for split, rows in read_translations(table).items():
            counts = Counts()
            joined, translation = [], {}
            for path, trans in rows:
                clip = by_key.get(clip_key(path))
                if clip is None:
                    counts.unjoined += 1
                elif not trans:
                    counts.empty_text += 1
                elif clip.path in translation:
                    counts.duplicates += 1
                else:
                    joined.append(clip)
                    translation[clip.path] = trans
            if counts.unjoined:
                log.warning("%s (%s): %d row(s) have no match in %s and are dropped",
                            table, split, counts.unjoined, tsv)
            name = f"{prefix}_{src}_{tgt}_{split}"
            text_counts = Counts(unjoined=counts.unjoined)
            text_dir = DataDirBuilder()
            unique, seen = [], set()
            for c in joined:  # the text task needs each transcript/translation pair once
                pair = (c.sentence, translation[c.path])
                if pair not in seen:
                    seen.add(pair)
                    unique.append(c)
            add_clips(text_dir, unique, spk, clips_dir, src_lang, text_counts,
                      **{f"text.{tgt_lang}": translation})
            text_dir.wav_scp = {}  # text-only: feeds the t2tt task
            pending[f"{name}_text"] = (text_dir, text_counts)

            missing, counts.missing_audio = check_audio(
                [(c.path, clip_file(clips_dir, c.path)) for c in joined], allow_missing, table)
            speech = DataDirBuilder()
            add_clips(speech, joined, spk, clips_dir, src_lang, counts, skip=missing,
                      **{f"text.{tgt_lang}": translation})
            pending[name] = (speech, counts)
    return write_all(pending, out_dir)
