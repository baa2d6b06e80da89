"""``xrayflow evaluate --result R`` without a truth or a pair: the quick-look."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xrayflow.cli import main
from xrayflow.io.hdf5 import write_h5

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> Path:
    """A small 2D ptychography reconstruction (simulate + 10 iterations)."""
    tmp = tmp_path_factory.mktemp("ql")
    data, out = tmp / "d.cxi", tmp / "r.h5"
    sets = ["--set", "scan.n_y=4", "--set", "scan.n_x=4", "--set", "geometry.shape=[32,32]"]
    sim = str(ROOT / "config/simulate/ptycho2d.yaml")
    assert main(["simulate", "-c", sim, "-o", str(data), *sets]) == 0
    rec = str(ROOT / "config/reconstruct/ptycho2d.yaml")
    args = ["reconstruct", "-c", rec, "-d", str(data), "-o", str(out)]
    assert main([*args, "--set", "optimizer.iterations=10"]) == 0
    return out


def test_quicklook_of_a_result_alone(result, tmp_path, capsys):
    out, figs = tmp_path / "m.json", tmp_path / "figs"
    assert (
        main(["evaluate", "--result", str(result), "--out", str(out), "--figures", str(figs)]) == 0
    )
    m = json.loads(out.read_text())
    assert m["mode"] == "quicklook" and m["kind"] == "image"
    lam = 12398.42e-10 / 8000  # m at 8 keV
    assert m["pixel_size_m"] == pytest.approx(lam * 2.0 / (32 * 75e-6), rel=1e-4)  # lam z/(N p)
    assert m["field_of_view_m"] == pytest.approx([n * m["pixel_size_m"] for n in m["shape"][-2:]])
    assert m["loss"]["loss"]["n"] == 10 and m["loss"]["loss"]["final"] > 0
    assert m["probe"]["modes"] == 1 and m["probe"]["power_fraction"] == [1.0]
    assert m["scan"]["positions"] == 16 and min(m["scan"]["extent_px"]) == pytest.approx(
        0.9e-6 / m["pixel_size_m"], abs=0.2
    )
    assert 0 < m["illuminated_fraction_of_grid"] < 1
    assert m["phase"]["max"] > m["phase"]["min"]
    assert [p.name for p in figs.iterdir()] == ["quicklook.png"]
    assert "quick-look" in capsys.readouterr().out


def test_quicklook_of_a_volume_without_scan(tmp_path):
    """A 3D density (Bragg CDI-like result: no probe, no positions): central slices."""
    z = np.zeros((16, 12, 10), np.complex64)
    z[5:11, 4:8, 3:7] = np.exp(0.3j)
    res = write_h5(tmp_path / "v.h5", {"object": z, "loss": [2.0, 1.0]}, attrs={"units": "pixels"})
    out, figs = tmp_path / "m.json", tmp_path / "figs"
    assert main(["evaluate", "--result", str(res), "--out", str(out), "--figures", str(figs)]) == 0
    m = json.loads(out.read_text())
    assert m["kind"] == "volume" and m["pixel_size_m"] is None and m["field_of_view_m"] is None
    assert "probe" not in m and "scan" not in m
    assert (figs / "quicklook.png").stat().st_size > 0


def test_quicklook_of_a_missing_file_is_an_error(tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["evaluate", "--result", str(tmp_path / "nope.h5"), "--out", str(out)]) == 2
    assert "nope.h5" in capsys.readouterr().err and not out.exists()
