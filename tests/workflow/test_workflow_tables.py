"""The summary tables (workflow/scripts/_tables.py): results only, a readable HTML page."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parents[2] / "workflow" / "scripts"))
from _tables import read_metrics, write_tables


def test_settings_are_not_results(tmp_path):
    m = {
        "nrmse": 0.1,
        "phase": {"ssim": 0.9},
        "config": {"crop_px": 2},
        "provenance": {"seed": 0, "config": {"crop_px": 2}},
        "result": "r.h5",
    }
    (tmp_path / "m.json").write_text(json.dumps(m))
    assert read_metrics(tmp_path / "m.json") == {"nrmse": 0.1, "phase.ssim": 0.9}


def test_html_shows_the_key_columns_and_the_tsv_all(tmp_path):
    frame = pd.DataFrame(
        [{"dataset": "a", "ranks": 2, "runtime_s": 3.0, "nrmse": 0.1, "frc.curve_0": 0.5}]
    )
    write_tables(frame, tmp_path / "s.tsv", tmp_path / "s.html", "t")
    assert list(pd.read_csv(tmp_path / "s.tsv", sep="\t").columns) == list(frame.columns)
    html = (tmp_path / "s.html").read_text()
    assert "nrmse" in html and "frc.curve_0" not in html
    assert "4 of 5 columns; all of them in s.tsv" in html
