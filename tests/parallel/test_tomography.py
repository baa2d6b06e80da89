"""xrayflow.modalities.ptychotomo.model: gradient vs finite differences, agreement with the
ptychotomo simulation conventions, rank-count independence, and a tiny hollow-cone
reconstruction."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
from mpi_util import run_mpi

from xrayflow.backend import get_backend
from xrayflow.modalities.losses import loss_target
from xrayflow.modalities.ptychotomo.model import TomoModel
from xrayflow.optics.constants import wavelength
from xrayflow.parallel import sum_over_blocks


def _probe(n, scale=1.0):
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    r2 = yy**2 + xx**2
    return (scale * np.exp(-r2 / 8.0) * np.exp(0.4j * r2))[None]


def test_gradient_matches_finite_differences():
    be = get_backend("cpu", "double")
    rng = np.random.default_rng(0)
    N, n = 10, 6
    corners = np.array([[0, 0], [2, 3], [4, 4], [1, 4]])
    m = TomoModel(
        (N, N, N),
        1e-7,
        1.5e-10,
        (n, n),
        np.tile(corners, (2, 1)),
        np.repeat([0.0, 0.7], 4),
        n_slices=2,
        backend=be,
    )
    delta, beta = rng.random((N, N, N)) * 1e-5, rng.random((N, N, N)) * 1e-6
    probe, target = _probe(n), rng.random((8, n, n))
    blocks = m.frame_blocks(3)
    assert [b.tolist() for b in blocks] == [[0, 1, 2], [3], [4, 5, 6], [7]]
    tot = sum_over_blocks(blocks, lambda f: m.value_and_grad(delta, beta, probe, target[f], f))

    def f(d, b):
        return sum(float(m.loss(d, b, probe, bl, target[bl]).data) for bl in blocks)

    assert tot["loss"] == pytest.approx(f(delta, beta), rel=1e-12)
    for name in ("delta", "beta"):
        x = delta if name == "delta" else beta
        v = rng.standard_normal(x.shape)
        h = 1e-3 * np.abs(x).max() / np.abs(v).max()
        args = [
            (delta + s * h * v, beta) if name == "delta" else (delta, beta + s * h * v)
            for s in (1, -1)
        ]
        fd = (f(*args[0]) - f(*args[1])) / (2 * h)
        assert np.sum(tot[name] * v) == pytest.approx(fd, rel=1e-5)


def test_transmission_matches_simulation_convention():
    """Bilinear rotation + slabs agree with scipy.ndimage.rotate (order 1) + averaged slabs,
    as used by the ptychotomo simulation."""
    rng = np.random.default_rng(1)
    N, S, vox, lam = 12, 3, 1e-7, 1.5e-10
    z, y, x = np.mgrid[:N, :N, :N] - (N - 1) / 2
    inside = np.hypot(z, x) < N / 2 - 1  # nothing rotates across the volume's edges
    delta = ndi.gaussian_filter(rng.random((N, N, N)), 1.5) * 1e-4 * inside
    beta = delta * 0.1
    m = TomoModel(
        (N, N, N),
        vox,
        lam,
        (4, 4),
        np.zeros((1, 2)),
        [0.4],
        n_slices=S,
        backend=get_backend("cpu", "double"),
    )
    t = m.transmission(delta, beta, 0.4).data
    rot = [
        ndi.rotate(v, np.degrees(0.4), axes=(0, 2), reshape=False, order=1) for v in (delta, beta)
    ]
    e = np.linspace(0, N, S + 1).round().astype(int)
    ref = np.stack(
        [
            np.exp(-1j * 2 * np.pi / lam * vox * (rot[0][a:b] - 1j * rot[1][a:b]).sum(0))
            for a, b in zip(e[:-1], e[1:], strict=True)
        ]
    )
    assert np.abs(np.angle(ref)).max() > 0.3
    np.testing.assert_allclose(t, ref, rtol=0, atol=1e-9)


@pytest.mark.mpi
def test_gradient_identical_on_1_and_2_ranks(tmp_path):
    outs = []
    for n_ranks, mpi in ((1, False), (2, True)):
        out = tmp_path / f"g{n_ranks}.npz"
        r = run_mpi("tomo_grad.py", n_ranks, out, mpi=mpi)
        assert r.returncode == 0, r.stderr
        outs.append(dict(np.load(out)))
    for key in ("loss", "delta", "beta"):
        assert np.array_equal(outs[0][key], outs[1][key]), key
    assert np.abs(outs[0]["delta"]).max() > 0


def _adam(x, g, state, lr, it, b1=0.9, b2=0.999):
    m, v = state
    m *= b1
    m += (1 - b1) * g
    v *= b2
    v += (1 - b2) * g * g
    x -= lr * (m / (1 - b1 ** (it + 1))) / (np.sqrt(v / (1 - b2 ** (it + 1))) + 1e-30)
    np.maximum(x, 0, out=x)


@pytest.mark.slow
def test_hollow_cone_reconstruction_converges():
    from xrayflow.evaluate.metrics import ssim
    from xrayflow.phantoms import hollow_cone

    N, n, vox, energy = 16, 8, 1e-7, 8000.0
    d_true, b_true = (a.astype(np.float32) for a in hollow_cone((N,) * 3, vox).delta_beta(energy))
    g = np.arange(0, N - n + 1, 2)
    corners = np.array([(y, x) for y in g for x in g])  # 25 positions
    A, P = 12, len(corners)
    angles = np.linspace(0, np.pi, A, endpoint=False)
    m = TomoModel(
        (N,) * 3,
        vox,
        wavelength(energy),
        (n, n),
        np.tile(corners, (A, 1)),
        np.repeat(angles, P),
        n_slices=2,
    )
    probe = _probe(n, 30.0).astype(np.complex64)
    blocks = m.frame_blocks(P)
    data = np.concatenate([m.intensities(d_true, b_true, probe, b).data for b in blocks])
    target = loss_target(data)
    delta, beta = np.zeros_like(d_true), np.zeros_like(b_true)
    states = {k: (np.zeros_like(delta), np.zeros_like(delta)) for k in ("delta", "beta")}
    scale = float(d_true.max())

    def corr(a):
        a, c = a - a.mean(), d_true - d_true.mean()
        return float((a * c).sum() / np.sqrt((a * a).sum() * (c * c).sum()))

    losses, corrs = [], []
    for it in range(25):
        tot = sum_over_blocks(blocks, lambda f: m.value_and_grad(delta, beta, probe, target[f], f))
        losses.append(tot["loss"])
        _adam(delta, tot["delta"], states["delta"], 0.05 * scale, it)
        _adam(beta, tot["beta"], states["beta"], 0.005 * scale, it)
        corrs.append(corr(delta))
    assert losses[-1] < 0.05 * losses[0]
    assert corrs[-1] > 0.85 and corrs[-1] > corrs[0] + 0.3
    assert ssim(delta, d_true, data_range=float(d_true.max() - d_true.min())) >= 0.8


def test_model_reproduces_the_ptychotomo_simulation():
    """The model evaluated on the simulation's ground truth gives the simulated frames to
    within their Poisson noise (slabs, units, phase sign, probe, frame order, uncentring)."""
    from pathlib import Path

    cfg = Path(__file__).parents[2] / "config" / "simulate" / "ptychotomo.yaml"
    if not cfg.exists():
        pytest.skip("config/simulate/ptychotomo.yaml not present")
    from xrayflow.simulate import simulate

    d = simulate(cfg, [])
    t = d.truth
    P = len(t["corners_px"])
    corners = np.tile(np.round(t["corners_px"]).astype(int), (len(t["angles"]), 1))
    m = TomoModel(
        t["delta"].shape,
        float(t["voxel_size"]),
        d.wavelength,
        d.frame_shape,
        corners,
        d.angles,
        n_slices=int(d.attrs["n_slices"]),
        propagator=d.attrs["propagator"],
        backend=get_backend("cpu", "double"),
    )
    vol = [t[k].astype(np.float64) for k in ("delta", "beta")]
    model_frames = np.concatenate(
        [m.intensities(*vol, t["probe"], b).data for b in m.frame_blocks(P)]
    )
    D = d.uncentred()
    noise = np.sqrt(D).sum() / D.sum()  # relative L1 size of Poisson noise
    assert np.abs(model_frames - D).sum() / D.sum() < 1.2 * noise
    assert np.corrcoef(model_frames.ravel(), D.ravel())[0, 1] > 0.9999
