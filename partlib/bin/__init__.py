"""One command-line tool per recipe step: ``python -m partlib.bin.<name> --help``.

Exit status of every tool: 0 done; 1 bad input or configuration (a data dir, file, config key or
utterance in error: one line on stderr that names it, no traceback; also a failed parallel job,
whose log is named, and a full disk, whose path is named); 2 a command-line usage error
(argparse's own, also an option value out of range: :func:`number`); 75 (:data:`EXIT_PREEMPTED`,
BSD's EX_TEMPFAIL) training stopped on SIGTERM or SIGUSR1 after writing a checkpoint: run the same
command again (``utils/slurm.pl`` and ``utils/srun_requeue.sh`` requeue on it).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import typing
from pathlib import Path
from typing import Any, Callable, List, Optional, Type, TypeVar

import yaml

from partlib import config
from partlib.common import PartError, Preempted, get_logger

T = TypeVar("T")

EXIT_BAD_INPUT = 1
EXIT_PREEMPTED = 75


def cli(main: Callable[[Optional[List[str]]], Optional[int]]) -> Callable[[Optional[List[str]]], int]:
    """Decorator for a tool's ``main(argv)``: a :class:`PartError` ends the tool with its one-line
    message and :data:`EXIT_BAD_INPUT`, :class:`Preempted` with :data:`EXIT_PREEMPTED`; ``None``
    returned means success."""

    @functools.wraps(main)
    def wrapper(argv: Optional[List[str]] = None) -> int:
        # run as ``python -m partlib.bin.X`` the module is __main__; its spec has the real name
        spec = main.__globals__.get("__spec__")
        log = get_logger(spec.name if spec is not None else main.__module__)
        try:
            return int(main(argv) or 0)
        except PartError as e:
            log.error("%s", e)
            return EXIT_BAD_INPUT
        except Preempted as e:
            log.warning("%s", e)
            return EXIT_PREEMPTED

    return wrapper


def add_normalizer_option(parser: argparse.ArgumentParser, default: Optional[str], unset: str = "") -> None:
    """``--normalizer``: the text normaliser scheme of WER/CER scoring
    (``partlib.scoring.normalize``); ``unset`` says what ``default`` None means."""
    from partlib.scoring import normalize

    parser.add_argument("--normalizer", choices=normalize.SCHEMES, default=default,
                        help="normalisers before WER/CER: part-basic-v1 (ours) or whisper (Whisper's, as the "
                             f"PART paper reports; docs/scoring.md); default: {default or unset}")


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``partlib.bin.train`` that other tools (``partlib.bin.plan``) accept alike:
    ``--set`` / ``--model-set`` overrides and ``--strategy``."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a schedule value (YAML-parsed), e.g. stages.1.max_steps=50; repeatable")
    parser.add_argument("--model-set", dest="model_overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a model-config value, e.g. adapter.stack=2; repeatable")
    parser.add_argument("--strategy", choices=["ddp", "fsdp"], default="ddp",
                        help="ddp: full replicas, summed gradient all-reduce; fsdp: shard parameters, gradients "
                             "and optimizer state over ranks (fully_shard per transformer layer); one process: same")


def number(kind: type, low: float, *, strict: bool = False, high: Optional[float] = None) -> Callable[[str], Any]:
    """An argparse ``type``: a finite ``kind`` (int or float) ``>= low`` (``> low`` when ``strict``)
    and ``<= high`` when given. A value out of range is a usage error naming the option (exit 2),
    not a traceback or a silently odd run later."""
    bounds = f"{'>' if strict else '>='} {low:g}" + ("" if high is None else f" and <= {high:g}")
    what = ("an integer " if kind is int else "a number ") + bounds

    def parse(value: str) -> Any:
        try:
            x = kind(value)
        except ValueError:
            x = None
        if x is None or not math.isfinite(x) or x < low or (strict and x == low) or (high is not None and x > high):
            raise argparse.ArgumentTypeError(f"expected {what}, got {value!r}")
        return x

    parse.__name__ = what  # argparse names the type by it in some messages
    return parse


positive_int = number(int, 1)
"""Counts that must be at least one: beams, batch sizes, jobs, threads, resamples."""
nonnegative_int = number(int, 0)
"""Counts where 0 means none or a default (worker processes, torch's default threads)."""
positive_float = number(float, 0, strict=True)
"""Durations, sizes and factors that must be above zero."""
nonnegative_float = number(float, 0)
"""Durations where 0 is allowed (a pause, a minimum)."""
fraction = number(float, 0, strict=True, high=1)
"""A share in (0, 1]."""


def pair(kind: Callable[[str], Any]) -> Callable[[str], tuple]:
    """An argparse ``type`` for ``A:B`` (two values of ``kind``, e.g. a range of seconds; ``kind``
    may be one of the checked types above)."""
    def parse(value: str) -> tuple:
        try:
            a, b = value.split(":")
            return kind(a), kind(b)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected A:B, got {value!r}") from None
    return parse


def add_config_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """``--config FILE`` and one ``--<field>`` option per scalar field of the config dataclass
    ``cls`` (values are read as YAML and checked like the file's)."""
    parser.add_argument("--config", type=Path, help=f"YAML with {cls.__name__} options ('base:' allowed)")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if hints[f.name] in (int, float, str, bool):
            parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=yaml.safe_load, default=None,
                                metavar=hints[f.name].__name__.upper(), help=f"default: {f.default!r}")


def config_from_args(cls: Type[T], args: argparse.Namespace) -> T:
    """The ``cls`` config of :func:`add_config_options`' options: the file, then the options."""
    raw = config.load_file(args.config) if args.config else {}
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
             if getattr(args, f.name, None) is not None}
    where = str(args.config) if args.config else "command line"
    return config.parse(cls, {**raw, **given}, where + (" + command-line options" if given and args.config else ""))
