"""Validate a Kaldi data directory with the accept/reject decisions of Kaldi's validator.

Kaldi's ``utils/validate_data_dir.sh`` is a pipeline of awk, sort, grep and perl. This module
re-implements each of its checks on the raw bytes of the files, with the semantics of those tools
under ``LC_ALL=C``: awk splits fields on runs of space/tab, ``sort`` compares bytes, ``grep -w``
treats ``[A-Za-z0-9_]`` as word characters, perl's ``split(" ")`` splits on ASCII whitespace, awk
(mawk) compares a field with a number numerically only when the field looks like a number, and
"non-printable" means ``[^[:print:][:space:]]`` under glibc's C.UTF-8 (control characters and
unassigned code points; undecodable bytes never match).

The one deliberate difference: a malformed utt2spk line (not two fields) is an error here, where
Kaldi prints a message but exits 0.
"""
from __future__ import annotations

import math
import re
import unicodedata
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from partlib.common import DataError, PathLike, get_logger

log = get_logger(__name__)

_AWK_SPLIT = re.compile(rb"[ \t\n]+")
# A field awk (mawk) treats as a number in comparisons; anything else compares as a string.
_AWK_NUMBER = re.compile(
    rb"[-+]?(?:0x[0-9a-fA-F]+(?:\.[0-9a-fA-F]*)?(?:p[-+]?\d+)?|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
)
# strtod also reads infinities and NaNs (awk's int() converts with it).
_STRTOD_WORD = re.compile(rb"[-+]?(?:inf(?:inity)?|nan)", re.IGNORECASE)
# grep -E '^\S+\s+~' under LC_ALL=C: a plain path starting with '~' (fopen does no tilde expansion).
_TILDE = re.compile(rb"[^ \t\n\x0b\x0c\r]+[ \t\n\x0b\x0c\r]+~")
# grep -w under LC_ALL=C: the symbol neither preceded nor followed by [A-Za-z0-9_].
_ILLEGAL_SYMBOLS = {
    sym: re.compile(rb"(?<![A-Za-z0-9_])%s(?![A-Za-z0-9_])" % re.escape(sym.encode()))
    for sym in ("<s>", "</s>", "#0")
}
# Unicode whitespace other than TAB, LF, CR and SPACE (perl's \s under unicode_strings).
_BAD_WHITESPACE = frozenset(
    "\x0b\x0c\x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000" + "".join(map(chr, range(0x2000, 0x200B)))
)
_ALLOWED_CONTROL = frozenset("\t\n\x0b\x0c\r")
# Characters that may be non-printable: anything outside printable ASCII and TAB..CR.
_SUSPECT = re.compile(r"[^\t-\r -~]")
_SUSPECT_WS = re.compile(r"[^\t\n -~]")

_UTT_KEYED = ("vad.scp", "utt2lang", "utt2uniq")


def _lines(data: bytes) -> List[bytes]:
    """Records as awk/sort see them: split on LF, a last line without LF still counts."""
    if not data:
        return []
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def _fields(line: bytes) -> List[bytes]:
    """awk's default field splitting (runs of space, tab, newline; leading blanks ignored)."""
    return [f for f in _AWK_SPLIT.split(line) if f]


_FIRST = re.compile(rb"[ \t\n]*([^ \t\n]*)")


def _first(line: bytes) -> bytes:
    """awk's ``$1`` (empty for a blank line)."""
    return _FIRST.match(line).group(1)


def _to_float(text: bytes) -> float:
    return float.fromhex(text.decode()) if b"x" in text else float(text)


def _awk_num(field: bytes) -> Optional[float]:
    """The numeric value of a field that awk treats as a number (no overflow), else None."""
    if _AWK_NUMBER.fullmatch(field):
        x = _to_float(field)
        return x if math.isfinite(x) else None
    return None


def _awk_int(field: bytes) -> float:
    """awk's ``int(field)``: strtod of the longest numeric prefix (0 if none), truncated."""
    m = _STRTOD_WORD.match(field)
    if m:
        x = float(m.group(0))
    else:
        m = _AWK_NUMBER.match(field)
        x = _to_float(m.group(0)) if m else 0.0
    return float(int(x)) if math.isfinite(x) else x


def _num_str(x: float) -> bytes:
    """awk's conversion of a number to a string (CONVFMT %.6g, integers printed as integers)."""
    if math.isfinite(x) and x == int(x):
        return b"%d" % x
    return b"%.6g" % x


def _awk_cmp(field: bytes, value: float) -> int:
    """Compare ``field`` with a number as awk does: numerically if it looks numeric, else as strings."""
    num = _awk_num(field)
    if num is not None:
        return (num > value) - (num < value)
    other = _num_str(value)
    return (field > other) - (field < other)


def _awk_cmp_fields(a: bytes, b: bytes) -> int:
    """Compare two fields as awk does: numerically when both look numeric, else as strings."""
    x, y = _awk_num(a), _awk_num(b)
    if x is not None and y is not None:
        return (x > y) - (x < y)
    return (a > b) - (a < b)


def _glibc_nonprint(ch: str) -> bool:
    """True for characters that ``[^[:print:][:space:]]`` matches under glibc's C.UTF-8."""
    return unicodedata.category(ch) in ("Cc", "Cn") and ch not in _ALLOWED_CONTROL


class _Validator:
    """One validation run; each check raises DataError naming file, line and key."""

    def __init__(self, path: Path, no_feats: bool, no_text: bool, no_wav: bool,
                 non_print: bool, no_spk_sort: bool) -> None:
        self.dir = path
        self.no_feats, self.no_text, self.no_wav = no_feats, no_text, no_wav
        self.non_print, self.no_spk_sort = non_print, no_spk_sort
        self._cache: Dict[str, bytes] = {}
        self._keys: Dict[str, List[bytes]] = {}

    # --- helpers -------------------------------------------------------------------------------
    def exists(self, name: str) -> bool:
        return (self.dir / name).is_file()

    def data(self, name: str) -> bytes:
        if name not in self._cache:
            self._cache[name] = (self.dir / name).read_bytes()
        return self._cache[name]

    def fail(self, name: str, message: str, line: Optional[int] = None,
             key: Optional[bytes] = None) -> None:
        utt = None if key is None else key.decode("utf-8", "backslashreplace")
        raise DataError(message, self.dir / name, line, utt)

    def keys(self, name: str) -> List[bytes]:
        if name not in self._keys:
            self._keys[name] = [_first(line) for line in _lines(self.data(name))]
        return self._keys[name]

    def check_sorted_and_uniq(self, name: str) -> None:
        data = self.data(name)
        if data and not data.endswith(b"\n"):
            self.fail(name, "last line does not end in a newline", len(_lines(data)))
        keys = self.keys(name)
        for i in range(1, len(keys)):
            if keys[i] == keys[i - 1]:
                self.fail(name, "duplicate key", i + 1, keys[i])
            if keys[i] < keys[i - 1]:
                self.fail(name, "not sorted (LC_ALL=C sort): key "
                          f"'{keys[i].decode(errors='replace')}' after "
                          f"'{keys[i - 1].decode(errors='replace')}'", i + 1, keys[i])

    def same_keys(self, name: str, got: Sequence[bytes], want: Sequence[bytes], what: str,
                  reference: str) -> None:
        """``got`` (keys of ``name`` in file order) must equal ``want`` exactly."""
        if list(got) == list(want):
            return
        for i, (g, w) in enumerate(zip(got, want)):
            if g != w:
                wanted = w.decode(errors="replace")
                self.fail(name, f"{what} differ from {reference}: expected '{wanted}' here",
                          i + 1, g)
        if len(got) > len(want):
            self.fail(name, f"{what} not in {reference}", len(want) + 1, got[len(want)])
        missing = want[len(got)].decode(errors="replace")
        self.fail(name, f"{what} differ from {reference}: '{missing}' "
                  f"(and {len(want) - len(got) - 1} more) missing")

    def check_fields(self, name: str, ok, message: str) -> None:
        for i, line in enumerate(_lines(self.data(name)), start=1):
            if not ok(_fields(line)):
                self.fail(name, f"{message}: '{line.decode(errors='replace')}'", i, _first(line))

    # --- the checks, in Kaldi's order ----------------------------------------------------------
    def run(self) -> None:
        if not self.dir.is_dir():
            raise DataError("no such directory", self.dir)
        for name in ("spk2utt", "utt2spk"):
            if not self.exists(name):
                self.fail(name, "no such file")
            if not self.data(name):
                self.fail(name, "empty file")
        self.check_fields("utt2spk", lambda f: len(f) == 2,
                          "wrong format (expected '<utt> <speaker>')")
        if len(_lines(self.data("spk2utt"))) == 1:
            log.warning("%s: only one speaker; this is probably a bad idea", self.dir)
        self.check_sorted_and_uniq("utt2spk")
        if not self.no_spk_sort:
            self.check_speaker_order()
        self.check_sorted_and_uniq("spk2utt")
        self.check_spk2utt_matches()
        utts = self.keys("utt2spk")
        speakers = self.keys("spk2utt")

        if not self.exists("text") and not self.no_text:
            self.fail("text", "no such file (if this is by design, use --no-text)")
        if not self.no_text:
            self.check_text(utts)
        if self.exists("segments") and not self.exists("wav.scp"):
            self.fail("segments", "segments exists but wav.scp does not")
        if not self.exists("wav.scp") and not self.no_wav:
            self.fail("wav.scp", "no such file (if this is by design, use --no-wav)")
        recordings: Optional[List[bytes]] = None
        if self.exists("wav.scp"):
            recordings = self.check_wav(utts)
        if not self.exists("feats.scp") and not self.no_feats:
            self.fail("feats.scp", "no such file (if this is by design, use --no-feats)")
        if self.exists("feats.scp"):
            self.check_sorted_and_uniq("feats.scp")
            self.same_keys("feats.scp", self.keys("feats.scp"), utts, "utterance ids",
                           "those of utt2spk")
        if self.exists("cmvn.scp"):
            self.check_sorted_and_uniq("cmvn.scp")
            self.same_keys("cmvn.scp", self.keys("cmvn.scp"), speakers, "speaker ids",
                           "those of spk2utt")
        if self.exists("spk2gender"):
            self.check_sorted_and_uniq("spk2gender")
            self.check_fields("spk2gender", lambda f: len(f) == 2 and f[1] in (b"m", b"f"),
                              "malformed line (expected '<speaker> m|f')")
            self.same_keys("spk2gender", self.keys("spk2gender"), speakers, "speaker ids",
                           "those of spk2utt")
        for name, ref, ref_name in (("spk2warp", speakers, "spk2utt"),
                                    ("utt2warp", utts, "utt2spk")):
            if self.exists(name):
                self.check_sorted_and_uniq(name)
                self.check_fields(
                    name, lambda f: len(f) == 2 and _awk_cmp(f[1], 0.5) > 0
                    and _awk_cmp(f[1], 1.5) < 0, "malformed line (expected a warp in (0.5, 1.5))")
                self.same_keys(name, self.keys(name), ref, "ids", f"those of {ref_name}")
        for name in _UTT_KEYED:
            if self.exists(name):
                self.check_sorted_and_uniq(name)
                self.same_keys(name, self.keys(name), utts, "utterance ids", "those of utt2spk")
        if self.exists("utt2dur"):
            self.check_sorted_and_uniq("utt2dur")
            self.same_keys("utt2dur", self.keys("utt2dur"), utts, "utterance ids",
                           "those of utt2spk")
            self.check_fields("utt2dur", lambda f: len(f) == 2 and _awk_cmp(f[1], 0) > 0,
                              "bad line (expected '<utt> <positive duration>')")
        if self.exists("utt2num_frames"):
            self.check_sorted_and_uniq("utt2num_frames")
            self.same_keys("utt2num_frames", self.keys("utt2num_frames"), utts,
                           "utterance ids", "those of utt2spk")
            self.check_fields(
                "utt2num_frames",
                lambda f: len(f) == 2 and _awk_cmp(f[1], 0) > 0
                and _awk_cmp(f[1], _awk_int(f[1])) == 0,
                "bad line (expected '<utt> <positive integer>')")
        if self.exists("reco2dur"):
            self.check_sorted_and_uniq("reco2dur")
            if recordings is not None:
                self.same_keys("reco2dur", self.keys("reco2dur"), recordings, "recording ids",
                               "those of segments")
            else:
                self.same_keys("reco2dur", self.keys("reco2dur"), utts, "recording ids",
                               "those of wav.scp (the utterance ids)")
            self.check_fields("reco2dur", lambda f: len(f) == 2 and _awk_cmp(f[1], 0) > 0,
                              "bad line (expected '<recording> <positive duration>')")

    def check_speaker_order(self) -> None:
        """``sort -k2 -C``: lines ordered by (speaker field to end of line, whole line)."""
        prev: Optional[Tuple[bytes, bytes]] = None
        for i, line in enumerate(_lines(self.data("utt2spk")), start=1):
            # sort's field 2 starts right after field 1 (leading blanks belong to field 1).
            m = re.match(rb"[ \t]*[^ \t]*", line)
            cur = (line[m.end():], line)
            if prev is not None and cur < prev:
                self.fail("utt2spk", "not sorted by speaker id as well as by utterance id "
                          "(make speaker ids prefixes of utterance ids)", i, _first(line))
            prev = cur

    def check_spk2utt_matches(self) -> None:
        """utt2spk must equal spk2utt expanded line by line (speakers and utterances in order)."""
        expanded: List[Tuple[bytes, bytes]] = []
        for line in _lines(self.data("spk2utt")):
            parts = line.split()  # perl split(" "): ASCII whitespace
            if len(parts) < 2:
                break  # spk2utt_to_utt2spk.pl dies on a speaker without utterances
            expanded.extend((u, parts[0]) for u in parts[1:])
        pairs = [tuple(_fields(line)[:2]) for line in _lines(self.data("utt2spk"))]
        for i, pair in enumerate(pairs):
            if i >= len(expanded) or expanded[i] != pair:
                self.fail("spk2utt", "does not match utt2spk (regenerate it with "
                          "utils/utt2spk_to_spk2utt.pl)", None, pair[0])
        if len(expanded) > len(pairs):
            self.fail("spk2utt", "lists utterances that utt2spk lacks", None,
                      expanded[len(pairs)][0])

    def check_text(self, utts: List[bytes]) -> None:
        data = self.data("text")
        lines = _lines(data)
        if not self.non_print:
            for i, line in enumerate(lines, start=1):
                text = line.decode("utf-8", "ignore")  # grep ignores encoding errors
                if any(_glibc_nonprint(c) for c in _SUSPECT.findall(text)):
                    self.fail("text", "contains non-printable characters (use --non-print to "
                              "allow them)", i, _first(line))
        if not data:
            self.fail("text", "empty file")
        try:
            decoded = [line.decode("utf-8") for line in lines]
        except UnicodeDecodeError:
            decoded = []  # Kaldi checks whitespace only in UTF-8 text
        for i, line in enumerate(decoded, start=1):
            key = _first(lines[i - 1])
            if i == len(lines) and not data.endswith(b"\n"):
                self.fail("text", "last line does not end in a newline", i, key)
            if "\r" in line:
                self.fail("text", "contains a CR (0x0D) character", i, key)
            if any(c in _BAD_WHITESPACE for c in _SUSPECT_WS.findall(line)):
                self.fail("text", "contains disallowed Unicode whitespace", i, key)
        self.check_sorted_and_uniq("text")
        for symbol, pattern in _ILLEGAL_SYMBOLS.items():
            for i, line in enumerate(lines, start=1):
                if pattern.search(line):
                    self.fail("text", f"contains the illegal symbol {symbol}", i, _first(line))
        self.same_keys("text", self.keys("text"), utts, "utterance ids", "those of utt2spk")

    def check_wav(self, utts: List[bytes]) -> Optional[List[bytes]]:
        """Check wav.scp (and segments); return the recording ids when segments exist."""
        self.check_sorted_and_uniq("wav.scp")
        for i, line in enumerate(_lines(self.data("wav.scp")), start=1):
            if _TILDE.match(line):
                self.fail("wav.scp", "do not use '~' in wav.scp (no tilde expansion)", i,
                          _first(line))
        if not self.exists("segments"):
            self.same_keys("wav.scp", self.keys("wav.scp"), utts, "utterance ids",
                           "those of utt2spk")
            self.check_reco2file_and_channel(utts)
            return None
        self.check_sorted_and_uniq("segments")
        self.check_fields("segments",
                          lambda f: len(f) == 4 and _awk_cmp_fields(f[3], f[2]) > 0,
                          "bad line (expected '<utt> <recording> <start> <end>' with end > start)")
        if self.exists("text"):
            self.same_keys("segments", self.keys("segments"), utts, "utterance ids",
                           "those of utt2spk")
        recordings = sorted({_fields(line)[1] for line in _lines(self.data("segments"))})
        self.same_keys("wav.scp", self.keys("wav.scp"), recordings, "recording ids",
                       "those used in segments")
        self.check_reco2file_and_channel(recordings)
        return recordings

    def check_reco2file_and_channel(self, recordings: List[bytes]) -> None:
        name = "reco2file_and_channel"
        if not self.exists(name):
            return
        self.check_sorted_and_uniq(name)
        self.check_fields(name, lambda f: len(f) == 3 and f[2] in (b"A", b"B", b"1"),
                          "bad line (expected '<recording> <file> A|B')")
        self.same_keys(name, self.keys(name), recordings, "recording ids", "those of wav.scp")


def validate_data_dir(path: PathLike, *, no_feats: bool = False, no_text: bool = False,
                      no_wav: bool = False, non_print: bool = False,
                      no_spk_sort: bool = False) -> None:
    """Check a data dir as Kaldi's ``utils/validate_data_dir.sh`` does; raise DataError if bad.

    ``no_feats``/``no_text``/``no_wav`` make feats.scp/text/wav.scp optional (a present
    wav.scp or feats.scp is still checked; with ``no_text`` the text file is not checked, as in
    Kaldi). ``non_print`` allows non-printable characters in text; ``no_spk_sort`` drops the
    requirement that utt2spk is also sorted by speaker.
    """
    _Validator(Path(path), no_feats, no_text, no_wav, non_print, no_spk_sort).run()
