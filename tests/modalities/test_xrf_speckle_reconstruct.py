"""xrf_speckle reconstruction (``xrayflow reconstruct``, the linear-inverse solver): exact at
K = number of pixels without noise (CGLS), SSIM >= 0.8 for every element map at K = 25 % and
1e8 photons per pattern (64²), the diffusers' background removed, the same result for any
number of MPI ranks, the SIREN method through the stage, and bad input refused (exit 2, a
message naming the key or dataset, no output)."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from mpi_util import run_ranks

from xrayflow.cli import main
from xrayflow.evaluate.metrics import ssim
from xrayflow.io.cxi import read_cxi, write_cxi
from xrayflow.operators import PatternProjection
from xrayflow.simulate import run, simulate

ROOT = Path(__file__).resolve().parents[2]
SIM = ROOT / "config" / "simulate" / "xrf_speckle.yaml"
RECON = ROOT / "config" / "reconstruct" / "xrf_speckle.yaml"
COUNTS = "entry_1/xrayflow_signals/counts"


def small(shape: int, **xrf) -> dict:
    """A small simulate config: Co, Fe, Mn of a battery cathode, 2 µm pixels."""
    return {
        "modality": "xrf_speckle",
        "seed": 2,
        "energy_ev": 10000,
        "geometry": {"shape": shape, "pixel_size": 13e-6, "distance": 0.1},
        "xrf_speckle": {
            "magnification": 6.5,
            "elements": ["Co", "Fe", "Mn"],
            "diffusers": [{"grit": 2000, "distance": 1.5}],
            "raster": False,
            **xrf,
        },
        "phantom": {
            "type": "battery_cathode",
            "shape": [4, None, None],
            "params": {"radius_range": [3e-6, 6e-6]},
        },
        "noise": {"photons_per_probe": 1e8},
        "output": {"compression": "none"},
    }


def reconstruct(tmp_path, data, name="r", **section):
    """``xrayflow reconstruct`` of ``data`` with the shipped config, ``section`` merged into
    its ``linear_inverse``; returns (exit code, result path)."""
    cfg = yaml.safe_load(RECON.read_text())
    cfg["linear_inverse"].update(section)
    cfg["run"]["log_every"] = 0
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / f"{name}.h5"
    args = ["-c", str(tmp_path / f"{name}.yaml"), "-d", str(data), "-o", str(out)]
    return main(["reconstruct", *args]), out


def result(path) -> dict:
    with h5py.File(path) as f:
        return {k: f[k][()] for k in ("maps", "background_spill", "loss", "algorithm", "method")}


def rel(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ---------------------------------------------------------------- exact at K = pixels
def test_noise_free_k_equal_to_pixels_is_exact(tmp_path):
    """K = 16² = 256 patterns, no noise, no background: CGLS recovers every map to 1e-6.

    The patterns are fully developed speckle with one-pixel grains (i.i.d. exponential
    intensity, whole photons: exact in the file's float32 frames), the counts those of the
    simulated truth maps in double precision: the square system is well conditioned
    (condition number ~1e4). The simulation's sandpaper speckle is at least two pixels wide
    (its check): its weak high frequencies leave the square system ill conditioned (~1e5 at
    24²), beyond what float32 frames resolve to 1e-6."""
    d = simulate(small(16, pattern_fraction=1.0, background={"spill": 0.0}))
    rng = np.random.default_rng(3)
    patterns = rng.poisson(1e4 * rng.exponential(1.0, d.data.shape)).astype(np.float64)
    sample = np.asarray(d.signals["line_kind"]) == "sample"
    maps = d.truth["element_maps"].astype(np.float64)
    counts = np.asarray(d.signals["counts"], np.float64)
    counts[:, sample] = PatternProjection(patterns, d.signals["sensitivity"][sample]).fwd(maps)
    signals = {**d.signals, "counts": counts}
    write_cxi(tmp_path / "d.cxi", dataclasses.replace(d, data=patterns, signals=signals))
    plain = {"loss": "gaussian", "positivity": False, "background": False, "iterations": 3000}
    plain.update(tv={"weight": 0.0}, l1={"weight": 0.0})
    rc, out = reconstruct(tmp_path, tmp_path / "d.cxi", **plain)
    r = result(out)
    assert rc == 0 and r["algorithm"] == b"cgls" and r["maps"].shape == maps.shape
    assert max(rel(r["maps"][e], maps[e]) for e in range(len(maps))) < 1e-6


# ---------------------------------------------------------------- K = 25 %, 1e8 photons
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """config/simulate/xrf_speckle.yaml: 64², K = 1024 = 25 % of the pixels, 1e8 photons
    per pattern at the sample (Co, Fe, Mn; SiC diffusers, spill 0.2)."""
    tmp = tmp_path_factory.mktemp("xrf")
    run(SIM, tmp / "d.cxi")
    return tmp


def test_quarter_of_the_pixels_at_1e8_photons_per_pattern(demo):
    d = read_cxi(demo / "d.cxi")
    assert d.attrs["photons_per_pattern"] == 1e8 and d.data.shape == (1024, 64, 64)
    rc, out = reconstruct(demo, demo / "d.cxi")
    r = result(out)
    truth = d.truth["element_maps"]
    scores = [ssim(r["maps"][e], t, t.max() - t.min()) for e, t in enumerate(truth)]
    assert rc == 0 and r["method"] == b"ad" and r["algorithm"] == b"lbfgs"
    assert min(scores) >= 0.8, scores
    with h5py.File(out) as f:
        assert [s.decode() for s in f["elements"][()]] == ["Co", "Fe", "Mn"]
        assert f.attrs["model"] == "xrf_speckle" and f["pixel_size"][()] == pytest.approx(2e-6)


# ---------------------------------------------------------------- background
@pytest.fixture(scope="module")
def diffuser_data(tmp_path_factory):
    """32², K = 512, coarse SiC and Al2O3 papers (their Si and Al lines vary by about 10 %
    between positions), spill 0.2 of both lines into each element line: 15 % of the Fe
    line's counts."""
    tmp = tmp_path_factory.mktemp("xrf_bg")
    diffusers = [
        {"grit": 600, "material": "SiC", "distance": 1.5},
        {"grit": 800, "material": "Al2O3", "distance": 1.0},
    ]
    cfg = small(32, pattern_fraction=0.5, diffusers=diffusers, background={"spill": 0.2})
    run(cfg, tmp / "d.cxi")
    return tmp


def test_background_is_removed(diffuser_data):
    """The estimated spill gives the diffuser background within 15 % (found: 90-94 %) and
    maps whose totals are within 4 % of the truth (1-3 %); without background estimation
    the maps take the background up (totals 12 to 40 % too high)."""
    tmp = diffuser_data
    d = read_cxi(tmp / "d.cxi")
    truth = d.truth["element_maps"].astype(np.float64)
    diffuser = np.asarray(d.signals["counts"])[:, np.asarray(d.signals["line_kind"]) == "diffuser"]
    background = diffuser.mean(axis=0) @ d.truth["background_spill"].T  # counts per line
    assert background.shape == (3,) and diffuser.shape[1] == 2
    rc, out = reconstruct(tmp, tmp / "d.cxi")
    r = result(out)
    assert rc == 0 and r["background_spill"].shape == (3, 2)
    found = diffuser.mean(axis=0) @ r["background_spill"].T
    assert np.all(np.abs(found / background - 1) < 0.15), (found, background)
    bias = r["maps"].sum(axis=(1, 2)) / truth.sum(axis=(1, 2)) - 1
    assert np.all(np.abs(bias) < 0.04), bias
    rc, out = reconstruct(tmp, tmp / "d.cxi", name="no_bg", background=False)
    r = result(out)
    assert rc == 0 and not r["background_spill"].any()
    assert (r["maps"].sum(axis=(1, 2)) / truth.sum(axis=(1, 2)) - 1).max() > 0.1


# ---------------------------------------------------------------- MPI
@pytest.mark.mpi
@pytest.mark.parametrize("section", [{}, {"loss": "gaussian", "positivity": False}])
def test_any_number_of_ranks_gives_the_same_result(diffuser_data, section):
    """L-BFGS-B and CGLS (no priors) on 1 and 3 ranks (11 blocks of 48 patterns: 4, 4 and 3
    per rank): bit-identical maps and losses."""
    tmp = diffuser_data
    cfg = yaml.safe_load(RECON.read_text())
    cfg["linear_inverse"].update(iterations=30, block_rows=48, **section)
    if section:
        cfg["linear_inverse"].update(tv={"weight": 0.0}, l1={"weight": 0.0})
    (tmp / "mpi.yaml").write_text(yaml.safe_dump(cfg))
    runs = []
    for n in (1, 3):
        out = tmp / f"mpi{n}.h5"
        cmd = [sys.executable, "-m", "xrayflow", "reconstruct", "-c", str(tmp / "mpi.yaml")]
        p = run_ranks([*cmd, "-d", str(tmp / "d.cxi"), "-o", str(out)], n, 120, mpi=n > 1)
        assert p.returncode == 0, p.stderr
        with h5py.File(out) as f:
            assert f.attrs["n_ranks"] == n
        runs.append(result(out))
    one, three = runs
    assert one["algorithm"] == three["algorithm"] == (b"cgls" if section else b"lbfgs")
    np.testing.assert_array_equal(one["maps"], three["maps"])
    np.testing.assert_array_equal(one["loss"], three["loss"])


# ---------------------------------------------------------------- SIREN
def test_siren_method_runs_through_the_stage(diffuser_data):
    pytest.importorskip("torch")
    tmp = diffuser_data
    siren = {"hidden_width": 16, "hidden_layers": 1, "steps": 5, "keep_last": 2}
    rc, out = reconstruct(tmp, tmp / "d.cxi", name="siren", method="siren", siren=siren)
    r = result(out)
    assert rc == 0 and r["method"] == b"siren" and r["loss"].shape == (5,)
    assert r["maps"].shape == (3, 32, 32) and np.isfinite(r["maps"]).all()
    assert r["background_spill"].shape == (3, 2)


# ---------------------------------------------------------------- bad input
def _with_nan(counts):
    counts = counts.copy()
    counts[3, 1] = np.nan
    return counts


def _corrupt(tmp, name, counts):
    path = tmp / f"{name}.cxi"
    path.write_bytes((tmp / "d.cxi").read_bytes())
    with h5py.File(path, "a") as f:
        del f[COUNTS]
        f[COUNTS] = counts
    return path


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        ("rows", lambda c: c[:-1], rf"{COUNTS} has shape \(511, 5\).*512 patterns"),
        ("nan", _with_nan, r"non-finite counts \(NaN/inf\), first at \(3, 1\)"),
        ("negative", lambda c: c - c.max(), "negative counts"),
    ],
)
def test_bad_counts_exit_2_naming_the_dataset(diffuser_data, capsys, name, change, message):
    counts = np.asarray(read_cxi(diffuser_data / "d.cxi").signals["counts"])
    path = _corrupt(diffuser_data, name, change(counts))
    rc, out = reconstruct(diffuser_data, path, name=f"bad_{name}")
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    assert str(path) in err and COUNTS in err
    assert re.search(message, err), err


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"iteratons": 10}, "linear_inverse.iteratons"),
        ({"algorithm": "cgls"}, "linear_inverse.algorithm"),
        ({"tv": {"weight": -1.0}}, "linear_inverse.tv.weight"),
    ],
)
def test_bad_settings_exit_2_naming_the_key(diffuser_data, capsys, section, key):
    rc, out = reconstruct(diffuser_data, diffuser_data / "d.cxi", name="bad_cfg", **section)
    assert rc == 2 and not out.exists()
    assert key in capsys.readouterr().err
