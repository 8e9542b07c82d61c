"""Shared pieces of the corpus preparers: layout checks, text clean-up and the data-dir builder.

Every preparer collects its utterances into a :class:`DataDirBuilder`, which writes a complete Kaldi
data directory into a temporary sibling folder, validates it, and only then renames it into place,
so an interrupted or failing preparation never leaves a partial data dir behind.
"""
from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple

from partlib.common import DataError, PathLike, get_logger, replace_dir
from partlib.data.datadir import DataDir
from partlib.data.kv import write_kv
from partlib.data.validate import validate_data_dir

log = get_logger("partlib.data.corpora")


class LayoutError(DataError):
    """A corpus folder that does not have the expected release layout."""


def require(path: Path, layout: str, what: str = "file") -> Path:
    """Return ``path`` if it exists, else raise :class:`LayoutError` naming it and the expected layout."""
    ok = path.is_dir() if what == "folder" else path.is_file()
    if not ok:
        raise LayoutError(f"missing {what}; expected layout:\n{layout}", path)
    return path


# Spaces other than U+0020 that corpora (Fleurs in particular) leave in transcripts become a plain
# space; invisible format characters are dropped. ZWNJ/ZWJ (U+200C/U+200D) are kept: they are part
# of the spelling of Persian and Indic words.
_SPACES = re.compile("[\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\t\r\n\v\f]")
_INVISIBLE = re.compile("[\u200b\u200e\u200f\u2060\ufeff]")
_RUNS = re.compile(" {2,}")


def clean_text(text: str) -> str:
    """Normalise odd Unicode spaces to ASCII space, drop invisible marks, collapse and strip spaces."""
    text = _INVISIBLE.sub("", _SPACES.sub(" ", text))
    return _RUNS.sub(" ", text).strip()


def shorten_ids(ids: Iterable[str], min_len: int = 16) -> Dict[str, str]:
    """Map long ids (CommonVoice's 128-hex client ids) to their shortest unique prefix of >= ``min_len``.

    The length is the same for all ids, so the short ids keep the order of the long ones.
    """
    uniq = sorted(set(ids))
    n = min_len
    while True:
        short = {i: i[:n] for i in uniq}
        if len(set(short.values())) == len(uniq):
            return short
        n += 4


def gender_code(value: str) -> Optional[str]:
    """Kaldi's ``m``/``f`` for a corpus's gender field, ``None`` when unknown or other."""
    v = value.strip().lower()
    if v.startswith("female") or v == "f":
        return "f"
    if v.startswith("male") or v == "m":
        return "m"
    return None


@dataclass
class Counts:
    """What a preparer kept and dropped, for the log and the tests."""

    kept: int = 0
    missing_audio: int = 0
    empty_text: int = 0
    duplicates: int = 0
    unjoined: int = 0

    def summary(self) -> str:
        """One line of non-zero counts."""
        return ", ".join(f"{k}={v}" for k, v in vars(self).items() if v or k == "kept")


def write_dir_atomically(out_dir: PathLike, fill: Callable[[Path], None], *, no_wav: bool = False) -> Path:
    """Let ``fill`` write a data dir into a temporary sibling, validate it, then swap it into place.

    Readers see either the old complete dir or the new complete one; a failure leaves no trace.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        fill(tmp)
        validate_data_dir(tmp, no_feats=True, no_wav=no_wav)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


@dataclass
class DataDirBuilder:
    """Collects the utterances of one data dir, then writes it with :func:`write_dir_atomically`.

    ``extra`` holds other per-utterance files: ``text.<lang>`` become the DataDir's translations,
    ``utt2dur`` its durations, anything else (``utt2sent``) is written as it is. ``gender`` is per
    speaker; ``spk2gender`` is written only when every speaker's gender is known, because Kaldi's
    validator requires it to list exactly the speakers of ``spk2utt``.
    """

    wav_scp: Dict[str, str] = field(default_factory=dict)
    segments: Dict[str, Tuple[str, float, float]] = field(default_factory=dict)
    text: Dict[str, str] = field(default_factory=dict)
    utt2spk: Dict[str, str] = field(default_factory=dict)
    utt2lang: Dict[str, str] = field(default_factory=dict)
    gender: Dict[str, Optional[str]] = field(default_factory=dict)
    extra: Dict[str, Dict[str, str]] = field(default_factory=dict)

    def add(self, utt: str, spk: str, text: str, lang: str, *, wav: Optional[str] = None,
            gender: Optional[str] = None, **extra: str) -> None:
        """Add one utterance (``wav`` is its wav.scp value when there are no segments)."""
        if utt in self.utt2spk:
            raise DataError("duplicate utterance id", utt=utt)
        if not utt.startswith(spk):
            raise DataError(f"speaker id '{spk}' is not a prefix of the utterance id", utt=utt)
        self.utt2spk[utt] = spk
        self.text[utt] = text
        self.utt2lang[utt] = lang
        if wav is not None:
            self.wav_scp[utt] = wav
        if self.gender.get(spk) is None:
            self.gender[spk] = gender
        elif gender is not None and gender != self.gender[spk]:
            log.warning("speaker %s has conflicting genders; keeping '%s'", spk, self.gender[spk])
        for name, value in extra.items():
            self.extra.setdefault(name, {})[utt] = value

    def __len__(self) -> int:
        return len(self.utt2spk)

    def datadir(self) -> DataDir:
        """The collected utterances as a :class:`DataDir` (without the ``extra`` files it lacks)."""
        speakers = set(self.utt2spk.values())
        gender = {s: self.gender[s] for s in speakers} if all(self.gender.get(s) for s in speakers) else None
        translations = {n[len("text."):]: m for n, m in self.extra.items() if n.startswith("text.")}
        dur = self.extra.get("utt2dur")
        return DataDir(self.utt2spk, wav_scp=self.wav_scp or None, segments=self.segments or None,
                       text=self.text, utt2lang=self.utt2lang, translations=translations,
                       spk2gender=gender, utt2dur=None if dur is None else {u: float(d) for u, d in dur.items()})

    def write(self, out_dir: PathLike) -> Path:
        """Write, validate and atomically move the data dir into ``out_dir`` (replacing it)."""
        if not self.utt2spk:
            raise DataError("no utterances left to write", out_dir)
        dd = self.datadir()
        others = {n: m for n, m in self.extra.items() if not n.startswith("text.") and n != "utt2dur"}

        def fill(tmp: Path) -> None:
            dd.write(tmp)
            for name, mapping in others.items():
                write_kv(tmp / name, mapping)

        return write_dir_atomically(out_dir, fill, no_wav=not self.wav_scp)


def write_all(pending: Mapping[str, Tuple[DataDirBuilder, Counts]], out_dir: PathLike) -> Dict[str, Counts]:
    """Write the collected data dirs ``out_dir/<name>`` (only after all inputs were checked)."""
    for name, (builder, counts) in pending.items():
        if not len(builder):
            raise DataError(f"no utterances left ({counts.summary()})", Path(out_dir) / name)
    for name, (builder, counts) in pending.items():
        builder.write(Path(out_dir) / name)
        log.info("%s: %s", name, counts.summary())
    return {name: counts for name, (_, counts) in pending.items()}


def check_audio(
    items: Sequence[Tuple[str, Path]], allow_missing: bool, listed_in: PathLike
) -> Tuple[set, int]:
    """Return the keys whose audio file is missing (and their count); raise unless ``allow_missing``."""
    missing = {key for key, p in items if not p.is_file()}
    if missing and not allow_missing:
        first = sorted(missing)[0]
        path = dict(items)[first]
        raise DataError(
            f"{len(missing)} audio file(s) listed but absent on disk, e.g. {path}; "
            "pass --allow-missing true to skip them", listed_in)
    if missing:
        log.warning("%s: skipping %d utterance(s) whose audio is absent on disk", listed_in, len(missing))
    return missing, len(missing)
