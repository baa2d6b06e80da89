"""workflow/scripts/scaling_plot.py: per-iteration times from the result files, speedup and
efficiency against the smallest rank count, ideal lines and plain-number axes."""

import importlib.util
import io

import h5py
import matplotlib
import numpy as np
import pytest
from wfhelpers import REPO

matplotlib.use("Agg")
import matplotlib.pyplot as plt

SCRIPT = REPO / "workflow" / "scripts" / "scaling_plot.py"
spec = importlib.util.spec_from_file_location("scaling_plot", SCRIPT)
scaling_plot = importlib.util.module_from_spec(spec)
spec.loader.exec_module(scaling_plot)

# (series, ranks, size) -> seconds per iteration (the first iteration is 10x slower)
POINTS = {
    ("strong", 1, 8): 0.8,
    ("strong", 2, 8): 0.5,
    ("strong", 4, 8): 0.25,
    ("weak", 1, 4): 0.4,
    ("weak", 2, 8): 0.5,
    ("weak", 4, 16): 0.8,
}


def write_inputs(tmp_path, timings=True):
    benches, results = [], []
    for (series, n, _size), t in POINTS.items():
        bench = tmp_path / f"{series}-{n}.tsv"
        bench.write_text(f"s\tmax_rss\n{10 * t + 3.0}\t100\n")  # job wall time: + start-up
        result = tmp_path / f"{series}-{n}.h5"
        with h5py.File(result, "w") as handle:
            if timings:
                handle["timings/iteration_s"] = np.array([10 * t] + [t] * 9)
        benches.append(bench)
        results.append(result)
    return list(POINTS), benches, results


def test_table_uses_per_iteration_times(tmp_path):
    points, benches, results = write_inputs(tmp_path)
    table = scaling_plot.scaling_table(points, benches, results).set_index(["series", "ranks"])
    assert table.loc[("strong", 2), "iteration_s"] == pytest.approx(0.5)  # first one left out
    assert table.loc[("strong", 2), "iterations"] == 10
    assert table.loc[("strong", 2), "runtime_s"] == pytest.approx(8.0)  # kept for reference
    assert table.loc[("strong", 4), "speedup"] == pytest.approx(0.8 / 0.25)
    assert table.loc[("strong", 4), "efficiency"] == pytest.approx(0.8 / 0.25 / 4)
    assert table.loc[("weak", 4), "efficiency"] == pytest.approx(0.4 / 0.8)
    assert (table.xs(1, level="ranks")["efficiency"] == 1.0).all()


def test_missing_timings_fall_back_to_wall_time_and_say_so(tmp_path):
    points, benches, results = write_inputs(tmp_path, timings=False)
    log = io.StringIO()
    table = scaling_plot.scaling_table(points, benches, results, log)
    assert "no timings/iteration_s" in log.getvalue()
    assert (table["time_s"] == table["runtime_s"]).all()


def test_plot_has_ideal_lines_and_plain_tick_labels(tmp_path, monkeypatch):
    points, benches, results = write_inputs(tmp_path)
    table = scaling_plot.scaling_table(points, benches, results)
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to inspect it
    scaling_plot.plot(table, "strong", tmp_path / "strong.png")
    assert (tmp_path / "strong.png").read_bytes()[:4] == b"\x89PNG"
    ax_t, ax_e = figures[0].axes
    ideal = next(line for line in ax_t.get_lines() if line.get_label() == "ideal")
    np.testing.assert_allclose(ideal.get_ydata(), [0.8, 0.4, 0.2])
    assert any(line.get_label() == "ideal" for line in ax_e.get_lines())
    assert ax_t.get_ylabel() == "time per iteration (s)"
    figures[0].canvas.draw()
    for ax in (ax_t, ax_e):
        xlabels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert xlabels == ["1", "2", "4"]
    ylabels = [t.get_text() for t in ax_t.get_yticklabels() if t.get_text()]
    assert ylabels and all(label.replace(".", "").isdigit() for label in ylabels), ylabels
