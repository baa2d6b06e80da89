"""Output safety, checked before a stage computes anything.

:func:`check_outputs` refuses (:class:`~xrayflow.errors.OutputError`, exit status 2) an
output path that

- is empty;
- resolves to one of the stage's inputs (same file: same inode, also through symlinks or
  hard links; or an input lies inside an output folder);
- exists and is not a regular file (a folder, a device such as ``/dev/full``, a FIFO), or,
  for a folder output, exists and is not a folder;
- lies in a directory that does not exist or cannot be written (tried by creating a file
  there, so it also holds for root and for read-only mounts).

It then removes the temporary files that a killed earlier run left beside each output
(:func:`xrayflow.io.atomic.remove_stale_temporaries`). Nothing else is created.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from xrayflow.errors import OutputError
from xrayflow.io.atomic import remove_stale_temporaries

PathLike = str | os.PathLike


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _inside(inner: Path, outer: Path) -> bool:
    try:
        inner.resolve().relative_to(outer.resolve())
    except ValueError:
        return False
    return True


def _check_writable_dir(label: str, path: Path, d: Path) -> None:
    if not d.exists():
        raise OutputError(f"{label} {str(path)!r}: the directory {str(d)!r} does not exist")
    if not d.is_dir():
        raise OutputError(f"{label} {str(path)!r}: {str(d)!r} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".xrayflow-write-test-", dir=d)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputError(
            f"{label} {str(path)!r}: cannot write in the directory {str(d)!r} ({reason})"
        ) from None
    os.close(fd)
    os.unlink(probe)


def _check_one(label: str, path: Path, kind: str, inputs: Mapping[str, Path]) -> None:
    for in_label, inp in inputs.items():
        if _same_file(path, inp) or (kind == "dir" and path.exists() and _inside(inp, path)):
            raise OutputError(
                f"{label} {str(path)!r} would overwrite the input {in_label} {str(inp)!r}; "
                "choose another output path"
            )
    if path.exists() or path.is_symlink():
        mode = os.stat(path).st_mode if path.exists() else 0
        if kind == "file" and not stat.S_ISREG(mode):
            what = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
            raise OutputError(
                f"{label} {str(path)!r} exists and is {what}; give a file path to write"
            )
        if kind == "dir" and not stat.S_ISDIR(mode):
            raise OutputError(f"{label} {str(path)!r} exists and is not a directory")
    if kind == "dir" and path.is_dir():
        _check_writable_dir(label, path, path)
    else:
        _check_writable_dir(label, path, path.parent)


def check_outputs(
    outputs: Mapping[str, PathLike | None],
    inputs: Mapping[str, PathLike | None] | None = None,
    dirs: tuple[str, ...] = (),
) -> dict[str, Path]:
    """Check every output before any work; raise :class:`OutputError` naming the paths.

    Args:
        outputs: label (as the user wrote it, e.g. ``"--out"``, ``"run.checkpoint_path"``)
            -> path; ``None`` entries are skipped (optional outputs not asked for).
        inputs: label -> path of every file the stage reads; ``None`` entries are skipped.
        dirs: labels of ``outputs`` that are folders (figures, shard directories).

    Returns:
        label -> Path of the outputs that were given. Two outputs on one path are refused too.
    """
    ins = {k: Path(v) for k, v in (inputs or {}).items() if v is not None and str(v) != ""}
    checked: dict[str, Path] = {}
    for label, raw in outputs.items():
        if raw is None:
            continue
        if str(raw).strip() == "":
            raise OutputError(f"{label}: the output path is empty")
        path = Path(raw)
        kind = "dir" if label in dirs else "file"
        _check_one(label, path, kind, ins)
        for other, p in checked.items():
            if path.resolve() == p.resolve():
                raise OutputError(f"{label} and {other} are the same path {str(path)!r}")
        checked[label] = path
    for label, path in checked.items():
        if label not in dirs:
            remove_stale_temporaries(path)
    return checked
