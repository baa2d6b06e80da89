"""End-to-end demo with the real stages: simulate -> reconstruct (2 MPI ranks) -> train ->
evaluate -> summary -> HTML report, on 2 cores with profiles/local (the `make demo` command).

Skipped until the stage CLIs (`xrayflow simulate|reconstruct|train|evaluate`) and the stage
config files named in config/config.yaml exist. Budget: <= 3 minutes on 2 cores.
"""

import json
import time

import pandas as pd
import pytest
from wfhelpers import make_workdir, profile, snakemake, stages_available

AVAILABLE, REASON = stages_available()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.mpi,
    pytest.mark.skipif(not AVAILABLE, reason=REASON),
]


def test_demo_end_to_end(tmp_path):
    workdir = make_workdir(tmp_path / "wd", placeholders=False)
    start = time.monotonic()
    snakemake(
        workdir,
        "--cores",
        "2",
        "--workflow-profile",
        profile("local"),
        timeout=600,
        check=True,
    )
    elapsed = time.monotonic() - start
    res = workdir / "results"
    summary = pd.read_csv(res / "summary.tsv", sep="\t")
    assert list(summary["dataset"]) == ["multislice_ptycho", "bragg_cdi"]
    for name in ["multislice_ptycho"]:
        metrics = json.loads((res / "metrics" / f"{name}.json").read_text())
        assert metrics, name
        assert any((res / "figures" / name).glob("*.png")), name
    assert (res / "train" / "model.pt").stat().st_size > 0
    assert (res / "train" / "predictions.h5").exists()
    assert (res / "provenance" / "workflow.yaml").exists()
    assert elapsed < 180, f"demo took {elapsed:.0f} s (budget 180 s on 2 cores)"
    # second invocation: nothing left to do
    proc = snakemake(workdir, "-n", "--workflow-profile", profile("local"), check=True)
    assert "Nothing to be done" in proc.stdout + proc.stderr
    snakemake(
        workdir,
        "--workflow-profile",
        profile("local"),
        "--report",
        str(workdir / "report.html"),
        check=True,
    )
    assert (workdir / "report.html").stat().st_size > 10_000
