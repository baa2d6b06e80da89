"""Misuse of ``xrayflow evaluate`` and ``xrayflow info``: outputs that would destroy an input
or cannot be written, missing, truncated, random or wrong-kind input files, bad options.

Plus what is *not* an error: an FRC below the threshold from the first ring on is reported
("not resolved"), and a failure while publishing leaves neither metrics nor figures.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from robust_harness import (
    EVAL,
    Case,
    Prepare,
    chain,
    copy_file,
    hardlink,
    make_dir,
    random_bytes,
    replace_arg,
    replace_dataset,
    run_case,
    symlink,
    truncated,
    with_set,
    write_file,
)

PAIR = ["evaluate", "--pair", "recon.h5", "recon2.h5", "--out", "new.json"]
INFO = ["info"]
# the tiny workspace's illuminated box (9 x 9 px) is too small to crop: evaluate all of it
EVAL_ALL = with_set(EVAL, "illuminated_fraction=0")


def _first_shard(ws: Path) -> Path:
    return sorted((ws / "shards").glob("*.h5"))[0]


def _corrupt(src: str, dst: str, start: int = 400, size: int = 1000):
    """A copy of ``src`` whose metadata after the superblock (object headers, heaps,
    B-trees) is overwritten with random bytes: it opens, or fails only when walked."""

    def prepare(ws: Path) -> None:
        data = bytearray((ws / src).read_bytes())
        data[start : start + size] = np.random.default_rng(3).bytes(size)
        (ws / dst).write_bytes(bytes(data))

    return prepare


def _shard_as(dst: str):
    def prepare(ws: Path) -> None:
        shutil.copy(_first_shard(ws), ws / dst)

    return prepare


def _edited_recon(dst: str, edit) -> Prepare:
    """A copy of recon.h5 with its ``object`` dataset replaced by ``edit(old)``."""
    return replace_dataset(dst, "object", edit, copy_of="recon.h5")


def _with_nan(a):
    a = np.array(a)
    a.flat[0] = np.nan
    return a


OUT_CASES = [
    Case(
        "out-is-result", replace_arg(EVAL, "--out", "recon.h5"), r"recon\.h5.*overwrite.*--result"
    ),
    Case("out-is-truth", replace_arg(EVAL, "--out", "data.cxi"), r"data\.cxi.*overwrite.*--truth"),
    Case(
        "out-is-config",
        [*replace_arg(EVAL, "--out", "ev.yaml"), "--config", "ev.yaml"],
        r"ev\.yaml.*overwrite.*--config",
        write_file("ev.yaml", b"crop_px: 2\n"),
    ),
    Case(
        "out-hardlink-to-truth",
        replace_arg(EVAL, "--out", "hard.json"),
        r"hard\.json.*overwrite.*data\.cxi",
        hardlink("hard.json", "data.cxi"),
    ),
    Case(
        "out-is-pair-b",
        replace_arg(PAIR, "--out", "recon2.h5"),
        r"recon2\.h5.*overwrite.*--pair B",
        copy_file("recon.h5", "recon2.h5"),
    ),
    Case(
        "out-symlink-to-pair-a",
        replace_arg(PAIR, "--out", "alias.json"),
        r"alias\.json.*overwrite.*recon\.h5",
        chain(copy_file("recon.h5", "recon2.h5"), symlink("alias.json", "recon.h5")),
    ),
    Case(
        "out-dev-null-device", replace_arg(EVAL, "--out", "/dev/null"), r"/dev/null.*not a regular"
    ),
    Case(
        "out-existing-empty-dir",
        replace_arg(EVAL, "--out", "outdir"),
        r"outdir.*is a directory",
        make_dir("outdir"),
    ),
    Case(
        "figures-is-a-file",
        [*EVAL, "--figures", "notes.txt"],
        r"--figures.*notes\.txt.*not a directory",
        write_file("notes.txt", b"my notes\n"),
    ),
    Case(
        "figures-is-an-input",
        [*EVAL, "--figures", "recon.h5"],
        r"--figures.*recon\.h5.*(overwrite|not a directory)",
    ),
    Case(
        "figures-missing-parent",
        [*EVAL, "--figures", "no/such/figs"],
        r"--figures.*no/such.*does not exist",
    ),
    Case(
        "figures-holds-the-inputs",
        [*EVAL, "--figures", "."],
        r"--figures.*overwrite the input",
    ),
    Case("figures-same-as-out", [*EVAL, "--figures", "new.json"], r"same path.*new\.json"),
    Case("figures-empty", [*EVAL, "--figures", ""], r"--figures.*empty"),
]

INPUT_CASES = [
    Case("result-missing", replace_arg(EVAL, "--result", "nope.h5"), r"nope\.h5.*does not exist"),
    Case("truth-missing", replace_arg(EVAL, "--truth", "nope.cxi"), r"nope\.cxi.*does not exist"),
    Case(
        "result-random-bytes",
        replace_arg(EVAL, "--result", "rand.h5"),
        r"result file.*rand\.h5.*not a readable HDF5",
        random_bytes("rand.h5", seed=7),
    ),
    Case(
        "result-empty-file",
        replace_arg(EVAL, "--result", "empty.h5"),
        r"empty\.h5.*not a readable HDF5",
        write_file("empty.h5", b""),
    ),
    Case(
        "result-truncated",
        replace_arg(EVAL, "--result", "half.h5"),
        r"half\.h5.*(not a readable HDF5|cannot be read|truncated)",
        truncated("recon.h5", "half.h5"),
    ),
    Case(
        "truth-truncated",
        replace_arg(EVAL, "--truth", "half.cxi"),
        r"half\.cxi.*(not a readable HDF5|cannot be read|truncated)",
        truncated("data.cxi", "half.cxi", 0.3),
    ),
    Case(
        "result-corrupt-metadata",
        replace_arg(EVAL, "--result", "bad.h5"),
        r"result file.*bad\.h5.*(not a readable HDF5|cannot be read)",
        _corrupt("recon.h5", "bad.h5"),
    ),
    Case(
        "truth-corrupt-metadata",
        replace_arg(EVAL, "--truth", "bad.cxi"),
        r"truth file.*bad\.cxi.*(not a readable HDF5|cannot be read)",
        _corrupt("data.cxi", "bad.cxi"),
    ),
    Case(
        "truth-random-bytes",
        replace_arg(EVAL, "--truth", "rand.cxi"),
        r"truth file.*rand\.cxi.*not a readable HDF5",
        random_bytes("rand.cxi", seed=7),
    ),
    Case(
        "result-is-model",
        replace_arg(EVAL, "--result", "model.pt"),
        r"model\.pt.*not a readable HDF5",
    ),
    Case(
        "result-is-shard",
        replace_arg(EVAL, "--result", "shard.h5"),
        r"shard\.h5.*no object dataset.*looked for",
        _shard_as("shard.h5"),
    ),
    Case(
        "truth-is-shard",
        replace_arg(EVAL, "--truth", "shard.h5"),
        r"truth file.*shard\.h5.*no object dataset",
        _shard_as("shard.h5"),
    ),
    Case("result-is-directory", replace_arg(EVAL, "--result", "shards"), r"shards.*directory"),
    Case(
        "result-has-nan",
        replace_arg(EVAL, "--result", "nan.h5"),
        r"nan\.h5.*NaN",
        _edited_recon("nan.h5", _with_nan),
    ),
    Case(
        "result-text-object",
        replace_arg(EVAL, "--result", "text.h5"),
        r"text\.h5.*(non-numeric|cannot be read)",
        _edited_recon("text.h5", lambda a: np.array(["a", "b"], dtype=object)),
    ),
    Case(
        "result-1d-object",
        replace_arg(EVAL, "--result", "flat.h5"),
        r"flat\.h5.*shape",
        _edited_recon("flat.h5", lambda a: np.ravel(a)),
    ),
    Case(
        "result-wrong-shape",
        replace_arg(EVAL, "--result", "small.h5"),
        r"shape mismatch",
        _edited_recon("small.h5", lambda a: a[..., :20, :20]),
    ),
    Case(
        "pair-b-random",
        PAIR,
        r"recon2\.h5.*not a readable HDF5",
        random_bytes("recon2.h5", seed=7),
    ),
]

OPTION_CASES = [
    Case("pair-and-result", [*PAIR, "--result", "recon.h5"], r"either --pair.*not both"),
    Case("no-inputs", ["evaluate", "--out", "new.json"], r"needs --result"),
    Case("no-out", EVAL[:-2], r"--out.*required"),
    Case("crop-too-large", with_set(EVAL_ALL, "crop_px=1000"), r"cropping.*too little"),
    Case(
        "unknown-primary",
        with_set(EVAL_ALL, "frc.primary=bogus"),
        r"frc\.primary.*unknown FRC threshold 'bogus'",
    ),
    Case(
        "unknown-threshold",
        with_set(EVAL_ALL, "frc.thresholds=[0.5, halfbit]"),
        r"frc\.thresholds\[1\].*halfbit",
    ),
]

INFO_CASES = [
    Case("info-directory", [*INFO, "shards"], r"shards.*is a directory"),
    Case("info-missing", [*INFO, "nope.cxi"], r"nope\.cxi.*does not exist"),
    Case("info-device", [*INFO, "/dev/null"], r"/dev/null.*not a regular file"),
    Case(
        "info-random",
        [*INFO, "rand.h5"],
        r"rand\.h5.*(not a readable HDF5|cannot read)",
        random_bytes("rand.h5", seed=7),
    ),
    Case(
        "info-truncated",
        [*INFO, "half.cxi"],
        r"half\.cxi.*(not a readable HDF5|cannot read|truncated)",
        truncated("data.cxi", "half.cxi", 0.3),
    ),
    Case(
        "info-empty",
        [*INFO, "empty.h5"],
        r"empty\.h5.*(not a readable HDF5|cannot read)",
        write_file("empty.h5", b""),
    ),
    Case(
        "info-corrupt-metadata",
        [*INFO, "bad.cxi"],
        r"bad\.cxi.*(not a readable HDF5|cannot read)",
        _corrupt("data.cxi", "bad.cxi"),
    ),
    Case("info-model", [*INFO, "model.pt"], r"model\.pt.*(not a readable HDF5|cannot read)"),
]

CASES = OUT_CASES + INPUT_CASES + OPTION_CASES + INFO_CASES


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_evaluate_and_info_refuse(case, pristine, tmp_path):
    run_case(case, pristine, tmp_path)


def test_case_count():
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


# ----------------------------------------------------------------------- reported, not errors
def _noise_objects(ws: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for name in ("a.h5", "b.h5"):
        with h5py.File(ws / name, "w") as f:
            f["object"] = np.exp(1j * rng.normal(size=(64, 64))) * rng.uniform(0.5, 1, (64, 64))


def test_frc_below_threshold_from_first_ring_is_reported(tmp_path):
    """Two unrelated noise images: exit 0, "not resolved" in JSON, summary and figure."""
    _noise_objects(tmp_path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "xrayflow.cli",
            "evaluate",
            "--pair",
            "a.h5",
            "b.h5",
            "--out",
            "m.json",
            "--figures",
            "figs",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "not resolved" in proc.stdout
    m = json.loads((tmp_path / "m.json").read_text())
    best = m["frc"]["resolution"][m["frc"]["primary"]]
    assert best["resolved"] is False and "not resolved" in best["note"]
    assert {p.name for p in (tmp_path / "figs").iterdir()} >= {"comparison.png", "frc.png"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5", "b.h5", "figs", "m.json"]


def _cfg():
    from xrayflow.config import load_config

    return load_config({"illuminated_fraction": 0}, "evaluate")


def test_resolved_result_says_so(pristine, tmp_path):
    from xrayflow.evaluate.report import evaluate_files

    m = evaluate_files(pristine / "recon.h5", pristine / "data.cxi", tmp_path / "m.json", _cfg())
    for res in m["frc"]["resolution"].values():
        assert res["resolved"] is (not res["crossed"] or res["frequency"] > 0)


@pytest.mark.parametrize("existing", [False, True], ids=["new-folder", "existing-folder"])
def test_failed_publication_leaves_neither_metrics_nor_figures(
    pristine, tmp_path, monkeypatch, existing
):
    """A failure after the figures are rendered (here: the metrics' rename) leaves no
    metrics.json, no new figures and no temporary; an earlier run's figures are put back."""
    from xrayflow.evaluate import report
    from xrayflow.io import atomic

    figs = tmp_path / "figs"
    if existing:
        figs.mkdir()
        (figs / "frc.png").write_bytes(b"old frc")
        (figs / "loss.png").write_bytes(b"old loss")
    before = {p.name: p.read_bytes() for p in figs.iterdir()} if existing else None

    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("m.json"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        report.evaluate_files(
            pristine / "recon.h5", pristine / "data.cxi", tmp_path / "m.json", _cfg(), figures=figs
        )
    monkeypatch.undo()
    left = sorted(p.name for p in tmp_path.iterdir())
    if existing:
        assert left == ["figs"], left
        assert {p.name: p.read_bytes() for p in figs.iterdir()} == before
    else:
        assert left == [], left


def test_publication_replaces_an_earlier_runs_figures(pristine, tmp_path):
    from xrayflow.evaluate.report import evaluate_files

    figs = tmp_path / "figs"
    figs.mkdir()
    (figs / "loss.png").write_bytes(b"stale loss figure of another run")
    (figs / "mine.txt").write_text("a user's file stays")
    m = evaluate_files(
        pristine / "recon.h5", pristine / "data.cxi", tmp_path / "m.json", _cfg(), figures=figs
    )
    names = {p.name for p in figs.iterdir()}
    assert {"comparison.png", "frc.png", "mine.txt"} <= names
    assert [str(figs / n) for n in sorted(Path(p).name for p in m["figures"])] == sorted(
        m["figures"]
    )
    if "loss.png" in names:
        assert (figs / "loss.png").read_bytes() != b"stale loss figure of another run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figs", "m.json"]
