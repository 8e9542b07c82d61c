"""One command-line tool per recipe step: ``python -m partlib.bin.<name> --help``.

Exit status of every tool: 0 done; 1 bad input or configuration (a data dir, file, config key or
utterance in error: one line on stderr that names it, no traceback; also a failed parallel job,
whose log is named); 2 a command-line usage error (argparse's own).
"""
from __future__ import annotations

import functools
from typing import Callable, List, Optional

from partlib.common import PartError, get_logger

EXIT_BAD_INPUT = 1


def cli(main: Callable[[Optional[List[str]]], Optional[int]]) -> Callable[[Optional[List[str]]], int]:
    """Decorator for a tool's ``main(argv)``: a :class:`PartError` ends the tool with its one-line
    message and :data:`EXIT_BAD_INPUT`; ``None`` returned means success."""

    @functools.wraps(main)
    def wrapper(argv: Optional[List[str]] = None) -> int:
        try:
            return int(main(argv) or 0)
        except PartError as e:
            # run as ``python -m partlib.bin.X`` the module is __main__; its spec has the real name
            spec = main.__globals__.get("__spec__")
            get_logger(spec.name if spec is not None else main.__module__).error("%s", e)
            return EXIT_BAD_INPUT

    return wrapper
