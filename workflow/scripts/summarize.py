"""Demo summary: one row per dataset with its metrics and reconstruction run time.

The TSV has every numeric metric; the HTML page is a readable table of the few numbers
that matter per dataset (:func:`key_row`)."""

import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tables import finite, read_benchmark, read_metrics, write_tables

#: Headers of the HTML summary, in order.
KEY_HEADERS = (
    "dataset",
    "kind",
    "MPI ranks",
    "reconstruction time (s)",
    "NRMSE",
    "amplitude / β SSIM",
    "phase / δ SSIM",
    "phase RMSE (rad)",
    "resolution (half-period)",
    "FRC threshold",
    "final loss",
    "iterations",
)


def resolution_text(frc):
    """The half-period resolution at the primary threshold of a metrics `frc` block, in nm
    (px without a pixel size); '≤ …' when the curve never crosses (Nyquist bound)."""
    block = (frc or {}).get("resolution", {}).get(frc.get("primary") if frc else None)
    if not block:
        return ""
    if block.get("resolved") is False:
        return "not resolved"
    metres, px = block.get("half_period_m"), block.get("half_period_px")
    text = f"{metres * 1e9:.3g} nm" if finite(metres) else (f"{px:.3g} px" if finite(px) else "")
    return text if block.get("crossed") else f"≤ {text} (not crossed)"


def key_row(name, ranks, metrics_path, bench):
    """The readable summary row of one reconstructed dataset."""
    m = json.loads(Path(metrics_path).read_text()) if Path(metrics_path).exists() else {}
    loss = next(iter((m.get("loss") or {}).values()), {})
    main = "delta" if m.get("kind") == "refractive" else "phase"
    return {
        "dataset": name,
        "kind": m.get("kind", ""),
        "MPI ranks": ranks,
        "reconstruction time (s)": bench.get("runtime_s"),
        "NRMSE": m.get("nrmse"),
        "amplitude / β SSIM": (m.get("amplitude") or m.get("beta") or {}).get("ssim"),
        "phase / δ SSIM": (m.get(main) or {}).get("ssim"),
        "phase RMSE (rad)": (m.get("phase") or {}).get("rmse_rad"),
        "resolution (half-period)": resolution_text(m.get("frc")),
        "FRC threshold": (m.get("frc") or {}).get("primary", ""),
        "final loss": loss.get("final"),
        "iterations": loss.get("n"),
    }


def main(snakemake):
    with open(snakemake.log[0], "w") as log:
        rows, keys = [], []
        for name, ranks, metrics, bench_path in zip(
            snakemake.params.names,
            snakemake.params.ranks,
            snakemake.input.metrics,
            snakemake.input.benchmarks,
            strict=True,
        ):
            bench = read_benchmark(bench_path)
            row = {"dataset": name, "ranks": ranks, **bench, **read_metrics(metrics)}
            rows.append(row)
            keys.append(key_row(name, ranks, metrics, bench))
            print(f"{name}: {len(row)} columns", file=log)
        for name, info in zip(snakemake.params.simulated_only, snakemake.input.info, strict=True):
            rows.append({"dataset": name, "ranks": 0, "note": f"simulated only ({info})"})
            keys.append({"dataset": name, "kind": f"simulated only (see {Path(info).name})"})
        write_tables(
            pd.DataFrame(rows),
            snakemake.output.table,
            snakemake.output.html,
            "xrayflow demo summary",
            html_frame=pd.DataFrame(keys, columns=list(KEY_HEADERS)),
        )


if "snakemake" in globals():
    main(globals()["snakemake"])
