"""Run a partlib tool with a full disk injected at the write call (no file system is mounted):

    python test/fault_inject.py --enospc PATTERN -m partlib.bin.TOOL ARGS...

Every file opened for writing whose base name matches the shell pattern PATTERN (temporary names
included, e.g. ``.RESULTS.md.*.tmp``) raises ``OSError(ENOSPC)`` at its first write; everything
else behaves as usual. ``builtins.open`` and ``io.open`` are replaced before the tool (and modules
that bind ``open`` at import, like ``tarfile``) is imported.
"""
import builtins
import errno
import fnmatch
import io
import os
import runpy
import sys

_open = builtins.open


class FullDisk:
    """A file whose writes fail as on a full disk; everything else goes to the real file."""

    def __init__(self, f) -> None:
        self._f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def writelines(self, lines):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()


def main() -> None:
    args = sys.argv[1:]
    if len(args) < 4 or args[0] != "--enospc" or args[2] != "-m":
        sys.exit("usage: fault_inject.py --enospc PATTERN -m MODULE ARGS...")
    pattern, module, rest = args[1], args[3], args[4:]

    def faulty_open(file, mode="r", *a, **k):
        f = _open(file, mode, *a, **k)
        writing = any(c in mode for c in "wax+")
        if writing and not isinstance(file, int) and fnmatch.fnmatch(os.path.basename(os.fspath(file)), pattern):
            return FullDisk(f)
        return f

    builtins.open = io.open = faulty_open
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
