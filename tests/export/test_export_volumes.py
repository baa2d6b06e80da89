"""``xrayflow export`` of 3D results: the cohere results folder of a Bragg CDI result and
VTK images of Bragg CDI and ptycho-tomography volumes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xrayflow.cli import main
from xrayflow.export.cohere import read_results
from xrayflow.io.hdf5 import read_h5
from xrayflow.io.vtk import read_vti


def _export(result, fmt, out) -> None:
    assert main(["export", str(result), "--format", fmt, "-o", str(out)]) == 0


def test_cohere_folder_reads_back(bragg_result, tmp_path):
    res = read_h5(bragg_result)
    out = tmp_path / "results_phasing"
    _export(bragg_result, "cohere", out)
    r = read_results(out)
    obj, support = res["object"], res["support"]
    # cohere's (x, y, z) order: the transpose of xrayflow's (Z, Y, X)
    assert r["image"].dtype == np.complex64 and r["image"].shape == obj.shape[::-1]
    np.testing.assert_array_equal(r["image"], obj.T)
    assert r["support"].dtype == np.int64
    np.testing.assert_array_equal(r["support"], support.T.astype(np.int64))
    assert set(np.unique(r["support"])) <= {0, 1}
    assert r["errors"].dtype == np.float32
    np.testing.assert_allclose(r["errors"], res["loss"], rtol=1e-6)
    assert (out / "errors.txt").read_text().split() and len(
        (out / "errors.txt").read_text().split()
    ) == len(res["loss"])
    assert r["coherence"] is None
    meta = json.loads((out / "xrayflow_export.json").read_text())
    assert meta["axes"] == ["x", "y", "z"] and meta["shape"] == list(obj.shape[::-1])
    assert meta["voxel_size_m"] == pytest.approx([res["voxel_size"]] * 3)
    assert meta["units"] == "metres" and "cohere-core 4.5.4" in meta["layout"]


def test_cohere_reads_the_folder(bragg_result, tmp_path):
    """cohere's own reader (cohere_core.utilities.ga_utils.read_results), when installed."""
    ga = pytest.importorskip("cohere_core.utilities.ga_utils")
    out = tmp_path / "results_phasing"
    _export(bragg_result, "cohere", out)
    image, support, coherence = ga.read_results(str(out))
    res = read_h5(bragg_result)
    np.testing.assert_array_equal(image, res["object"].T)
    np.testing.assert_array_equal(support, res["support"].T)
    assert coherence is None


def test_cohere_folder_is_replaced_only_when_it_is_a_previous_export(bragg_result, tmp_path):
    out = tmp_path / "rp"
    _export(bragg_result, "cohere", out)
    (out / "errors.txt").write_text("stale")
    _export(bragg_result, "cohere", out)  # a previous export is replaced whole
    assert (out / "errors.txt").read_text() != "stale"
    keep = out / "notes.txt"
    keep.write_text("mine")
    before = sorted(p.name for p in out.iterdir())
    assert main(["export", str(bragg_result), "-f", "cohere", "-o", str(out)]) == 2
    assert sorted(p.name for p in out.iterdir()) == before and keep.read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["rp"]  # no temporary folder left


def test_vtk_of_bragg_cdi(bragg_result, tmp_path):
    res = read_h5(bragg_result)
    out = tmp_path / "b.vti"
    _export(bragg_result, "vtk", out)
    arrays, grid = read_vti(out)
    obj = res["object"]
    assert list(arrays) == ["amplitude", "phase", "support", "displacement", "strain"]
    np.testing.assert_array_equal(arrays["amplitude"], np.abs(obj))
    np.testing.assert_array_equal(arrays["phase"], np.angle(obj))
    np.testing.assert_array_equal(arrays["support"], res["support"].astype(np.uint8))
    strain = res["strain"]
    np.testing.assert_array_equal(arrays["displacement"], strain["displacement"])
    np.testing.assert_array_equal(arrays["strain"], strain["strain"])
    v = res["voxel_size"]
    assert grid["spacing"] == pytest.approx((v, v, v))
    assert grid["origin"] == pytest.approx(tuple(-(n // 2) * v for n in obj.shape))


def test_vtk_of_bragg_cdi_is_what_cdi_vtk_writes(bragg_result, tmp_path):
    """The export and the reconstruct stage's cdi.vtk file use one definition of the fields."""
    from xrayflow.io.vtk import density_fields

    res = read_h5(bragg_result)
    out = tmp_path / "b.vti"
    _export(bragg_result, "vtk", out)
    arrays, _ = read_vti(out)
    for name, value in density_fields(res).items():
        np.testing.assert_array_equal(arrays[name], np.asarray(value).astype(arrays[name].dtype))


def test_vtk_of_ptychotomo_delta_beta(tomo_result, tmp_path):
    res = read_h5(tomo_result)
    out = tmp_path / "t.vti"
    _export(tomo_result, "vtk", out)
    arrays, grid = read_vti(out)
    assert list(arrays) == ["delta", "beta"]
    for name in ("delta", "beta"):
        assert arrays[name].dtype == np.float32 and arrays[name].shape == (6, 8, 10)
        np.testing.assert_array_equal(arrays[name], res[name])
    assert grid["spacing"] == pytest.approx((5e-8,) * 3)
    assert grid["origin"] == pytest.approx((-3 * 5e-8, -4 * 5e-8, -5 * 5e-8))


def test_vtk_in_voxel_units_has_unit_spacing(tmp_path):
    from xrayflow.io.hdf5 import write_h5

    z = np.zeros((4, 6, 8), np.complex64)
    z[1:3, 2:4, 3:5] = 1 + 1j
    res = write_h5(
        tmp_path / "v.h5",
        {"object": z, "support": np.abs(z) > 0, "loss": [1.0]},
        attrs={"model": "bragg_cdi", "units": "voxels"},
    )
    out = tmp_path / "v.vti"
    _export(res, "vtk", out)
    arrays, grid = read_vti(out)
    assert grid["spacing"] == (1.0, 1.0, 1.0) and grid["origin"] == (-2.0, -3.0, -4.0)
    assert set(arrays) == {"amplitude", "phase", "support"}
    folder = tmp_path / "c"
    _export(res, "cohere", folder)
    meta = json.loads((folder / "xrayflow_export.json").read_text())
    assert meta["voxel_size_m"] is None and meta["units"] == "voxels"
