"""Beamtime summary: one row per scan (sheet columns, run time, metrics when evaluated)."""

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tables import read_benchmark, read_metrics, write_tables

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive

with open(snakemake.log[0], "w") as log:
    metrics = dict(zip(snakemake.params.evaluated, snakemake.input.metrics, strict=True))
    rows = []
    for scan, recon, bench in zip(
        snakemake.params.scans,
        snakemake.input.recon,
        snakemake.input.benchmarks,
        strict=True,
    ):
        row = dict(scan)
        row["reconstruction"] = recon
        row.update(read_benchmark(bench))
        if scan["scan"] in metrics:
            row.update(read_metrics(metrics[scan["scan"]]))
        rows.append(row)
        print(f"{scan['scan']}: done", file=log)
    write_tables(
        pd.DataFrame(rows),
        snakemake.output.table,
        snakemake.output.html,
        f"xrayflow beamtime summary ({len(rows)} scans)",
    )
