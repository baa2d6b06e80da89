"""Ptycho-tomography through the CLI: simulate a hollow glass cone (config/simulate/
ptychotomo.yaml: 16² frames, 258 nm voxels, 3 x 3 positions, 18 angles) and reconstruct its
3D delta volume with config/reconstruct/ptychotomo.yaml, frames spread over two MPI ranks
when mpiexec exists."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).parents[2]
SIM = ROOT / "config" / "simulate" / "ptychotomo.yaml"
RECON = ROOT / "config" / "reconstruct" / "ptychotomo.yaml"


def _command():
    here = Path(sys.executable).parent / "mpiexec"
    mpiexec = str(here) if here.exists() else shutil.which("mpiexec")
    cmd = [sys.executable, "-m", "xrayflow", "reconstruct"]
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        mpiexec = None
    return ([mpiexec, "-n", "2", *cmd], 2) if mpiexec else (cmd, 1)


def wall_profile(vol, y) -> tuple[float, float]:
    """Wall thickness (voxels: width of the radial profile above half its peak) and wall
    radius (voxels: the peak) of the (z, x) slice ``y`` (profile: mean over rings 0.5 voxel
    wide about the rotation axis)."""
    Z, _, X = vol.shape
    zz, xx = np.mgrid[:Z, :X]
    rho = np.hypot(zz - (Z - 1) / 2, xx - (X - 1) / 2).ravel()
    ring = (rho / 0.5).astype(int)
    sl = vol[:, y, :].ravel()
    prof = np.bincount(ring, sl) / np.maximum(np.bincount(ring), 1)
    return float((prof > prof.max() / 2).sum() * 0.5), float(np.argmax(prof) * 0.5)


@pytest.mark.slow
def test_hollow_cone_volume_from_simulate_and_reconstruct(tmp_path):
    from xrayflow.evaluate.metrics import ssim
    from xrayflow.io.cxi import write_cxi
    from xrayflow.simulate import simulate

    if not SIM.exists():
        pytest.skip("config/simulate/ptychotomo.yaml not present")
    d = simulate(SIM, [])
    assert d.data.shape == (18 * 9, 16, 16)
    write_cxi(tmp_path / "cone.cxi", d)
    truth = d.truth["delta"].astype(np.float64)
    cmd, n_ranks = _command()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "XRAYFLOW_MPI"))}
    env["XRAYFLOW_FFT_WORKERS"] = "1"
    out = tmp_path / "cone.h5"
    t0 = time.perf_counter()
    r = subprocess.run(
        [*cmd, "-c", str(RECON), "-d", str(tmp_path / "cone.cxi"), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    elapsed = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    assert elapsed < 60
    with h5py.File(out, "r") as f:
        delta = f["delta"][()].astype(np.float64)
        assert f["beta"].shape == delta.shape == truth.shape == (24, 24, 24)
        loss = f["loss"][()]
        assert f.attrs["model"] == "ptychotomo" and f.attrs["n_ranks"] == n_ranks
        assert "config" in f and "provenance" in f and f["angles"].shape == (18 * 9,)
    assert loss[-1] < 0.1 * loss[0]
    rng = float(truth.max())
    for y in range(9, 16):  # central (z, x) slices, perpendicular to the cone's axis
        assert ssim(delta[:, y, :], truth[:, y, :], data_range=rng) >= 0.8, y
        (t_rec, r_rec), (t_true, r_true) = wall_profile(delta, y), wall_profile(truth, y)
        assert abs(t_rec - 2.0) <= 2.0 and abs(t_rec - t_true) <= 1.0, y  # 2-voxel wall
        assert abs(r_rec - r_true) <= 1.0, y
