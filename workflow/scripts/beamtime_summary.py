"""Beamtime summary: one row per scan.

``summary.tsv`` has every column: the scan-sheet cells, the run time of the reconstruction,
the quick-look numbers (``quicklook.*``), the FRC between the even/odd halves (``halves.*``
and the ``frc_*`` columns) and, for scans evaluated against a truth, the metrics (unprefixed,
as in the demo summary). ``summary.html`` shows per scan the key numbers, a thumbnail of the
quick-look (embedded, so the page works inside the Snakemake report too) and links to the
result, the quick-look, the FRC and truth figures (relative to the page).
"""

import base64
import html
import io
import json
import math
import os
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tables import TABLE_STYLE, read_benchmark, read_metrics

#: Width of the quick-look thumbnails, px.
THUMB_WIDTH = 480


def read_json(path):
    path = Path(path)
    if not path.exists():
        return {}
    with open(path) as handle:
        return json.load(handle)


def loss_numbers(look):
    """Final loss and iterations of the quick-look's loss history (the `loss` term, else the
    first one)."""
    losses = look.get("loss") or {}
    if not losses:
        return {}
    term = losses.get("loss") or next(iter(losses.values()))
    return {"final_loss": term.get("final"), "iterations": term.get("n")}


def frc_numbers(pair):
    """The halves' FRC at its primary threshold: half-period resolution (m and px), the
    threshold, and whether the curve crossed it (not crossed: the resolution is a bound at
    the grid's limit) and resolved anything (False: below the threshold from the first ring)."""
    frc = pair.get("frc") or {}
    primary = frc.get("primary")
    best = (frc.get("resolution") or {}).get(primary)
    if not best:
        return {}
    resolved = best.get("resolved", True) is not False
    return {
        "frc_threshold": primary,
        "frc_resolution_m": best.get("half_period_m") if resolved else None,
        "frc_resolution_px": best.get("half_period_px") if resolved else None,
        "frc_crossed": bool(best.get("crossed")),
        "frc_resolved": resolved,
    }


def prefixed(prefix, values):
    return {f"{prefix}.{k}": v for k, v in values.items()}


def thumbnail(png, log):
    """``data:`` URI of a THUMB_WIDTH px wide copy of the PNG ``png``; None (and a line in
    ``log``) when it is missing or unreadable: the summary lists the scan anyway."""
    png = Path(png)
    if not png.exists():
        return None
    from matplotlib.figure import Figure
    from matplotlib.image import imread

    try:
        image = imread(png)
    except (OSError, ValueError, SyntaxError) as exc:  # PIL: SyntaxError for broken PNGs
        print(f"no thumbnail of {png}: {exc}", file=log)
        return None
    rows, cols = image.shape[:2]
    width = min(cols, THUMB_WIDTH)
    fig = Figure(figsize=(width / 100, max(1, round(rows * width / cols)) / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1), frameon=False, xticks=[], yticks=[])
    ax.imshow(image, aspect="auto", interpolation="antialiased", cmap="gray")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def number(value, fmt="{:.4g}"):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return fmt.format(value)


def resolution_text(row):
    """The FRC column of the page: '1.6e-07 m (2.5 px)'; a bound '≤ ...' when the curve never
    crossed the threshold; 'not resolved'."""
    if "frc_threshold" not in row:
        return ""
    if not row["frc_resolved"]:
        return "not resolved"
    metres, px = row.get("frc_resolution_m"), row.get("frc_resolution_px")
    text = f"{number(metres, '{:.3g}')} m ({number(px, '{:.3g}')} px)"
    if metres is None:
        text = f"{number(px, '{:.3g}')} px"
    return text if row["frc_crossed"] else f"≤ {text}, not crossed"


def link(label, target, page_dir, content=None):
    """An anchor to ``target`` relative to the page's folder; ``content`` is raw HTML."""
    href = html.escape(os.path.relpath(target, page_dir), quote=True)
    return f"<a href='{href}'>{content or html.escape(label)}</a>"


def page(rows, links, thumbs, html_path, tsv_name, title, halves):
    page_dir = Path(html_path).parent
    head = ["quick-look", "scan", "iterations", "final loss", "reconstruction time (s)"]
    head += ["FRC resolution (halves)"] if halves else []
    head += ["NRMSE", "phase SSIM", "comment", "files"]
    lines = ["<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for row, files, thumb in zip(rows, links, thumbs, strict=True):
        img = ""
        if thumb:
            img = f"<img src='{thumb}' width='{THUMB_WIDTH}' alt='quick-look of {row['scan']}'>"
            img = link("", files["quick-look"], page_dir, content=img)
        cells = [
            img,
            html.escape(row["scan"]),
            number(row.get("iterations"), "{:.0f}"),
            number(row.get("final_loss")),
            number(row.get("runtime_s"), "{:.1f}"),
        ]
        cells += [html.escape(resolution_text(row))] if halves else []
        cells += [
            number(row.get("nrmse")),
            number(row.get("phase.ssim")),
            html.escape(str(row.get("comment", ""))),
            " ".join(link(k, v, page_dir) for k, v in files.items()),
        ]
        lines.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    style = TABLE_STYLE + "td{vertical-align:middle}td a{margin-right:.5em}"
    frc_note = (
        "FRC resolution: half-period at the primary threshold of the Fourier ring correlation "
        "between the reconstructions of the even and of the odd frames (≤: the curve stays "
        "above the threshold up to the grid's limit). "
        if halves
        else ""
    )
    Path(html_path).write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{style}</style></head><body><h1>{title}</h1><table>{''.join(lines)}</table>"
        f"<p>{frc_note}NRMSE and phase SSIM: against the ground truth, for scans with "
        f"<code>evaluate: true</code>. Every column: {html.escape(tsv_name)}.</p>"
        "</body></html>\n"
    )


def main(snakemake):
    inp, params = snakemake.input, snakemake.params
    names = [scan["scan"] for scan in params.scans]
    by_scan = {
        "recon": dict(zip(names, inp.recon, strict=True)),
        "bench": dict(zip(names, inp.benchmarks, strict=True)),
        "look": dict(zip(names, inp.looks, strict=True)),
        "look_figures": dict(zip(names, inp.look_figures, strict=True)),
        "frc": dict(zip(names if params.halves else [], inp.frc, strict=True)),
        "metrics": dict(zip(params.evaluated, inp.metrics, strict=True)),
        "figures": dict(zip(params.evaluated, inp.figures, strict=True)),
    }
    rows, links, thumbs = [], [], []
    with open(snakemake.log[0], "w") as log:
        for scan in params.scans:
            name = scan["scan"]
            row = dict(scan)
            row["reconstruction"] = by_scan["recon"][name]
            row.update(read_benchmark(by_scan["bench"][name]))
            look = read_json(by_scan["look"][name])
            row.update(loss_numbers(look))
            look_numbers = read_metrics(by_scan["look"][name])  # loss: final_loss, iterations
            row.update(
                prefixed("quicklook", {k: v for k, v in look_numbers.items() if "loss." not in k})
            )
            files = {
                "result": by_scan["recon"][name],
                "quick-look": str(Path(by_scan["look_figures"][name]) / "quicklook.png"),
            }
            if name in by_scan["frc"]:
                frc_json = by_scan["frc"][name]
                row.update(frc_numbers(read_json(frc_json)))
                row.update(prefixed("halves", read_metrics(frc_json)))
                files["FRC"] = str(Path(frc_json).with_suffix("") / "frc.png")
            if name in by_scan["metrics"]:
                metrics = by_scan["metrics"][name]
                row.update(read_metrics(metrics))
                files["vs truth"] = by_scan["figures"][name]
            row["quicklook_figure"] = files["quick-look"]
            thumbs.append(thumbnail(files["quick-look"], log))
            files = {k: v for k, v in files.items() if k == "result" or Path(v).exists()}
            rows.append(row)
            links.append(files)
            print(f"{name}: {len(row)} columns, FRC {resolution_text(row) or 'n/a'}", file=log)
        title = f"xrayflow beamtime summary ({len(rows)} scans)"
        pd.DataFrame(rows).to_csv(snakemake.output.table, sep="\t", index=False, na_rep="")
        page(
            rows,
            links,
            thumbs,
            snakemake.output.html,
            Path(snakemake.output.table).name,
            title,
            params.halves,
        )


if "snakemake" in globals():  # run by Snakemake's script directive
    main(globals()["snakemake"])
