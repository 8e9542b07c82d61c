"""Shared primitives: user-facing errors, atomic file writes, logging."""
from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import logging
import os
import secrets
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import IO, Callable, Iterator, List, Optional, Sequence, Union

PathLike = Union[str, os.PathLike]


class PartError(Exception):
    """Base class of errors caused by user input (data, configs); message is meant for users."""


class DataError(PartError):
    """Bad data: the message names the file, the line (1-based) and the utterance id when known."""

    def __init__(
        self,
        message: str,
        path: Optional[PathLike] = None,
        line: Optional[int] = None,
        utt: Optional[str] = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        self.utt = utt
        self.reason = message
        where = ""
        if self.path is not None:
            where = self.path + (f":{line}" if line is not None else "") + ": "
        if utt is not None:
            where += f"utterance '{utt}': "
        super().__init__(where + message)


class ConfigError(PartError):
    """An invalid configuration (YAML or CLI); raised before any work is done."""


class Preempted(Exception):
    """Training stopped on a signal (SIGTERM, SIGUSR1) after writing a checkpoint: not an error;
    rerunning the same command resumes (:mod:`partlib.train.preemption`)."""


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", encoding: Optional[str] = "utf-8") -> Iterator[IO]:
    """Open a temp file next to ``path``; on success rename it over ``path``, on error delete it.

    Readers never see a partially written file, and a failing writer leaves the old file intact.
    The file gets the mode a plain ``open`` would give it (umask respected).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # not mkstemp, whose 0600 would make every output private: the mode is the one a plain open
    # gives (an existing file's, else 0666 & ~umask)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        with contextlib.suppress(FileExistsError):
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
    with contextlib.suppress(FileNotFoundError):
        os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
    kwargs = {} if "b" in mode else {"encoding": encoding, "newline": "\n"}
    try:
        with named_write_errors(path), open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# what a write (not a read) fails with when the disk or quota is full or the file system is read-only
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


@contextlib.contextmanager
def named_write_errors(what: PathLike) -> Iterator[None]:
    """Inside it, a write that fails for lack of space (or a read-only file system) becomes a
    :class:`PartError` naming ``what`` (a path, or a description of the files being written)."""
    try:
        yield
    except OSError as e:
        if e.errno not in WRITE_ERRNOS:
            raise
        raise PartError(f"cannot write {what}: {e.strerror or e} (errno {e.errno}); "
                        "nothing earlier was overwritten: free space and rerun the same command") from None


def umask() -> int:
    """The process's umask (read without changing it where Linux shows it)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def plain_modes(root: PathLike) -> None:
    """Give ``root`` and everything in it (links aside) the mode ``open`` / ``mkdir`` would give a
    new file / directory (0666, 0777 for directories and executables, & ~umask): ``mkdtemp`` and
    libraries that write through ``mkstemp`` (safetensors, for one) leave them private (0700, 0600)."""
    mask = umask()
    for p in [Path(root), *Path(root).rglob("*")]:
        if not p.is_symlink():
            p.chmod((0o777 if p.is_dir() or p.stat().st_mode & stat.S_IXUSR else 0o666) & ~mask)


def replace_dir(tmp: PathLike, out: PathLike) -> None:
    """Put the complete directory ``tmp`` in place of ``out`` (a link to a directory: in place of
    its target), then remove the old one. ``tmp`` is an output as any other: its files and
    directories first get the modes a plain ``open`` / ``mkdir`` would give (:func:`plain_modes`).

    Where the file system can (Linux ``renameat2(RENAME_EXCHANGE)``: local file systems) the two are
    swapped in one step, so that at no moment is there no ``out``; elsewhere (NFS, Lustre) ``out`` is
    first renamed to ``.<out>.old.<pid>``: a crash between the two renames leaves the old directory
    there, not lost. The old one's removal is best effort (busy NFS files)."""
    tmp, out = Path(tmp), Path(out)
    plain_modes(tmp)
    if out.is_symlink():
        out = out.resolve()
    if not out.exists():
        os.replace(tmp, out)
        return
    if _exchange(tmp, out):
        old = tmp
    else:
        old = out.with_name(f".{out.name}.old.{os.getpid()}")
        os.rename(out, old)
        os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths; False where the system or file system does not support it."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(code, os.strerror(code), str(b))


def file_sha256(path: PathLike, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file, read in chunks."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            sha.update(block)
    return sha.hexdigest()


def atomic_write(path: PathLike, data: Union[str, bytes]) -> None:
    """Write ``data`` (text or bytes) to ``path`` atomically (temp file + rename)."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def get_logger(name: str = "partlib") -> logging.Logger:
    """A logger that prints ``time [LEVEL] name: message`` to stderr once configured."""
    logger = logging.getLogger(name)
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(os.environ.get("PART_LOG_LEVEL", "INFO"))
    return logger


def log_tail(path: PathLike, n: int = 3) -> str:
    """The last ``n`` lines of a log file joined by `` | `` (for error messages)."""
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(lines[-n:])


def run_jobs(cmd: str, nj: int, log: PathLike, argv: Sequence[str], what: str,
             failed: Optional[Callable[[], Sequence[int]]] = None) -> None:
    """Run ``nj`` jobs through a Kaldi-style runner: ``CMD JOB=1:nj LOG python ARGV...``, where the
    runner replaces ``JOB`` in LOG and ARGV by the job number. A failure is a :class:`PartError`
    naming ``what``, the failed jobs (``failed()``: those whose outputs are missing; all when not
    given) and the tails of their logs."""
    full: List[str] = shlex.split(cmd) + [f"JOB=1:{nj}", str(log), sys.executable] + list(argv)
    get_logger("partlib").info("running %d jobs: %s", nj, shlex.join(full))
    try:
        if subprocess.run(full).returncode == 0:
            return
    except OSError as e:
        raise PartError(f"{what}: cannot run the job runner '{cmd}': {e.strerror}") from None
    jobs = list(failed()) if failed is not None else list(range(1, nj + 1))
    details = "; ".join(f"job {j}: {log_tail(str(log).replace('JOB', str(j)))}" for j in jobs[:3])
    raise PartError(f"{what} failed for {len(jobs) or 'some'} of {nj} jobs "
                    f"(logs: {str(log).replace('JOB', '*')}): {details}")
