"""The bad-input table's harness: one workspace of valid inputs, one misuse per case.

Every case runs ``xrayflow.cli.main(argv)`` in a fresh copy of the workspace (its own
folder, the current directory while it runs) and asserts what the reliability rules
promise for every failure a user can cause:

- exit status 2;
- a one-line message on stderr that matches the case's pattern (it names the key, file,
  dataset or index) and no traceback;
- no new file or folder anywhere in the workspace (no half-written output, no temporary);
- every input byte-identical afterwards.

``argv`` items may use ``{ws}`` (the workspace folder). ``prepare(ws)`` makes the bad input
(a corrupted copy, a symlink, a config with a bad value) before the snapshot is taken; the
factories below build the common ones (paths relative to the workspace).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest

from xrayflow.cli import main

# What the stage is asked to do with valid inputs; cases change one thing.
SIM = ["simulate", "--config", "sim.yaml", "--out", "new.cxi"]
RECON = ["reconstruct", "--config", "recon.yaml", "--data", "data.cxi", "--out", "new.h5"]
EVAL = ["evaluate", "--result", "recon.h5", "--truth", "data.cxi", "--out", "new.json"]
GEN = ["train", "--generate", "--config", "train.yaml", "--out", "newshards"]
TRAIN = ["train", "--config", "train.yaml", "--data", "shards", "--out", "new.pt"]
INFER = ["train", "--infer", "--model", "model.pt", "--data", "shards/shard-00000.h5"]


Prepare = Callable[[Path], None]


@dataclass(frozen=True)
class Case:
    """One misuse: ``argv`` for ``xrayflow``, the message pattern, an optional set-up."""

    id: str
    argv: list[str]
    match: str
    prepare: Prepare | None = None

    def param(self):
        return pytest.param(self, id=self.id)


def replace_arg(argv: list[str], flag: str, value: str) -> list[str]:
    """``argv`` with the value after ``flag`` replaced (or ``flag value`` appended)."""
    out = list(argv)
    if flag in out:
        out[out.index(flag) + 1] = value
    else:
        out += [flag, value]
    return out


def with_set(argv: list[str], *settings: str) -> list[str]:
    """``argv`` with ``--set KEY=VALUE`` for each setting."""
    out = list(argv)
    for s in settings:
        out += ["--set", s]
    return out


# ----------------------------------------------------------------- prepare factories
def write_file(name: str, content: str | bytes) -> Prepare:
    """prepare: file ``name`` holds ``content`` (a str is written as UTF-8)."""

    def prepare(ws: Path) -> None:
        (ws / name).write_bytes(content.encode() if isinstance(content, str) else content)

    return prepare


def append_text(name: str, text: str) -> Prepare:
    """prepare: ``text`` appended to file ``name`` (e.g. a duplicate key in a config)."""

    def prepare(ws: Path) -> None:
        p = ws / name
        p.write_text(p.read_text() + text)

    return prepare


def random_bytes(name: str, n: int = 4096, seed: int = 0) -> Prepare:
    """prepare: file ``name`` holds ``n`` random bytes (reproducible from ``seed``)."""
    return lambda ws: (ws / name).write_bytes(np.random.default_rng(seed).bytes(n))


def truncated(src: str, dst: str | None = None, fraction: float = 0.5) -> Prepare:
    """prepare: the first ``fraction`` of file ``src`` written to ``dst`` (default: in place)."""

    def prepare(ws: Path) -> None:
        data = (ws / src).read_bytes()
        (ws / (dst or src)).write_bytes(data[: int(len(data) * fraction)])

    return prepare


def copy_file(src: str, dst: str) -> Prepare:
    """prepare: file ``dst`` is a copy of ``src``."""
    return lambda ws: shutil.copy(ws / src, ws / dst)


def symlink(name: str, target: str, *, absolute: bool = True) -> Prepare:
    """prepare: ``name`` is a symlink to ``target``; the link holds the absolute path of
    ``target`` in the workspace, or with ``absolute=False`` the relative text ``target``."""
    return lambda ws: os.symlink(ws / target if absolute else target, ws / name)


def hardlink(name: str, target: str) -> Prepare:
    """prepare: ``name`` is a second hard link to the file ``target``."""
    return lambda ws: os.link(ws / target, ws / name)


def make_dir(name: str) -> Prepare:
    """prepare: an empty folder ``name`` (and any missing parents)."""
    return lambda ws: (ws / name).mkdir(parents=True)


def chain(*prepares: Prepare) -> Prepare:
    """prepare: each of ``prepares`` in turn."""

    def prepare(ws: Path) -> None:
        for p in prepares:
            p(ws)

    return prepare


def edit_hdf5(
    name: str, edit: Callable[[h5py.File], None], *, copy_of: str | None = None
) -> Prepare:
    """prepare: ``edit(f)`` on HDF5 file ``name`` opened for writing; with ``copy_of``,
    ``name`` is first made a copy of that file (so the original input stays valid)."""

    def prepare(ws: Path) -> None:
        if copy_of is not None:
            shutil.copy(ws / copy_of, ws / name)
        with h5py.File(ws / name, "a") as f:
            edit(f)

    return prepare


def replace_dataset(
    name: str, path: str, fn, *, copy_of: str | None = None, keep_chunks: bool = False
) -> Prepare:
    """prepare: dataset ``path`` of HDF5 file ``name`` replaced by ``fn(its values)`` (any
    dtype or shape); ``keep_chunks`` keeps the old chunk shape; ``copy_of`` as in
    :func:`edit_hdf5`."""

    def edit(f: h5py.File) -> None:
        data, chunks = f[path][()], f[path].chunks  # no handle stays open over the delete
        del f[path]
        f.create_dataset(path, data=fn(data), chunks=chunks if keep_chunks else None)

    return edit_hdf5(name, edit, copy_of=copy_of)


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file (``<dir>``/``<link>`` for folders/links)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "<link>" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "<dir>"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run_case(case: Case, pristine: Path, tmp_path: Path) -> str:
    """Run ``case`` in a copy of ``pristine``; assert the promises; return stderr."""
    ws = tmp_path / "ws"
    shutil.copytree(pristine, ws, symlinks=True)
    if case.prepare is not None:
        case.prepare(ws)
    before = snapshot(ws)
    argv = [a.format(ws=ws) for a in case.argv]
    err, out = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(ws)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc = main(argv)
    finally:
        os.chdir(cwd)
    msg = err.getvalue()
    assert "Traceback" not in msg, msg
    assert rc == 2, f"exit {rc}, expected 2; stderr: {msg!r}; stdout: {out.getvalue()[-500:]!r}"
    assert re.search(case.match, msg, re.IGNORECASE | re.DOTALL), (
        f"message does not match {case.match!r}: {msg!r}"
    )
    after = snapshot(ws)
    new = sorted(set(after) - set(before))
    assert not new, f"new files after a refused run: {new}"
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert not changed, f"inputs changed or removed: {changed}"
    return msg
