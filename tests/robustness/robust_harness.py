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
(a corrupted copy, a symlink, a config with a bad value) before the snapshot is taken.
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

import pytest

from xrayflow.cli import main

# What the stage is asked to do with valid inputs; cases change one thing.
SIM = ["simulate", "--config", "sim.yaml", "--out", "new.cxi"]
RECON = ["reconstruct", "--config", "recon.yaml", "--data", "data.cxi", "--out", "new.h5"]
EVAL = ["evaluate", "--result", "recon.h5", "--truth", "data.cxi", "--out", "new.json"]
GEN = ["train", "--generate", "--config", "train.yaml", "--out", "newshards"]
TRAIN = ["train", "--config", "train.yaml", "--data", "shards", "--out", "new.pt"]
INFER = ["train", "--infer", "--model", "model.pt", "--data", "shards/shard_00000.h5"]


@dataclass(frozen=True)
class Case:
    """One misuse: ``argv`` for ``xrayflow``, the message pattern, an optional set-up."""

    id: str
    argv: list[str]
    match: str
    prepare: Callable[[Path], None] | None = None

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
