"""Demo summary: one row per dataset with its metrics and reconstruction run time."""

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tables import read_benchmark, read_metrics, write_tables

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive

with open(snakemake.log[0], "w") as log:
    rows = []
    for name, ranks, metrics, bench in zip(
        snakemake.params.names,
        snakemake.params.ranks,
        snakemake.input.metrics,
        snakemake.input.benchmarks,
        strict=True,
    ):
        row = {"dataset": name, "ranks": ranks}
        row.update(read_benchmark(bench))
        row.update(read_metrics(metrics))
        rows.append(row)
        print(f"{name}: {len(row)} columns", file=log)
    for name, info in zip(snakemake.params.simulated_only, snakemake.input.info, strict=True):
        rows.append({"dataset": name, "ranks": 0, "note": f"simulated only ({info})"})
    write_tables(
        pd.DataFrame(rows),
        snakemake.output.table,
        snakemake.output.html,
        "xrayflow demo summary",
    )
