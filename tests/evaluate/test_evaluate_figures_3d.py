"""3D results are drawn as three orthogonal central slices with axes in physical units."""

import numpy as np
import pytest

from xrayflow.evaluate.figures import (
    length_unit,
    orthogonal_slices_figure,
    write_figures,
)


def _volume(n=(12, 10, 8)):
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, k) for k in n), indexing="ij")
    amp = (x**2 + y**2 + z**2 < 0.5).astype(float)
    return amp * np.exp(1j * 0.3 * x)


def _labels(fig):
    return [(ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) for ax in fig.axes if ax.get_title()]


def test_slices_have_axes_in_nm_or_voxels():
    vol = np.abs(_volume())
    fig = orthogonal_slices_figure([(vol, "amplitude", "gray", (0, 1))], voxel_size=10e-9)
    labels = _labels(fig)
    assert [lab[:2] for lab in labels] == [
        ("x (nm)", "y (nm)"),
        ("x (nm)", "z (nm)"),
        ("y (nm)", "z (nm)"),
    ]
    assert "(y, x) slice at z = 0" in labels[0][2] and "(z, y) slice at x = 0" in labels[2][2]
    # the x axis of the (y, x) slice spans the 8 voxels of 10 nm about the centre
    ax = fig.axes[0]
    assert ax.get_xlim() == pytest.approx((-45.0, 35.0))
    fig = orthogonal_slices_figure([(vol, "amplitude", "gray", None)], voxel_size=None)
    assert _labels(fig)[1][:2] == ("x (voxels)", "z (voxels)")
    assert "at y = 5" in _labels(fig)[1][2]
    assert length_unit(320e-9) == (1e-9, "nm") and length_unit(3.2e-6) == (1e-6, "µm")


def test_volume_and_refractive_results_get_slice_figures(tmp_path):
    vol = _volume()
    frc = {
        "frequency_cycles_per_px": [0, 0.25, 0.5],
        "curve": [1, 0.8, 0.3],
        "n_per_ring": [1, 8, 16],
        "resolution": {"0.5": {"crossed": True, "half_period_px": 1.5, "fraction_of_nyquist": 0.7}},
        "primary": "0.5",
    }
    arrays = {"est": vol, "ref": vol * 0.9}
    out = write_figures(
        tmp_path / "v", {"kind": "volume", "frc": frc, "pixel_size_m": 5e-8}, arrays
    )
    assert sorted(p.name for p in out) == ["density_slices.png", "frc.png"]
    out = write_figures(tmp_path / "r", {"kind": "refractive", "frc": frc}, arrays)
    assert sorted(p.name for p in out) == ["frc.png", "refractive_slices.png"]
    out = write_figures(
        tmp_path / "i", {"kind": "image", "frc": frc}, {"est": vol[6], "ref": vol[6]}
    )
    assert sorted(p.name for p in out) == ["comparison.png", "frc.png"]
    for p in (tmp_path / "v").iterdir():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
