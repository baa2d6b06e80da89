"""Strong- and weak-scaling table and plots of the scaling study.

The time of a point is the median wall time of one iteration of the reconstruction, read from
the result file (`timings/iteration_s`, written by rank 0 after each iteration's reduction, so
the slowest rank sets it), leaving out the first iteration (FFT plans, first allocations).
Start-up, MPI initialisation, reading and writing are not in it; the Snakemake benchmark's
wall time of the whole job is kept in the table as `runtime_s`. If a result file has no
per-iteration timings, every point falls back to that wall time and the log and the axis
label say so.

Speedup and efficiency are relative to the smallest rank count n0 of a series: strong scaling
(fixed size) speedup = n0 t(n0) / t(n), efficiency = speedup / n; weak scaling (size grows with
n) efficiency = t(n0) / t(n). The plots show the ideal lines (t(n0) n0 / n and t(n0); efficiency
1) and plain-number axes.
"""

import sys
from pathlib import Path

import h5py
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tables import read_benchmark

PLAIN = FuncFormatter(lambda value, _pos: f"{value:g}")


def iteration_time(path):
    """(median seconds per iteration without the first, iterations) of a result file, or
    (None, 0) when it holds no per-iteration timings."""
    try:
        with h5py.File(path, "r") as handle:
            times = np.asarray(handle["timings/iteration_s"][()], dtype=float)
    except (OSError, KeyError):
        return None, 0
    steady = times[1:] if times.size > 1 else times
    return (float(np.median(steady)) if steady.size else None), int(times.size)


def scaling_table(points, benchmarks, results, log=sys.stderr):
    rows = []
    for (series, ranks, size), bench, result in zip(points, benchmarks, results, strict=True):
        row = {"series": series, "ranks": int(ranks), "size": int(size)}
        row["iteration_s"], row["iterations"] = iteration_time(result)
        row.update(read_benchmark(bench))
        rows.append(row)
    table = pd.DataFrame(rows).sort_values(["series", "ranks"]).reset_index(drop=True)
    missing = table["iteration_s"].isna()
    if missing.any():
        names = [str(r) for r, m in zip(results, missing, strict=True) if m]
        print(
            f"no timings/iteration_s in {', '.join(names)}: every point uses the benchmark's "
            "wall time of the whole job (runtime_s)",
            file=log,
        )
    table["time_s"] = table["runtime_s"] if missing.any() else table["iteration_s"]
    table["speedup"] = float("nan")
    table["efficiency"] = float("nan")
    for series, part in table.groupby("series"):
        base = part.iloc[0]
        t_ratio = base["time_s"] / part["time_s"]
        if series == "strong":
            speedup = t_ratio * base["ranks"]
            efficiency = speedup / part["ranks"]
        else:  # weak: ideal time is constant
            speedup = t_ratio * part["ranks"]  # scaled speedup (Gustafson)
            efficiency = t_ratio
        table.loc[part.index, "speedup"] = speedup
        table.loc[part.index, "efficiency"] = efficiency
    return table


def rank_axis(ax, ranks):
    """Log2 axis of MPI ranks with a plain tick at every measured rank count."""
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(ranks))
    ax.xaxis.set_major_formatter(PLAIN)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("MPI ranks")


def plot(table, series, path):
    part = table[table["series"] == series]
    per_iteration = bool((part["time_s"] == part["iteration_s"]).all())  # False with NaNs
    label = "time per iteration (s)" if per_iteration else "wall time of the job (s)"
    fig, (ax_t, ax_e) = plt.subplots(1, 2, figsize=(8, 3.2), constrained_layout=True)
    ranks = part["ranks"].to_numpy()
    ax_t.plot(ranks, part["time_s"], "o-", label="measured")
    if len(part):
        t0, n0 = part["time_s"].iloc[0], ranks[0]
        ideal = t0 * n0 / ranks if series == "strong" else np.full(len(ranks), t0)
        ax_t.plot(ranks, ideal, "k--", label="ideal")
    ax_t.set_yscale("log")
    ax_t.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax_t.yaxis.set_major_formatter(PLAIN)
    ax_t.yaxis.set_minor_formatter(NullFormatter())
    ax_t.set(ylabel=label, title=f"{series} scaling")
    ax_t.legend()
    ax_e.plot(ranks, part["efficiency"], "o-", label="measured")
    ax_e.axhline(1.0, color="k", ls="--", label="ideal")
    ax_e.set(ylabel="parallel efficiency", ylim=(0, 1.2))
    ax_e.legend()
    for ax in (ax_t, ax_e):
        rank_axis(ax, ranks)
    fig.suptitle(f"{series} scaling of reconstruct")
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    snakemake = globals()["snakemake"]  # injected by Snakemake's script directive
    with open(snakemake.log[0], "w") as log:
        table = scaling_table(
            snakemake.params.points, snakemake.input.benchmarks, snakemake.input.recon, log
        )
        table.to_csv(snakemake.output.table, sep="\t", index=False)
        plot(table, "strong", snakemake.output.strong)
        plot(table, "weak", snakemake.output.weak)
        print(table.to_string(), file=log)
