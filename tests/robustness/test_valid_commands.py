"""The table's starting point: every stage's unchanged command succeeds in the workspace, so
each refused case is refused for the one thing it changes."""

from __future__ import annotations

import contextlib
import io
import os
import shutil

import pytest
from robust_harness import EVAL, GEN, INFER, RECON, SIM, TRAIN, snapshot

from xrayflow.cli import main

VALID = {
    "simulate": (SIM, "new.cxi"),
    "reconstruct": (RECON, "new.h5"),
    "evaluate": (EVAL, "new.json"),
    "generate": (GEN, "newshards"),
    "train": (TRAIN, {"new.pt", "new.pt.metrics.jsonl"}),  # + its training log
    "infer": ([*INFER, "--out", "pred.h5"], "pred.h5"),
}


@pytest.mark.parametrize("stage", list(VALID))
def test_unchanged_command_succeeds_and_writes_only_its_output(stage, pristine, tmp_path):
    argv, out = VALID[stage]
    ws = tmp_path / "ws"
    shutil.copytree(pristine, ws)
    before = snapshot(ws)
    cwd = os.getcwd()
    os.chdir(ws)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(argv)
    finally:
        os.chdir(cwd)
    assert rc == 0, err.getvalue()
    after = snapshot(ws)
    assert {k: v for k, v in after.items() if k in before} == before
    new = {k.split("/")[0] for k in set(after) - set(before)}
    assert new == ({out} if isinstance(out, str) else out), new
