"""The HTML report (workflow/scripts/report_check.py): every stage's figures are in it, each
entry with a caption of its own, every figure present; with the stand-in `xrayflow` CLI,
whose evaluate writes the figures the real one writes for a 2D object. The same report is
walked in headless Chromium when one can be started (else that test is skipped and says why).
"""

import base64
import sys
from pathlib import Path

import pytest
from wfhelpers import REPO, make_workdir, run_local

sys.path.insert(0, str(REPO / "workflow" / "scripts"))
import report_check as rc


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    workdir = make_workdir(tmp_path_factory.mktemp("report") / "wd")
    out = workdir / "report.html"
    for args in ((), ("--report", str(out))):
        run_local(workdir, *args, calls=workdir.parent / "calls.jsonl")
    return out


def _names(categories, category):
    return sorted(p for paths in categories[category].values() for p in paths)


def test_every_stage_is_in_the_report_with_its_own_captions(report):
    results, categories = rc.read_report(report)
    assert rc.static_problems(results, categories) == []
    assert set(categories) >= {"Summary", "Evaluation", "Training", "Provenance"}
    assert _names(categories, "Training") == [
        "results/train/figures/predictions.png",
        "results/train/figures/training_curve.png",
    ]
    assert len(_names(categories, "Evaluation")) == 6  # comparison, frc, loss of 2 datasets
    caption = {p: rc.caption_text(r["caption"]) for p, r in results.items()}
    # the FRC caption names what the plot marks: 0.5 quoted against the truth, half-bit drawn
    frc = caption["results/figures/bragg_cdi/frc.png"]
    assert "0.5" in frc and "[primary]" in frc and "half-bit" in frc
    assert "loss history" in caption["results/figures/bragg_cdi/loss.png"]
    assert "predictions against the truth" in caption["results/train/figures/predictions.png"]
    assert "training curve" in caption["results/train/figures/training_curve.png"]
    assert caption["results/summary.html"] != caption["results/summary.tsv"]


def _png_uri(width, height):
    head = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + width.to_bytes(4, "big")
    head += height.to_bytes(4, "big") + b"\x08\x00\x00\x00\x00"
    return "data:image/png;base64," + base64.b64encode(head).decode()


def test_static_check_finds_shared_captions_and_broken_figures():
    good = {"caption": "<p>A</p>", "mime_type": "image/png", "data_uri": _png_uri(4, 3)}
    results = {
        "a.png": good,
        "b.png": {**good, "caption": "<p>A</p>\n"},  # the same text: one caption for two
        "c.png": {**good, "caption": "<p>C</p>", "data_uri": _png_uri(0, 3)},
        "d.png": {**good, "caption": ""},
    }
    categories = {"X": {"Other": ["a.png", "b.png", "c.png", "missing.png"]}}
    problems = rc.static_problems(results, categories)
    assert "one caption for 2 entries: a.png, b.png" in problems
    assert any(p.startswith("c.png: the embedded PNG does not decode") for p in problems)
    assert "d.png: no caption" in problems and "d.png: in no category" in problems
    assert "missing.png: listed in a category but not in the report" in problems
    assert rc.png_size(_png_uri(4, 3)) == (4, 3)
    assert rc.static_problems({"a.png": good}, {"X": {"Other": ["a.png"]}}) == []


@pytest.mark.slow
def test_report_in_headless_chromium(report, tmp_path):
    why = rc.browser_unavailable()
    if why:
        pytest.skip(f"browser check not run: {why}")
    problems, seen = rc.browser_check(report, tmp_path / "shots")
    assert problems == []
    results, _ = rc.read_report(report)
    assert set(seen) == set(results)
    images = [v for p, v in seen.items() if p.endswith(".png")]
    assert len(images) == 8 and all(min(v["natural_size"]) > 0 for v in images)
    assert seen["results/summary.html"]["table_rows"] >= 3  # header + 2 datasets
    assert len({v["caption"] for v in seen.values()}) == len(seen)
    assert all(Path(v["screenshot"]).stat().st_size > 0 for v in seen.values())
