"""Kaldi data directories: read and write the ``<key> <value>`` files that describe a corpus.

Conventions (see DESIGN.md §3): UTF-8, one record a line, unique keys, sorted under ``LC_ALL=C``
(i.e. by the UTF-8 bytes), newline-terminated; files are written atomically.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Tuple, Union

from partlib.common import DataError, PathLike, atomic_open


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
                raise DataError(f"not valid UTF-8 ({e.reason} at byte {e.start})", path, lineno) from None
            yield lineno, line.rstrip("\n")


def read_kv(
    path: PathLike, *, allow_empty: bool = False, check_sorted: bool = False
) -> Dict[str, str]:
    """Read a ``<key> <value>`` file into an insertion-ordered dict.

    Duplicate keys, a missing value (unless ``allow_empty``) and, with ``check_sorted``, keys out of
    ``LC_ALL=C`` order raise :class:`DataError` naming file, line and key.
    """
    out: Dict[str, str] = {}
    prev = None
    for lineno, line in iter_lines(path):
        if not line.strip():
            raise DataError("empty line", path, lineno)
        parts = line.split(maxsplit=1)
        key = parts[0]
        value = parts[1].strip() if len(parts) > 1 else ""
        if not value and not allow_empty:
            raise DataError("missing value after the key", path, lineno, key)
        if key in out:
            raise DataError("duplicate key", path, lineno, key)
        if check_sorted and prev is not None and c_sort_key(key) < c_sort_key(prev):
            raise DataError(f"not sorted (LC_ALL=C): '{key}' after '{prev}'", path, lineno, key)
        out[key] = value
        prev = key
    return out


def read_kv_list(path: PathLike, **kwargs) -> Dict[str, List[str]]:
    """Read a ``<key> <v1> <v2> ...`` file (e.g. spk2utt) into ``key -> [values]``."""
    return {k: v.split() for k, v in read_kv(path, **kwargs).items()}


def write_kv(path: PathLike, mapping: Mapping[str, Union[str, Iterable[str]]]) -> None:
    """Write ``key value`` lines sorted under ``LC_ALL=C``, atomically.

    Values that are lists are joined by spaces (spk2utt). Keys must be non-empty and free of
    whitespace; values free of newlines.
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
    with atomic_open(path) as f:
        for key, value in rows:
            f.write(f"{key} {value}\n" if value != "" else f"{key}\n")
