"""The workflow's own logic end to end, locally, with a stand-in `xrayflow` CLI
(tests/workflow/fake_bin/xrayflow): DAG, MPI launch with 2 ranks, summaries, scaling plots,
provenance and the HTML report. Runs in seconds; the real stages are tested in test_demo.py.
"""

import json

import pandas as pd
import yaml
from wfhelpers import run_local


def run(workdir, *args, timeout=300):
    calls = workdir.parent / "calls.jsonl"
    proc = run_local(workdir, *args, calls=calls, timeout=timeout)
    lines = calls.read_text().splitlines() if calls.exists() else []
    return proc, [json.loads(line) for line in lines]


def test_demo_with_fake_cli(workdir):
    _, calls = run(workdir)
    res = workdir / "results"
    recon = [c for c in calls if c["argv"][0] == "reconstruct" and "multislice" in c["argv"][2]]
    assert sorted(c["rank"] for c in recon) == ["0", "1"]  # mpiexec -n 2
    summary = pd.read_csv(res / "summary.tsv", sep="\t")
    assert list(summary["dataset"]) == ["multislice_ptycho", "bragg_cdi"]
    assert {"ranks", "runtime_s", "ssim", "psnr", "frc.resolution_m"} <= set(summary.columns)
    assert (res / "train" / "model.pt").exists()
    assert (res / "train" / "predictions.h5").exists()
    infer = [c for c in calls if "--infer" in c["argv"]]
    assert infer and infer[0]["argv"][infer[0]["argv"].index("--data") + 1].endswith(
        "shard-00000.h5"
    )
    prov = yaml.safe_load((res / "provenance" / "workflow.yaml").read_text())
    assert prov["config"]["datasets"]["multislice_ptycho"]["ranks"] == 2
    assert prov["git_commit"] != "unknown"
    assert "snakemake" in prov["versions"]
    assert list((res / "provenance").glob("run-*.yaml"))  # onstart hook, one per run
    # the report collects figures, tables and provenance
    run(workdir, "--report", str(workdir / "report.html"))
    html = (workdir / "report.html").read_text(errors="replace")
    assert "summary.tsv" in html and "workflow.yaml" in html


def test_beamtime_with_fake_cli(workdir):
    run(workdir, "--configfile", "config/beamtime.yaml")
    table = pd.read_csv(workdir / "results/beamtime/summary.tsv", sep="\t")
    assert list(table["scan"]) == ["scan001", "scan002", "scan003"]
    assert table.loc[table["scan"] == "scan001", "ssim"].item() == 0.9
    assert pd.isna(table.loc[table["scan"] == "scan003", "ssim"].item())  # not evaluated


def test_scaling_with_fake_cli(workdir):
    run(workdir, "--configfile", "config/scaling.yaml")
    table = pd.read_csv(workdir / "results/scaling/scaling.tsv", sep="\t")
    assert sorted(zip(table["series"], table["ranks"], table["size"], strict=True)) == [
        ("strong", 1, 8),
        ("strong", 2, 8),
        ("weak", 1, 4),
        ("weak", 2, 8),
    ]
    assert (table.groupby("series")["efficiency"].first() == 1.0).all()
    for name in ("strong.png", "weak.png"):
        assert (workdir / "results/scaling" / name).read_bytes()[:4] == b"\x89PNG"
