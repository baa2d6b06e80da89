"""Networks summary: one row per study and network with its held-out scores."""

import json
import sys
from pathlib import Path

import pandas as pd

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive

#: Scalar scores of each kind of evaluation, as they appear in the table.
SCORES = {
    "tags": ("map", "map_micro", "n_samples"),
    "encoding": ("r2", "mae", "r2_images", "n_samples"),
}

with open(snakemake.log[0], "w") as log:
    rows = []
    for run, path in zip(snakemake.params.runs, snakemake.input, strict=True):
        study, variant = run.split("/", 1)
        metrics = json.loads(Path(path).read_text())
        row = {"study": study, "network": variant, "kind": metrics.get("kind")}
        row.update({k: metrics.get(k) for k in SCORES.get(metrics.get("kind"), ())})
        rows.append(row)
        print(f"{run}: {row}", file=log)
    table = pd.DataFrame(rows)
    table.to_csv(snakemake.output[0], sep="\t", index=False, float_format="%.4g")
    print(table.to_string(index=False), file=sys.stderr)
