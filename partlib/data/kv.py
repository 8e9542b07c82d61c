"""Kaldi ``<key> <value>`` files: the I/O every data-dir file, hypothesis and reference goes through.

UTF-8, one record a line, unique keys, sorted under ``LC_ALL=C`` (by UTF-8 bytes),
newline-terminated; written atomically. Errors name the file and line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Tuple, Union

from partlib.common import DataError, PathLike, atomic_open, get_logger

log = get_logger(__name__)


def c_sort_key(key: str) -> bytes:
    """Sort key equal to ``LC_ALL=C sort`` order (byte order of the UTF-8 encoding)."""
    return key.encode("utf-8")


def iter_lines(path: PathLike) -> Iterable[Tuple[int, str]]:
    """Yield ``(line_number, line)`` of a UTF-8 text file; a decoding error names file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                key = raw.split(maxsplit=1)[0].decode("utf-8", "replace") if raw.strip() else None
                raise DataError(
                    f"not valid UTF-8 ({e.reason} at byte {e.start})", path, lineno, key
                ) from None
            yield lineno, line.rstrip("\n")


Row = Tuple[int, str, str]  # (line number, key, value)


def read_rows(
    path: PathLike, *, allow_empty: bool = False, check_sorted: bool = True, lenient: bool = False
) -> List[Row]:
    """Read a ``<key> <value>`` file into ``(line, key, value)`` rows.

    Strict mode raises :class:`DataError` (file, line, key) on an empty line, a missing value
    (unless ``allow_empty``), a duplicate key and, with ``check_sorted``, keys out of ``LC_ALL=C``
    order. ``lenient`` mode (used to repair a directory) drops such lines instead, keeping the first
    line of each key, and returns the rows C-sorted.
    """
    rows: List[Row] = []
    seen = set()
    prev = prev_sort = None
    for lineno, line in iter_lines(path):
        parts = line.split(maxsplit=1)
        key = parts[0] if parts else ""
        value = parts[1].strip() if len(parts) > 1 else ""
        problem = None
        if not key:
            problem = "empty line"
        elif not value and not allow_empty:
            problem = "missing value after the key"
        elif key in seen:
            problem = "duplicate key"
        elif check_sorted and not lenient:
            sort_key = c_sort_key(key)
            if prev_sort is not None and sort_key < prev_sort:
                problem = f"not sorted (LC_ALL=C): '{key}' after '{prev}'"
            prev_sort = sort_key
        if problem:
            if not lenient:
                raise DataError(problem, path, lineno, key or None)
            log.warning("%s:%d: %s: line dropped", path, lineno, problem)
            continue
        seen.add(key)
        rows.append((lineno, key, value))
        prev = key
    if lenient:
        rows.sort(key=lambda r: c_sort_key(r[1]))
    return rows


def read_kv(
    path: PathLike, *, allow_empty: bool = False, check_sorted: bool = False
) -> Dict[str, str]:
    """Read a ``<key> <value>`` file into an insertion-ordered dict.

    Duplicate keys, a missing value (unless ``allow_empty``) and, with ``check_sorted``, keys out of
    ``LC_ALL=C`` order raise :class:`DataError` naming file, line and key.
    """
    return {k: v for _, k, v in read_rows(path, allow_empty=allow_empty, check_sorted=check_sorted)}


def read_kv_list(path: PathLike, **kwargs) -> Dict[str, List[str]]:
    """Read a ``<key> <v1> <v2> ...`` file (e.g. spk2utt) into ``key -> [values]``."""
    return {k: v.split() for k, v in read_kv(path, **kwargs).items()}


def format_kv(mapping: Mapping[str, Union[str, Iterable[str]]], path: PathLike = "<kv>") -> str:
    """Render ``key value`` lines sorted under ``LC_ALL=C`` (``path`` only names errors).

    Values that are lists are joined by spaces (spk2utt). Keys must be non-empty and free of
    whitespace; values free of line breaks.
    """
    rows = []
    for key, value in mapping.items():
        if not key or any(c.isspace() for c in key):
            raise DataError(f"invalid key {key!r} (empty or contains whitespace)", path)
        if not isinstance(value, str):
            value = " ".join(value)
        if "\n" in value or "\r" in value:
            raise DataError("value contains a line break", path, utt=key)
        rows.append((key, value))
    rows.sort(key=lambda kv: c_sort_key(kv[0]))
    return "".join(f"{key} {value}\n" if value != "" else f"{key}\n" for key, value in rows)


def write_kv(path: PathLike, mapping: Mapping[str, Union[str, Iterable[str]]]) -> None:
    """Write ``key value`` lines sorted under ``LC_ALL=C``, atomically (see :func:`format_kv`)."""
    text = format_kv(mapping, path)
    with atomic_open(path) as f:
        f.write(text)


def find_line(path: PathLike, key: str) -> Optional[int]:
    """The (1-based) line of ``path`` whose key is ``key``, or None (no such line or file). For
    error messages about a record known by its key: it reads the file, so call it once, on the error
    path."""
    want = key.encode("utf-8")
    try:
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                parts = raw.split(maxsplit=1)
                if parts and parts[0] == want:
                    return lineno
    except OSError:  # the error being reported is about this file; a line number is a bonus
        pass
    return None
