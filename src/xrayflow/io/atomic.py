"""Atomic file writes: write to a temporary file next to the target, fsync, rename.

Nothing is left behind when the body raises: the temporary file is removed and an existing
target is untouched. Renaming within one directory is atomic on POSIX file systems, so a
reader (or a Snakemake rule) never sees a half-written output; the file is flushed to disk
(``fsync``) before the rename, and the directory after it, so a power cut cannot leave an
empty file under the final name.

A temporary file is named ``<name>.tmp-<host>-<pid>-<random>``. A run killed with
``kill -9`` cannot remove its own; :func:`remove_stale_temporaries` (called by every stage
through :func:`xrayflow.io.outputs.check_outputs` before it computes anything) removes those
of processes on this host that no longer exist.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


def temporary_prefix(target: Path) -> str:
    """Name prefix of this process's temporaries for ``target`` (files or folders), which
    :func:`remove_stale_temporaries` recognises once the process is gone."""
    return f"{target.name}.tmp-{_HOST}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove ``<name>.tmp-<this host>-<pid>-*`` files (and folders) beside ``path`` whose
    process is gone; returns what was removed. Temporaries of live processes and of other
    hosts (a shared file system) are left alone."""
    target = Path(path)
    parent = target.parent
    if not parent.is_dir():
        return []
    pat = re.compile(re.escape(f"{target.name}.tmp-{_HOST}-") + r"(\d+)-")
    removed = []
    for p in parent.iterdir():
        m = pat.match(p.name)
        if not m or _pid_alive(int(m.group(1))):
            continue
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
    return removed


def _fsync(path: Path) -> None:
    """Flush a file (or a directory entry) to disk; file systems that refuse are skipped."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; move it onto ``path`` on success.

    The temporary file is created (empty) in the target's directory, so the final
    ``os.replace`` stays on one file system; parent directories are created. On any
    exception the temporary file is deleted and the exception propagates.

    Example::

        with atomic_path("out.h5") as tmp:
            with h5py.File(tmp, "w") as f:
                ...
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=temporary_prefix(target), dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            # mkstemp creates 0600; give the result the usual umask-derived mode.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            _fsync(tmp)
        os.replace(tmp, target)
        _fsync(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp)`` on a temporary path that becomes ``path`` on success
    (:func:`atomic_path`); returns ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
