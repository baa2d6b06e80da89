"""Small helpers shared by the summary scripts (Snakemake `script:` helpers only)."""

import json
import math
from pathlib import Path

import pandas as pd


def flatten(tree, prefix=""):
    """Scalar leaves of a nested JSON object as {dotted.key: value} (lists are skipped)."""
    flat = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(tree, bool | int | float | str) or tree is None:
        flat[prefix.rstrip(".")] = tree
    return flat


#: Metrics-JSON branches left out of the tables: the evaluate config and the provenance
#: (its config again) repeat settings, they are not results.
SETTINGS = ("config.", "provenance.")

#: The columns the HTML summary shows (those present, in this order); the TSV has all.
KEY_COLUMNS = (
    "dataset",
    "scan",
    "ranks",
    "runtime_s",
    "max_rss_mb",
    "nrmse",
    "phase.ssim",
    "amplitude.ssim",
    "ssim",
    "psnr",
    "frc.resolution_m",
    "note",
    "comment",
)


def read_metrics(path):
    """Numeric leaves of a metrics JSON (strings such as units or file names, and the
    settings branches :data:`SETTINGS`, are left out)."""
    path = Path(path)
    if not path.exists():
        return {}
    with open(path) as handle:
        flat = flatten(json.load(handle))
    return {
        k: v
        for k, v in flat.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and not k.startswith(SETTINGS)
    }


def read_benchmark(path):
    """Mean wall time (s) and peak RSS (MB) of a Snakemake benchmark TSV."""
    path = Path(path)
    if not path.exists():
        return {}
    table = pd.read_csv(path, sep="\t")
    out = {"runtime_s": float(table["s"].mean())}
    if "max_rss" in table and pd.api.types.is_numeric_dtype(table["max_rss"]):
        out["max_rss_mb"] = float(table["max_rss"].max())
    return out


def write_tables(frame, tsv, html, title, html_frame=None):
    """The whole table as TSV; the HTML page shows ``html_frame`` (a readable table of its
    own: every column of it) or else the :data:`KEY_COLUMNS` present, and points to the
    TSV for the rest."""
    frame.to_csv(tsv, sep="\t", index=False, na_rep="")
    if html_frame is None:
        html_frame = frame[[c for c in KEY_COLUMNS if c in frame.columns]]
    body = html_frame.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}")
    Path(html).write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{TABLE_STYLE}</style></head><body><h1>{title}</h1>{body}<p>"
        f"{html_frame.shape[1]} of {frame.shape[1]} columns; all of them in "
        f"{Path(tsv).name}.</p></body></html>\n"
    )


#: Style of the HTML tables: compact, right-aligned numbers, header row kept readable.
TABLE_STYLE = (
    "body{font-family:sans-serif;margin:1em}"
    "table{border-collapse:collapse}"
    "th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}"
    "th{background:#f0f0f0}"
    "td:first-child,th:first-child{text-align:left}"
)


def finite(value):
    return isinstance(value, int | float) and math.isfinite(value)
