r'''The one tab-separated-values reader shared by the CommonVoice, CoVoST2 and Fleurs preparers.

CommonVoice and CoVoST2 write their tables with pandas ``quoting=QUOTE_NONE, escapechar="\\"``:
quotes appear raw inside sentences (``"""Good-bye,"" said the boy."``) and must not be
interpreted, and empty fields stay empty strings. Python's default csv quoting would merge rows.
'''
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence, Tuple

from partlib.common import DataError, PathLike


def _reader(f, escape: bool):
    return csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\" if escape else None)


def read_tsv(
    path: PathLike, required: Sequence[str] = (), *, header: bool = True,
    columns: Optional[Sequence[str]] = None, escape: bool = True,
) -> Iterator[Tuple[int, Dict[str, str]]]:
    """Yield ``(line_number, row)`` with ``row`` a dict from column name to field (never ``None``).

    With ``header`` the first line names the columns and ``required`` columns must be among them
    (any order; other columns are ignored). Without ``header``, ``columns`` names them by position.
    ``escape=False`` keeps backslashes literally (for tables not written with an escape character).
    A row with the wrong number of fields raises :class:`DataError` naming file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path)
    with open(path, encoding="utf-8", newline="") as f:
        rows = _reader(f, escape)
        try:
            if header:
                names = next(rows, None)
                if names is None:
                    raise DataError("empty file: expected a header line", path, 1)
                missing = [c for c in required if c not in names]
                if missing:
                    raise DataError(f"missing column(s) {', '.join(missing)} in the header "
                                    f"(found: {' '.join(names)})", path, 1)
            elif columns is None:
                raise ValueError("read_tsv without a header needs the column names")
            else:
                names = list(columns)
            for row in rows:
                if not row or row == [""]:
                    continue
                if len(row) != len(names):
                    raise DataError(f"expected {len(names)} tab-separated fields ({' '.join(names)}), "
                                    f"found {len(row)}", path, rows.line_num)
                yield rows.line_num, dict(zip(names, row))
        except UnicodeDecodeError as e:
            raise DataError(f"not valid UTF-8 ({e.reason})", path) from None
