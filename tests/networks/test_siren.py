"""The SIREN coordinate network and its per-sample fit to structured-illumination counts:
initialisation, the physics through the operator (values and gradients against an explicit
torch tensordot), recovery of a small known map with its background, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from xrayflow.evaluate.metrics import ssim
from xrayflow.modalities import stage_schema
from xrayflow.networks.siren import (
    SIREN_DEFAULTS,
    Siren,
    fit_siren,
    grid_coordinates,
    project,
    torch_device,
)
from xrayflow.operators import PatternProjection


def _speckle(k: int, n: int, rng, grain: float = 1.0) -> np.ndarray:
    """Fully developed speckle (K, n, n): |smoothed complex noise|², mean 1."""
    z = rng.standard_normal((2, k, n, n))
    z = ndimage.gaussian_filter(z, (0, 0, grain, grain), mode="wrap")
    p = z[0] ** 2 + z[1] ** 2
    return p / p.mean()


def _blobs(n: int, seed: int) -> np.ndarray:
    """Soft-edged discs on zero, peak about 1."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n]
    m = np.zeros((n, n))
    for _ in range(3):
        cy, cx = rng.uniform(3, n - 3, 2)
        m += 1 / (1 + np.exp((np.hypot(yy - cy, xx - cx) - rng.uniform(2, n / 4)) / 0.6))
    return np.minimum(m, 1.0)


def test_siren_initialisation_and_seed():
    net = Siren(3, hidden_width=32, hidden_layers=2, omega_0=30.0, seed=4, bias=1.0)
    first, hidden = net.body[0].linear.weight, net.body[1].linear.weight
    assert first.abs().max() <= 1 / 2 and first.abs().max() > 0.4  # U(-1/n, 1/n), n = 2
    bound = math.sqrt(6 / 32) / 30
    assert hidden.abs().max() <= bound and hidden.abs().max() > 0.9 * bound
    assert torch.all(net.head.bias == 1.0)
    same = Siren(3, hidden_width=32, hidden_layers=2, seed=4, bias=1.0)
    other = Siren(3, hidden_width=32, hidden_layers=2, seed=5, bias=1.0)
    for a, b, c in zip(net.parameters(), same.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b)
        assert not torch.equal(a, c) or a.numel() == 3  # the head's bias is set, not drawn
    coords = grid_coordinates((5, 7))
    assert coords.shape == (35, 2) and net(coords).shape == (35, 3)
    assert torch.allclose(coords[1], torch.tensor([-2 / 3, -1.0]))  # (x, y), x fast
    assert coords.min() == -1 and coords.max() == 1


def _operator(k=12, e=2, shape=(6, 5), seed=0):
    rng = np.random.default_rng(seed)
    patterns = rng.random((k, *shape))
    weights = rng.uniform(0.5, 2.0, e)
    maps = rng.standard_normal((e, *shape))
    return PatternProjection(patterns, weights), patterns, weights, maps


def test_torch_forward_is_the_operators():
    op, _, _, maps = _operator()
    y = project(torch.tensor(maps), op)
    np.testing.assert_allclose(y.numpy(), op.fwd(maps), rtol=1e-6, atol=0)
    assert y.shape == (12, 2)


def test_gradient_matches_an_explicit_torch_tensordot():
    op, patterns, weights, maps = _operator(seed=1)
    g = np.random.default_rng(2).standard_normal((12, 2))
    m1 = torch.tensor(maps, requires_grad=True)
    (torch.from_numpy(g) * project(m1, op)).sum().backward()
    m2 = torch.tensor(maps, requires_grad=True)
    explicit = torch.tensordot(torch.from_numpy(patterns), m2, dims=([1, 2], [1, 2]))
    (torch.from_numpy(g) * explicit * torch.from_numpy(weights)).sum().backward()
    np.testing.assert_allclose(m1.grad.numpy(), m2.grad.numpy(), rtol=1e-10, atol=1e-12)
    small = torch.tensor(maps[:, :3, :2].copy(), requires_grad=True)
    op_small = PatternProjection(patterns[:, :3, :2].copy(), weights)
    assert torch.autograd.gradcheck(lambda m: project(m, op_small), (small,))


def _counts(maps, patterns, sens, photons, rng, spill=None, diffuser=None):
    """Poisson counts of ``maps`` (E, n, n) under ``patterns`` · ``photons`` per pixel."""
    mean = sens * np.einsum("kyx,eyx->ke", patterns * photons, maps)
    if spill is not None:
        mean = mean + diffuser[:, None] * spill[None, :]
    return rng.poisson(mean).astype(np.float64)


def test_fit_recovers_a_small_map_and_its_background():
    """16², K = all pixels, 1e8 photons per pattern (about 10⁵ counts per pattern and
    line), a diffuser line (its counts varying from pattern to pattern) that adds 10 % of
    the mean counts to each line: SSIM > 0.9 per map and the spill within 20 %, in
    seconds on the CPU."""
    n, rng = 16, np.random.default_rng(0)
    truth = np.stack([_blobs(n, 1), _blobs(n, 2)]) * 1e-3  # g/cm²
    patterns = _speckle(n * n, n, rng)
    sens = np.array([0.4, 0.3])
    photons = 1e8 / (n * n)
    clean = sens * np.einsum("kyx,eyx->ke", patterns * photons, truth)
    diffuser = rng.poisson(rng.uniform(2e3, 8e3, n * n)).astype(np.float64)
    spill = 0.1 * clean.mean(axis=0) / diffuser.mean()
    counts = _counts(truth, patterns, sens, photons, rng, spill, diffuser)
    cfg = {"hidden_width": 48, "hidden_layers": 2, "steps": 400, "lr": 1e-3, "loss": "poisson"}
    maps, hist = fit_siren(
        patterns * photons, counts, sens, (n, n), None, cfg, "cpu", 0, background=diffuser
    )
    assert maps.shape == (2, n, n) and maps.dtype == np.float64 and maps.min() >= 0
    for e in range(2):
        assert ssim(truth[e], maps[e], np.ptp(truth[e])) > 0.9, e
    np.testing.assert_allclose(hist["spill"][:, 0], spill, rtol=0.2)
    assert hist["loss"].shape == (400,) and hist["loss"][-1] < 0.01 * hist["loss"][0]
    assert 350 <= hist["best_step"] < 400  # the least objective of the last 50 steps
    assert hist["device"] == "cpu"


def test_fit_is_deterministic_and_uses_the_prior():
    n, rng = 12, np.random.default_rng(3)
    truth = _blobs(n, 4)[None] * 1e-3
    patterns = _speckle(40, n, rng) * 1e4
    counts = _counts(truth, patterns, np.array([0.5]), 1.0, rng)
    transmission = np.exp(-2.0 * truth[0] / 1e-3)
    cfg = {"hidden_width": 16, "hidden_layers": 1, "steps": 30, "prior_weight": 1.0}
    cfg["positivity"] = False  # the network's output as it is
    a, ha = fit_siren(patterns, counts, [0.5], (n, n), transmission, cfg, "cpu", 7)
    b, hb = fit_siren(patterns, counts, [0.5], (n, n), transmission, cfg, "cpu", 7)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ha["loss"], hb["loss"])
    assert np.all(ha["prior"] > 0) and ha["spill"] is None
    c, _ = fit_siren(patterns, counts, [0.5], (n, n), transmission, cfg, "cpu", 8)
    assert not np.array_equal(a, c)


def test_a_diverging_fit_rolls_back_to_its_lowest_point():
    n, rng = 12, np.random.default_rng(9)
    truth = _blobs(n, 2)[None] * 1e-3
    patterns = _speckle(n * n, n, rng) * 1e4
    counts = _counts(truth, patterns, np.array([0.5]), 1.0, rng)
    cfg = {"hidden_width": 16, "hidden_layers": 1, "steps": 40, "lr": 0.5, "keep_last": 5}
    maps, hist = fit_siren(patterns, counts, [0.5], (n, n), None, cfg, "cpu", 0)
    assert hist["rollbacks"] >= 1 and np.isfinite(maps).all()
    kept = hist["loss"][hist["best_step"]] if hist["best_step"] >= 0 else None
    assert kept is None or kept <= 2 * hist["loss"].min()


def test_bad_inputs_and_devices():
    p = np.ones((4, 3, 3))
    with pytest.raises(ValueError, match="patterns"):
        fit_siren(p, np.ones((5, 1)), [1.0], (3, 3), None, {"steps": 1})
    with pytest.raises(ValueError, match="sensitivity"):
        fit_siren(p, np.ones((4, 2)), [1.0], (3, 3), None, {"steps": 1})
    with pytest.raises(ValueError, match="loss"):
        fit_siren(p, np.ones((4, 1)), [1.0], (3, 3), None, {"steps": 1, "loss": "l1"})
    assert torch_device("cpu").type == "cpu"
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert torch_device("auto").type == want
    if not torch.cuda.is_available():
        with pytest.raises(Exception, match="CUDA"):
            torch_device("gpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_fit_runs_on_the_gpu():
    n, rng = 12, np.random.default_rng(5)
    truth = _blobs(n, 6)[None] * 1e-3
    patterns = _speckle(n * n, n, rng) * 1e4
    counts = _counts(truth, patterns, np.array([0.5]), 1.0, rng)
    cfg = {"hidden_width": 16, "hidden_layers": 1, "steps": 20}
    maps, hist = fit_siren(patterns, counts, [0.5], (n, n), None, cfg, "cuda", 0)
    cpu, _ = fit_siren(patterns, counts, [0.5], (n, n), None, cfg, "cpu", 0)
    assert hist["device"].startswith("cuda")
    np.testing.assert_allclose(maps, cpu, rtol=1e-3, atol=1e-3 * np.abs(cpu).max())


def test_defaults_are_the_reconstruct_schemas():
    section = stage_schema("reconstruct")["properties"]["linear_inverse"]["properties"]
    keys = section["siren"]["properties"]
    assert {k: v["default"] for k, v in keys.items()} == {k: SIREN_DEFAULTS[k] for k in keys}
    assert section["loss"]["enum"] == ["poisson", "gaussian"]  # the losses fit_siren knows
