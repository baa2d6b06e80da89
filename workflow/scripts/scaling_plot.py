"""Strong- and weak-scaling plots and table from Snakemake benchmark files.

Benchmarks time the launcher process (mpiexec/srun), i.e. the wall time of the whole MPI job;
GPU kernels and remote ranks are included in that wall time but not in the RSS columns.
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tables import read_benchmark

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive


def scaling_table(points, benchmarks):
    rows = []
    for (series, ranks, size), bench in zip(points, benchmarks, strict=True):
        row = {"series": series, "ranks": int(ranks), "size": int(size)}
        row.update(read_benchmark(bench))
        rows.append(row)
    table = pd.DataFrame(rows).sort_values(["series", "ranks"]).reset_index(drop=True)
    table["speedup"] = float("nan")
    table["efficiency"] = float("nan")
    for series, part in table.groupby("series"):
        base = part.iloc[0]
        t_ratio = base["runtime_s"] / part["runtime_s"]
        if series == "strong":
            speedup = t_ratio * base["ranks"]
            efficiency = speedup / part["ranks"]
        else:  # weak: ideal time is constant
            speedup = t_ratio * part["ranks"]  # scaled speedup (Gustafson)
            efficiency = t_ratio
        table.loc[part.index, "speedup"] = speedup
        table.loc[part.index, "efficiency"] = efficiency
    return table


def plot(table, series, path):
    part = table[table["series"] == series]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), constrained_layout=True)
    ranks = part["ranks"].to_numpy()
    axes[0].plot(ranks, part["runtime_s"], "o-", label="measured")
    if len(part):
        t0, n0 = part["runtime_s"].iloc[0], ranks[0]
        ideal = t0 * n0 / ranks if series == "strong" else [t0] * len(ranks)
        axes[0].plot(ranks, ideal, "k--", label="ideal")
    axes[0].set(xlabel="MPI ranks", ylabel="wall time (s)", xscale="log", title=series)
    axes[0].legend()
    axes[1].plot(ranks, part["efficiency"], "o-")
    axes[1].axhline(1.0, color="k", ls="--")
    axes[1].set(xlabel="MPI ranks", ylabel="parallel efficiency", xscale="log", ylim=(0, 1.2))
    fig.suptitle(f"{series} scaling of reconstruct")
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    with open(snakemake.log[0], "w") as log:
        table = scaling_table(snakemake.params.points, snakemake.input.benchmarks)
        table.to_csv(snakemake.output.table, sep="\t", index=False)
        plot(table, "strong", snakemake.output.strong)
        plot(table, "weak", snakemake.output.weak)
        print(table.to_string(), file=log)
