"""Kaldi data directories: read and write the ``<key> <value>`` files that describe a corpus.

Conventions (docs/architecture.md, "Kaldi data dirs"): UTF-8, one record a line, unique keys,
sorted under ``LC_ALL=C`` (i.e. by the UTF-8 bytes), newline-terminated; files are written
atomically.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

from partlib.common import DataError, PathLike, atomic_open, get_logger
from partlib.data import langs
from partlib.data.kv import c_sort_key, find_line, format_kv, read_rows
from partlib.data.validate import validate_data_dir

log = get_logger(__name__)


# How far a segment may end past the end of its recording: the audio is cut at the recording's end
# (partlib.data.audio.cut); further is an error. Kaldi's extract-segments --max-overshoot default.
SEGMENT_TOLERANCE_S = 0.5
# Small directory-level files carried along by copy/subset/split (e.g. written by feature dumping).
META_FILES = ("feats_type", "frame_shift")
# Kaldi files this class does not model; fix_data_dir filters them by utterance/speaker/recording.
EXTRA_UTT_FILES = ("vad.scp", "utt2uniq", "utt2warp")
EXTRA_SPK_FILES = ("cmvn.scp", "spk2warp")
EXTRA_RECO_FILES = ("reco2file_and_channel",)
MANAGED_FILES = ("wav.scp", "segments", "text", "utt2spk", "spk2utt", "utt2lang", "utt2sent", "utt2dur",
                 "utt2num_frames", "feats.scp", "reco2dur", "spk2gender") + META_FILES


def _positive_float(value: str, path: Path, line: int, key: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise DataError(f"not a number: '{value}'", path, line, key) from None
    if not x > 0 or x == float("inf"):
        raise DataError(f"must be a positive duration, got '{value}'", path, line, key)
    return x


def _positive_int(value: str, path: Path, line: int, key: str) -> int:
    try:
        x = int(value)
    except ValueError:
        raise DataError(f"not an integer: '{value}'", path, line, key) from None
    if x <= 0:
        raise DataError(f"must be positive, got '{value}'", path, line, key)
    return x


def _segment(value: str, path: Path, line: int, key: str) -> Tuple[str, float, float]:
    parts = value.split()
    try:
        if len(parts) != 3:
            raise ValueError
        reco, start, end = parts[0], float(parts[1]), float(parts[2])
    except ValueError:
        raise DataError(f"expected '<utt> <recording> <start> <end>', got '{key} {value}'",
                        path, line, key) from None
    if start < 0 or not end > start:
        raise DataError(f"bad times: start {start}, end {end} (need 0 <= start < end)",
                        path, line, key)
    return reco, start, end


def _language(value: str, path: Path, line: Optional[int], key: Optional[str]) -> str:
    try:
        return langs.canonical(value)
    except langs.UnknownLanguageError as e:
        raise DataError(str(e), path, line, key) from None


def _read_file(path: Path, convert=None, *, allow_empty: bool = False, lenient: bool = False,
               ) -> Dict[str, object]:
    """Read one data-dir file into ``key -> value``; ``convert(value, path, line, key)`` parses."""
    rows = read_rows(path, allow_empty=allow_empty, lenient=lenient)
    if convert is None:
        return {k: v for _, k, v in rows}
    return {k: convert(v, path, n, k) for n, k, v in rows}


def _check_keys(path: Path, got: Iterable[str], want: Iterable[str], what: str) -> None:
    """Raise DataError naming the first key that is in one set and not the other."""
    got_set, want_set = set(got), set(want)
    extra = sorted(got_set - want_set, key=c_sort_key)
    missing = sorted(want_set - got_set, key=c_sort_key)
    if extra:
        raise DataError(f"key not among the {what} ({len(extra)} such keys)", path, utt=extra[0])
    if missing:
        raise DataError(f"missing from this file ({len(missing)} of the {what} are)", path,
                        utt=missing[0])


class DataDir:
    """In-memory view of a Kaldi data dir; all maps are keyed and iterated in C-sorted order.

    ``utt2spk`` is primary and ``spk2utt`` is derived from it. Without ``segments`` the recording
    id of an utterance is the utterance id (wav.scp and reco2dur are keyed by utterance).
    """

    def __init__(
        self,
        utt2spk: Mapping[str, str],
        *,
        path: Optional[PathLike] = None,
        wav_scp: Optional[Mapping[str, str]] = None,
        segments: Optional[Mapping[str, Tuple[str, float, float]]] = None,
        text: Optional[Mapping[str, str]] = None,
        utt2lang: Optional[Mapping[str, str]] = None,
        translations: Optional[Mapping[str, Mapping[str, str]]] = None,
        utt2dur: Optional[Mapping[str, float]] = None,
        utt2num_frames: Optional[Mapping[str, int]] = None,
        feats_scp: Optional[Mapping[str, str]] = None,
        reco2dur: Optional[Mapping[str, float]] = None,
        spk2gender: Optional[Mapping[str, str]] = None,
        meta: Optional[Mapping[str, str]] = None,
        utt2sent: Optional[Mapping[str, str]] = None,
    ) -> None:
        def _sorted(m):
            return None if m is None else {k: m[k] for k in sorted(m, key=c_sort_key)}

        self.path: Optional[Path] = None if path is None else Path(path)
        self.utt2spk: Dict[str, str] = _sorted(utt2spk)
        self.wav_scp = _sorted(wav_scp)
        self.segments = _sorted(segments)
        self.text = _sorted(text)
        where = self.path or Path("<data dir>")
        self.utt2lang = None if utt2lang is None else {
            u: lang if lang in langs.LANGUAGES else _language(lang, where / "utt2lang", None, u)
            for u, lang in _sorted(utt2lang).items()}
        self.translations: Dict[str, Dict[str, str]] = {}
        for lang, m in (translations or {}).items():
            code = _language(lang, where / f"text.{lang}", None, None)
            if code in self.translations:
                raise DataError(f"two translation sets for language '{code}'", where / f"text.{lang}")
            self.translations[code] = _sorted(m)
        self.translations = dict(sorted(self.translations.items()))
        self.utt2dur = _sorted(utt2dur)
        self.utt2num_frames = _sorted(utt2num_frames)
        self.feats_scp = _sorted(feats_scp)
        self.reco2dur = _sorted(reco2dur)
        self.spk2gender = _sorted(spk2gender)
        self.meta: Dict[str, str] = dict(meta or {})
        # utterance -> parallel sentence id (the same id across languages: Fleurs, mini_synth)
        self.utt2sent = _sorted(utt2sent)

    # --- views -------------------------------------------------------------------------------
    @property
    def utts(self) -> List[str]:
        """C-sorted utterance ids."""
        return list(self.utt2spk)

    @property
    def spk2utt(self) -> Dict[str, List[str]]:
        """speaker -> its utterances, both C-sorted (derived from utt2spk)."""
        out: Dict[str, List[str]] = {}
        for utt, spk in self.utt2spk.items():
            out.setdefault(spk, []).append(utt)
        return {s: out[s] for s in sorted(out, key=c_sort_key)}

    def __len__(self) -> int:
        return len(self.utt2spk)

    def has_audio(self) -> bool:
        """Whether the dir has wav.scp or feats.scp (a text-only dir feeds text tasks only)."""
        return self.wav_scp is not None or self.feats_scp is not None

    def lang(self, utt: str) -> str:
        """Canonical language code of an utterance (from utt2lang)."""
        if self.utt2lang is None:
            raise DataError("no utt2lang file: the language of utterances is unknown",
                            self.path, utt=utt)
        try:
            return self.utt2lang[utt]
        except KeyError:
            raise DataError("utterance not in utt2lang", self.path, utt=utt) from None

    def recording(self, utt: str) -> str:
        """Recording id of an utterance (the utterance id itself without segments)."""
        return self.segments[utt][0] if self.segments is not None else utt

    # --- reading -----------------------------------------------------------------------------
    @classmethod
    def load(cls, path: PathLike, validate: bool = True) -> "DataDir":
        """Read a data dir.

        With ``validate`` the directory must first pass Kaldi's validator rules (wav.scp,
        feats.scp and text optional, so text-only and audio-only dirs load); then every file is
        parsed: numbers, language codes (canonicalised), translation key sets, segments within
        the recording when reco2dur is known. Any problem raises DataError (file, line, utt).
        Without ``validate`` a missing utt2spk means one speaker per utterance.
        """
        return cls._read(Path(path), validate=validate, lenient=False)

    @classmethod
    def _read(cls, path: Path, *, validate: bool, lenient: bool) -> "DataDir":
        if not path.is_dir():
            raise DataError("no such data directory", path)
        if validate:
            validate_data_dir(path, no_feats=True, no_wav=True,
                              no_text=not (path / "text").is_file())

        def opt(name, convert=None, **kw):
            f = path / name
            return _read_file(f, convert, lenient=lenient, **kw) if f.is_file() else None

        utt2spk = opt("utt2spk")
        text = opt("text", allow_empty=True)
        if utt2spk is None:
            keys = text or opt("feats.scp") or opt("segments") or opt("wav.scp")
            if keys is None:
                raise DataError("no utt2spk, text, feats.scp, segments or wav.scp", path)
            utt2spk = {u: u for u in keys}
        translations: Dict[str, Dict[str, str]] = {}
        for f in sorted(path.glob("text.*")):
            suffix = f.name[len("text."):]
            if not _is_translation(f):
                log.warning("%s: '%s' is not a language code: not read as a translation", f, suffix)
                continue
            translations[suffix] = _read_file(f, allow_empty=True, lenient=lenient)
        meta = {m: (path / m).read_text(encoding="utf-8").strip()
                for m in META_FILES if (path / m).is_file()}
        dd = cls(
            utt2spk, path=path, text=text, translations=translations, meta=meta,
            wav_scp=opt("wav.scp"), segments=opt("segments", _segment),
            utt2lang=opt("utt2lang", _language), utt2dur=opt("utt2dur", _positive_float),
            utt2num_frames=opt("utt2num_frames", _positive_int), feats_scp=opt("feats.scp"),
            reco2dur=opt("reco2dur", _positive_float), spk2gender=opt("spk2gender"),
            utt2sent=opt("utt2sent"),
        )
        if not lenient:
            dd.check()
        return dd

    def check(self) -> None:
        """Check that the key sets agree and segments lie inside their recordings."""
        where = self.path or Path("<data dir>")
        utts = self.utt2spk.keys()
        for name, mapping in (("text", self.text), ("utt2lang", self.utt2lang),
                              ("utt2sent", self.utt2sent), ("utt2dur", self.utt2dur), ("utt2num_frames", self.utt2num_frames),
                              ("feats.scp", self.feats_scp), ("segments", self.segments),
                              *((f"text.{lang}", m) for lang, m in self.translations.items())):
            if mapping is not None:
                _check_keys(where / name, mapping, utts, "utterance ids of utt2spk")
        recordings = ({r for r, _, _ in self.segments.values()} if self.segments is not None
                      else set(utts))
        if self.segments is not None and self.wav_scp is None:
            raise DataError("segments without wav.scp", where / "segments")
        if self.wav_scp is not None:
            _check_keys(where / "wav.scp", self.wav_scp, recordings,
                        "recording ids" if self.segments is not None else "utterance ids")
        if self.reco2dur is not None:
            _check_keys(where / "reco2dur", self.reco2dur, recordings, "recording ids")
        if self.spk2gender is not None:
            _check_keys(where / "spk2gender", self.spk2gender, set(self.utt2spk.values()),
                        "speakers of utt2spk")
            for spk, g in self.spk2gender.items():
                if g not in ("m", "f"):
                    raise DataError(f"gender must be m or f, got '{g}'", where / "spk2gender",
                                    utt=spk)
        if self.segments is not None and self.reco2dur is not None:
            for utt, (reco, start, end) in self.segments.items():
                if end > self.reco2dur[reco] + SEGMENT_TOLERANCE_S:
                    raise DataError(
                        f"segment [{start:g}, {end:g}] s ({end - start:g} s) ends {end - self.reco2dur[reco]:g} s "
                        f"after the end of recording '{reco}' ({self.reco2dur[reco]:g} s long; up to "
                        f"{SEGMENT_TOLERANCE_S:g} s is tolerated)", where / "segments",
                        find_line(where / "segments", utt), utt)

    # --- writing -----------------------------------------------------------------------------
    def files(self) -> Dict[str, str]:
        """The directory's files as ``name -> content`` (C-sorted, newline-terminated)."""
        def fmt(x: float) -> str:
            return repr(float(x)) if not float(x).is_integer() else f"{float(x):.1f}"

        out = {"utt2spk": self.utt2spk, "spk2utt": self.spk2utt}
        optional = {
            "wav.scp": self.wav_scp, "text": self.text, "utt2lang": self.utt2lang,
            "utt2sent": self.utt2sent, "feats.scp": self.feats_scp, "spk2gender": self.spk2gender,
            "segments": None if self.segments is None else {
                u: f"{r} {fmt(s)} {fmt(e)}" for u, (r, s, e) in self.segments.items()},
            "utt2dur": None if self.utt2dur is None else {
                u: fmt(d) for u, d in self.utt2dur.items()},
            "reco2dur": None if self.reco2dur is None else {
                r: fmt(d) for r, d in self.reco2dur.items()},
            "utt2num_frames": None if self.utt2num_frames is None else {
                u: str(n) for u, n in self.utt2num_frames.items()},
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        out.update({f"text.{lang}": m for lang, m in self.translations.items()})
        rendered = {name: format_kv(m, name) for name, m in out.items()}
        rendered.update({name: value + "\n" for name, value in self.meta.items()})
        return rendered

    def write(self, path: PathLike) -> None:
        """Write all files into ``path`` atomically and remove stale data-dir files there.

        Everything is checked and rendered before the first file is replaced, so bad content
        never overwrites a good directory.
        """
        path = Path(path)
        self.check()
        files = self.files()
        path.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            with atomic_open(path / name) as f:
                f.write(content)
        stale = [path / n for n in MANAGED_FILES if n not in files]
        stale += [f for f in path.glob("text.*") if f.name not in files and _is_translation(f)]
        for f in stale:
            if f.is_file():
                f.unlink()
        self.path = path

    # --- selections --------------------------------------------------------------------------
    def subset(self, utts: Iterable[str]) -> "DataDir":
        """A new DataDir with the given utterances (ids not in this dir are ignored); speakers
        and recordings no longer used are dropped."""
        keep = {u for u in utts if u in self.utt2spk}

        def sel(m, keys):
            return None if m is None else {k: v for k, v in m.items() if k in keys}

        recordings = {self.recording(u) for u in keep}
        speakers = {self.utt2spk[u] for u in keep}
        return DataDir(
            sel(self.utt2spk, keep), path=None, wav_scp=sel(self.wav_scp, recordings),
            segments=sel(self.segments, keep), text=sel(self.text, keep),
            utt2lang=sel(self.utt2lang, keep),
            translations={lang: sel(m, keep) for lang, m in self.translations.items()},
            utt2dur=sel(self.utt2dur, keep), utt2num_frames=sel(self.utt2num_frames, keep),
            feats_scp=sel(self.feats_scp, keep), reco2dur=sel(self.reco2dur, recordings),
            spk2gender=sel(self.spk2gender, speakers), meta=self.meta,
            utt2sent=sel(self.utt2sent, keep),
        )

    def map_ids(self, utt_map: Mapping[str, str], spk_map: Mapping[str, str]) -> "DataDir":
        """A new DataDir with utterance and speaker ids renamed (recordings follow utterances
        when there are no segments)."""
        def ren(m, keymap):
            return None if m is None else {keymap[k]: v for k, v in m.items()}

        reco_map = utt_map if self.segments is None else {r: r for r in self.wav_scp}
        return DataDir(
            {utt_map[u]: spk_map[s] for u, s in self.utt2spk.items()},
            wav_scp=ren(self.wav_scp, reco_map), text=ren(self.text, utt_map),
            segments=ren(self.segments, utt_map), utt2lang=ren(self.utt2lang, utt_map),
            translations={lang: ren(m, utt_map) for lang, m in self.translations.items()},
            utt2dur=ren(self.utt2dur, utt_map), utt2num_frames=ren(self.utt2num_frames, utt_map),
            feats_scp=ren(self.feats_scp, utt_map), reco2dur=ren(self.reco2dur, reco_map),
            spk2gender=ren(self.spk2gender, spk_map), meta=self.meta,
            utt2sent=ren(self.utt2sent, utt_map),
        )


def _is_translation(f: Path) -> bool:
    try:
        langs.canonical(f.name[len("text."):])
        return True
    except langs.UnknownLanguageError:
        return False
