"""Measured 3D volumes for Bragg CDI (issue 17): the volume readers (npy, npz, TIFF, HDF5,
CXI) and what the reconstruct config says of the values (amplitude or intensity, centred,
mask), optional geometry (voxel units), the shrink-wrap guard on a soft-edged crystal, the
centred result, and ``xrayflow reconstruct`` from a normalised ``.npy`` amplitude."""

from __future__ import annotations

import contextlib
import io

import h5py
import numpy as np
import pytest
import tifffile
from bcdi_util import crystal_config
from scipy import ndimage

from xrayflow.cli import main
from xrayflow.config import load_config
from xrayflow.errors import ConfigError, DataError
from xrayflow.io.cxi import write_cxi
from xrayflow.io.hdf5 import read_h5
from xrayflow.io.volumes import read_mask_file, read_volume_file
from xrayflow.io.vtk import read_vti
from xrayflow.modalities import stage_schema
from xrayflow.modalities.bragg_cdi import settings
from xrayflow.modalities.bragg_cdi.grid import embed
from xrayflow.modalities.bragg_cdi.model import BraggCDIModel
from xrayflow.optics.constants import wavelength
from xrayflow.phantoms import faceted_crystals
from xrayflow.reconstruct.data import load_data
from xrayflow.reconstruct.phase_retrieval import read_volume, reconstruct_file
from xrayflow.simulate import simulate
from xrayflow.solvers.phase_retrieval import centre, oversampling, refine

N = 32


def _config(**sections) -> dict:
    """A validated bragg_cdi reconstruct config with the given sections (partial)."""
    cfg = {"model": {"type": "bragg_cdi"}, **sections}
    return load_config(cfg, stage_schema("reconstruct"), name="reconstruct")


def _crystal(seed: int = 3, n: int = N, photons: float = 1e8):
    """The simulate stage's 3D pattern of a strained faceted crystal (n^3, 9 keV, 1 m,
    55 um pixels; counts, centred) and the true object on the same grid."""
    cfg = crystal_config(n, seed, (0.11, 0.118), photons, strained=True)
    d = simulate(cfg)
    return d, embed(d.truth["object"], d.data.shape)


def _r_factor(obj, amplitude) -> float:
    """Amplitude R-factor of ``obj`` (centred layout) against a centred amplitude volume,
    with the least-squares scale (the data may be normalised)."""
    f = np.abs(np.fft.fftn(obj))
    a = np.fft.ifftshift(amplitude)
    f *= (f * a).sum() / (f * f).sum()
    return float(np.sqrt(((f - a) ** 2).sum() / (a * a).sum()))


@pytest.fixture(scope="module")
def crystal():
    return _crystal()


# ----------------------------------------------------------------------------- readers
def test_every_format_reads_back_the_source(tmp_path):
    vol = np.random.default_rng(0).random((4, 5, 6)).astype(np.float32)
    np.save(tmp_path / "v.npy", vol[None])  # a leading axis of length 1 is dropped
    np.savez(tmp_path / "v.npz", intens=vol, other=vol[:2])
    tifffile.imwrite(tmp_path / "v.tif", vol, photometric="minisblack")
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f.create_dataset("entry/data/data", data=vol).attrs["centred"] = False
    with h5py.File(tmp_path / "v.cxi", "w") as f:
        f.create_dataset("entry_1/data_1/data", data=vol)
    cases = [
        ("v.npy", {}, "npy", None),
        ("v.npz", {"key": "intens"}, "npz", None),
        ("v.tif", {}, "tiff", None),
        ("v.h5", {"key": "/entry/data/data"}, "hdf5", False),
        ("v.cxi", {}, "cxi", True),  # CXI without a centred attribute: centred
    ]
    for name, kw, fmt, centred in cases:
        vf = read_volume_file(tmp_path / name, **kw)
        assert vf.format == fmt and vf.centred is centred, name
        np.testing.assert_array_equal(vf.data, vol, err_msg=name)
        assert vf.geometry == {} and vf.mask is None
    # an explicit format overrides the name; an HDF5 file of the CXI layout under .h5
    (tmp_path / "v.cxi").rename(tmp_path / "c.h5")
    assert read_volume_file(tmp_path / "c.h5").format == "cxi"
    np.testing.assert_array_equal(
        read_volume_file(tmp_path / "v.npz", "npz", "other").data, vol[:2]
    )


def test_cxi_of_the_simulate_stage(tmp_path, crystal):
    d, _ = crystal
    write_cxi(tmp_path / "s.cxi", d)
    vf = read_volume_file(tmp_path / "s.cxi")
    np.testing.assert_array_equal(vf.data, d.data)
    assert vf.format == "cxi" and vf.centred is True and vf.attrs["fft_ndim"] == 3
    assert vf.geometry["energy_ev"] == pytest.approx(9000)
    assert vf.geometry["distance"] == pytest.approx(1.0)
    assert vf.geometry["detector_pixel_size"] == pytest.approx((55e-6, 55e-6))
    vol = read_volume(tmp_path / "s.cxi", _config())
    assert vol.voxel_size == pytest.approx(d.attrs["object_pixel_size"])
    assert vol.units == "metres" and vol.centred
    np.testing.assert_array_equal(vol.counts, d.data)


def test_amplitude_is_squared_and_intensity_kept(tmp_path):
    a = np.random.default_rng(1).random((3, 4, 5))
    a /= a.max()
    np.save(tmp_path / "a.npy", a)
    amp = read_volume(tmp_path / "a.npy", _config(data={"quantity": "amplitude"}))
    inten = read_volume(tmp_path / "a.npy", _config())
    np.testing.assert_allclose(amp.counts, a**2, rtol=1e-6)
    np.testing.assert_allclose(inten.counts, a, rtol=1e-6)
    assert amp.centred and inten.centred  # the default for measured volumes
    assert not read_volume(tmp_path / "a.npy", _config(data={"centred": False})).centred


def test_mask_convention_and_shape(tmp_path):
    a = np.random.default_rng(2).random((4, 4, 4))
    a[0, 1, 2] = np.nan  # a gap: any value where the mask says bad
    a[3, 3, 3] = -1.0
    np.save(tmp_path / "a.npy", a)
    good = np.ones(a.shape, np.uint8)
    good[0, 1, 2] = good[3, 3, 3] = 0
    tifffile.imwrite(tmp_path / "m.tif", good, photometric="minisblack")
    vol = read_volume(tmp_path / "a.npy", _config(data={"mask": str(tmp_path / "m.tif")}))
    np.testing.assert_array_equal(vol.mask, good.astype(bool))
    assert vol.counts[0, 1, 2] == 0 and vol.counts[3, 3, 3] == 0
    # without the mask the bad values are named
    with pytest.raises(DataError, match=r"a\.npy.*NaN/inf or negative.*\(0, 1, 2\)"):
        read_volume(tmp_path / "a.npy", _config())
    np.save(tmp_path / "m_small.npy", good[:3])
    cfg = _config(data={"mask": str(tmp_path / "m_small.npy")})
    with pytest.raises(DataError, match=r"m_small\.npy.*shape \(3, 4, 4\).*\(4, 4, 4\)"):
        read_volume(tmp_path / "a.npy", cfg)
    np.save(tmp_path / "none.npy", np.zeros((4, 4, 4)))
    with pytest.raises(DataError, match=r"none\.npy.*every voxel as bad"):
        read_mask_file(tmp_path / "none.npy", (4, 4, 4))


def test_unknown_keys_and_unreadable_files_are_named(tmp_path):
    vol = np.ones((3, 3, 3), np.float32)
    np.savez(tmp_path / "v.npz", intens=vol)
    with pytest.raises(DataError, match=r"no array 'data' \(data.keys.data\).*\['intens'\]"):
        read_volume(tmp_path / "v.npz", _config())
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f.create_dataset("entry/data/data", data=vol)
    with pytest.raises(DataError, match=r"no dataset '/entry/data/img'.*\['/entry/data/data'\]"):
        read_volume(tmp_path / "v.h5", _config(data={"keys": {"data": "/entry/data/img"}}))
    with pytest.raises(DataError, match="'/entry/data' .* is a group"):
        read_volume(tmp_path / "v.h5", _config(data={"keys": {"data": "/entry/data"}}))
    np.save(tmp_path / "flat.npy", np.ones((8, 8)))
    with pytest.raises(DataError, match=r"flat\.npy.*not a 3D Bragg CDI volume"):
        read_volume(tmp_path / "flat.npy", _config())
    (tmp_path / "v.dat").write_bytes(b"x")
    with pytest.raises(DataError, match=r"v\.dat.*set data.format"):
        read_volume(tmp_path / "v.dat", _config())
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match=r"bad\.npy.*cannot read as a NumPy"):
        read_volume(tmp_path / "bad.npy", _config())


# ----------------------------------------------------------------------------- geometry
def test_geometry_from_the_config_completes_the_file(tmp_path):
    vol = np.ones((8, 16, 16), np.float32)
    with h5py.File(tmp_path / "noenergy.cxi", "w") as f:  # converted by hand: no energy
        f.create_dataset("entry_1/data_1/data", data=vol)
        det = f.create_group("entry_1/instrument_1/detector_1")
        det["distance"] = 2.0
        det["x_pixel_size"] = det["y_pixel_size"] = 75e-6
    assert read_volume(tmp_path / "noenergy.cxi", _config()).voxel_size is None
    cfg = _config(geometry={"energy_ev": 10000})
    vol_m = read_volume(tmp_path / "noenergy.cxi", cfg)
    lam_z = float(wavelength(10000)) * 2.0
    expect = (lam_z / (8 * 75e-6), lam_z / (16 * 75e-6), lam_z / (16 * 75e-6))
    np.testing.assert_allclose(vol_m.voxel_size, expect)
    assert vol_m.units == "metres" and vol_m.geometry["distance"] == 2.0
    # the config overrides what the file records; object_pixel_size directly
    cfg = _config(geometry={"energy_ev": 10000, "distance": 1.0, "detector_pixel_size": 55e-6})
    assert read_volume(tmp_path / "noenergy.cxi", cfg).voxel_size[1] == pytest.approx(
        float(wavelength(10000)) / (16 * 55e-6)
    )
    cfg = _config(geometry={"object_pixel_size": 1e-8})
    assert read_volume(tmp_path / "noenergy.cxi", cfg).voxel_size == 1e-8
    with pytest.raises(ConfigError, match="geometry.energy_ev"):
        read_volume(tmp_path / "noenergy.cxi", _config(geometry={"energy_ev": 9.0}))


# ----------------------------------------------------------------------------- solver
def test_guard_keeps_the_soft_edges_of_a_crystal():
    """A crystal with soft edges and uneven density (as measured) from its own truth and a
    loose support: a fixed threshold of 0.25 cuts it at every shrink-wrap (the support
    collapses, R 25x the noise floor); the guard refuses those shrink-wraps."""
    rng = np.random.default_rng(0)
    ph = faceted_crystals((24, 24, 24), 1.0, 1, rng, radius_range=(5.8, 6.1))
    amp = ndimage.gaussian_filter(ph.support().astype(float), 1.0)
    amp *= 1 - 0.3 * ndimage.uniform_filter(rng.random(amp.shape), 5)
    phase = ndimage.gaussian_filter(rng.standard_normal(amp.shape), 5)
    truth = embed(amp * np.exp(1j * 0.5 * phase / phase.std()), (N, N, N))
    far = np.abs(np.fft.fftn(truth, norm="ortho")) ** 2
    counts = rng.poisson(1e8 * far / far.sum())
    counts = np.fft.fftshift(counts).astype(float)
    floor = _r_factor(truth, np.sqrt(counts))
    crystal = np.abs(truth) > 0.05 * np.abs(truth).max()
    loose = ndimage.binary_dilation(crystal, iterations=3)
    base = {"hio": {"iterations": 0}, "iterations": 100, "shrinkwrap": {"start": 0}}
    res = {}
    for g in (0, 5):
        cfg = settings({**base, "shrinkwrap": {"start": 0, "guard": {"iterations": g}}})
        res[g] = refine(BraggCDIModel(counts), truth, loose, cfg)
    assert res[0]["r_factor"] > 10 * floor and res[0]["support"].sum() < 0.8 * crystal.sum()
    assert res[0]["rejected_shrinkwraps"] == 0 and res[0]["threshold"] == 0.25
    assert res[5]["r_factor"] <= 1.05 * floor, (res[5]["r_factor"], floor)
    assert (res[5]["support"] & crystal).sum() == crystal.sum()
    assert res[5]["rejected_shrinkwraps"] > 0 and res[5]["threshold"] < 0.25


def test_centre_removes_shift_ramp_and_global_phase(crystal):
    _, truth = crystal
    ref, ref_support, info = centre(truth, np.abs(truth) > 0)
    r = np.indices(truth.shape) - (N // 2)
    k = np.array([1.3, -0.4, 0.7])
    moved = np.roll(truth, (5, -3, 7), axis=(0, 1, 2))
    moved = moved * np.exp(2j * np.pi * np.tensordot(k, r, axes=1) / N + 2.1j)
    obj, support, moved_info = centre(moved, np.abs(moved) > 0)
    np.testing.assert_allclose(obj, ref, atol=1e-5 * np.abs(ref).max())
    np.testing.assert_array_equal(support, ref_support)
    np.testing.assert_allclose(moved_info["phase_ramp"], info["phase_ramp"] + k, atol=1e-6)
    np.testing.assert_array_equal(moved_info["shift"], info["shift"] - (5, -3, 7))
    a = np.abs(obj)
    com = [(a * i).sum() / a.sum() for i in np.indices(a.shape)]
    np.testing.assert_allclose(com, N // 2, atol=0.5)
    assert np.angle(obj[support].sum()) == pytest.approx(0, abs=1e-6)
    # crystal of 7-8 voxels in 32: oversampling about 4 per axis
    assert np.all((oversampling(obj) > 3.5) & (oversampling(obj) < 5))


# ----------------------------------------------------------------------------- CLI
def _cli(*argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main([str(a) for a in argv])
    return rc, err.getvalue()


def test_reconstruct_a_normalised_npy_amplitude_without_geometry(tmp_path, crystal):
    """The 3D-CDI-NN case: a .npy amplitude normalised to max 1, no config file, no
    geometry. The result reaches the noise floor (the misfit of the true crystal to the
    noisy data), is centred, has no phase ramp left and is in voxel units."""
    d, truth = crystal
    amp = np.sqrt(d.data.astype(np.float64))
    amp /= amp.max()
    np.save(tmp_path / "gold.npy", amp.astype(np.float32))
    out = tmp_path / "r.h5"
    args = ["--set", "model.type=bragg_cdi", "--set", "data.quantity=amplitude"]
    rc, err = _cli(
        "reconstruct", "-d", tmp_path / "gold.npy", "-o", out, *args, "--set", "cdi.starts=2"
    )
    assert rc == 0, err
    assert "voxel units" in err and "oversampling" in err
    r = read_h5(out)
    with h5py.File(out) as f:
        assert f.attrs["units"] == "voxels" and "voxel_size" not in f
    floor = _r_factor(truth, amp)
    assert r["r_factor"] <= 1.2 * floor, (r["r_factor"], floor)
    # the written object fits the data once its removed phase ramp is put back
    obj = r["object"].astype(np.complex128)
    k = r["phase_ramp"]
    ramp = np.tensordot(k, np.indices(obj.shape) - N // 2, axes=1) / N
    assert _r_factor(obj * np.exp(2j * np.pi * ramp), amp) <= 1.2 * floor
    # centred: centre of mass in the middle, no phase ramp, mean phase 0 in the support
    a = np.abs(obj)
    com = [(a * i).sum() / a.sum() for i in np.indices(a.shape)]
    np.testing.assert_allclose(com, N // 2, atol=1.0)
    inside = a > 0.2 * a.max()
    for axis in range(3):
        pair = inside & np.roll(inside, -1, axis)
        step = np.angle(np.roll(obj, -1, axis) * np.conj(obj))[pair]
        assert abs(step.mean()) < 0.05, (axis, step.mean())  # rad per voxel
    assert np.angle(obj[r["support"]].sum()) == pytest.approx(0, abs=1e-4)
    np.testing.assert_allclose(r["oversampling"], oversampling(truth), rtol=0.15)
    assert r["shrinkwrap"]["threshold"] <= 0.25


def test_reconstruct_refuses_bad_inputs_without_writing(tmp_path):
    amp = np.random.default_rng(3).random((8, 8, 8)).astype(np.float32)
    np.save(tmp_path / "a.npy", amp)
    np.savez(tmp_path / "a.npz", intens=amp)
    np.save(tmp_path / "m.npy", np.ones((8, 8, 7), bool))
    out = tmp_path / "r.h5"
    base = ["reconstruct", "-o", out, "--set", "model.type=bragg_cdi"]
    cases = [
        (["-d", tmp_path / "a.npz"], "'data' (data.keys.data)"),
        (["-d", tmp_path / "a.npy", "--set", f"data.mask={tmp_path / 'm.npy'}"], "m.npy"),
        (["-d", tmp_path / "a.npy", "--set", "cdi.loss=poisson"], "cdi.loss: poisson"),
        (["-d", tmp_path / "missing.npy"], "missing.npy"),
        (["-d", tmp_path / "a.npy", "--set", "data.quantity=counts"], "data.quantity"),
    ]
    for extra, named in cases:
        rc, err = _cli(*base, *extra)
        assert rc == 2, (extra, err)
        assert named in err and "Traceback" not in err, (extra, err)
        assert not out.exists() and not list(tmp_path.glob("r.h5*")), extra
    # the mask file is an input: --out may not overwrite it
    ok = tmp_path / "ok.npy"
    np.save(ok, np.ones((8, 8, 8), bool))
    rc, err = _cli(*base[:2], ok, *base[3:], "-d", tmp_path / "a.npy", "--set", f"data.mask={ok}")
    assert rc == 2 and "data.mask" in err and np.load(ok).all(), err


def test_reconstruct_file_units_and_voxel_size(tmp_path):
    d, _ = _crystal(seed=4, n=16, photons=1e7)
    amp = np.sqrt(d.data)
    np.save(tmp_path / "v.npy", amp)
    cdi = {"iterations": 4, "hio": {"iterations": 4}}
    g = {"energy_ev": 9000, "distance": 1.0, "detector_pixel_size": 55e-6}
    cfg = _config(cdi=cdi, data={"quantity": "amplitude"}, geometry=g)
    res = reconstruct_file(cfg, tmp_path / "v.npy", tmp_path / "r.h5")
    r = read_h5(tmp_path / "r.h5")
    with h5py.File(tmp_path / "r.h5") as f:
        assert f.attrs["units"] == "metres"
    assert r["voxel_size"] == pytest.approx(d.attrs["object_pixel_size"])
    assert r["geometry"]["energy_ev"] == 9000 and res["units"] == "metres"
    cfg = _config(cdi=cdi, data={"quantity": "amplitude"})
    res = reconstruct_file(cfg, tmp_path / "v.npy", tmp_path / "v.h5")
    r = read_h5(tmp_path / "v.h5")
    assert "voxel_size" not in r and "geometry" not in r and res["voxel_size"] is None
    assert r["oversampling"].shape == (3,) and r["phase_ramp"].shape == (3,)


def test_volume_formats_are_refused_for_frame_stacks(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((2, 4, 4)))
    cfg = load_config({"data": {"format": "npy"}}, stage_schema("reconstruct"), name="reconstruct")
    assert cfg["model"]["type"] != "bragg_cdi"  # the default: a gradient-solver model
    with pytest.raises(ConfigError, match="data.format: npy reads one 3D volume"):
        load_data(tmp_path / "a.npy", cfg)


def test_strain_and_vtk_next_to_the_result(tmp_path, crystal):
    """With the measured reflection (the simulation's Q) the result holds displacement and
    strain along G; cdi.vtk writes a VTK image beside it whose arrays and spacing are the
    result's; a NeXus default plot points at the object."""
    d, _ = crystal
    write_cxi(tmp_path / "s.cxi", d)
    q = np.asarray(d.truth["q_vector"], np.float64)
    out = tmp_path / "r.h5"
    sets = [
        "model.type=bragg_cdi",
        "cdi.starts=2",
        "cdi.vtk=true",
        f"cdi.reflection={{d_spacing: {float(2 * np.pi / np.linalg.norm(q))!r}, "
        f"q_direction: {(q / np.linalg.norm(q)).tolist()}, phase_sign: 1}}",
    ]
    rc, err = _cli(
        "reconstruct", "-d", tmp_path / "s.cxi", "-o", out, *sum((["--set", s] for s in sets), [])
    )
    assert rc == 0, err
    r = read_h5(out)
    s = r["strain"]
    assert s["@displacement_units"] == "m" and s["@phase_convention"] == "phase = +G.u"
    inside = s["mask"]
    assert inside.any() and np.all(np.isfinite(s["displacement"][inside]))
    assert np.all(np.isnan(s["strain"][~inside]))
    arrays, grid = read_vti(tmp_path / "r.vti")
    np.testing.assert_allclose(arrays["amplitude"], np.abs(r["object"]), rtol=1e-6)
    np.testing.assert_allclose(arrays["phase"], np.angle(r["object"]), atol=1e-6)
    np.testing.assert_array_equal(arrays["support"].astype(bool), r["support"])
    np.testing.assert_array_equal(arrays["strain"], s["strain"])
    np.testing.assert_allclose(grid["spacing"], [r["voxel_size"]] * 3, rtol=1e-6)
    with h5py.File(out) as f:
        assert f["entry/data"].attrs["signal"] == "signal"
        np.testing.assert_array_equal(f["entry/data/signal"][()], f["object"][()])
    # no voxel size: the strain cannot be in metres, refused before the solve
    np.save(tmp_path / "a.npy", np.sqrt(d.data))
    rc, err = _cli(
        "reconstruct",
        "-d",
        tmp_path / "a.npy",
        "-o",
        tmp_path / "x.h5",
        *sum((["--set", s] for s in sets), []),
    )
    assert rc == 2 and "cdi.reflection" in err and not (tmp_path / "x.h5").exists()
