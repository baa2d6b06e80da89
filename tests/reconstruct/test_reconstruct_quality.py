"""Reconstruction quality on small simulated data with known truth (noisy, Poisson)."""

from __future__ import annotations

import numpy as np

from xrayflow.optics.propagation import transfer_function
from xrayflow.solvers.gradient import Reconstructor

QUIET = {"log": lambda s: None}


def test_ptycho2d_star_phase_ssim(sim):
    shape, n = (64, 64), 32
    obj = np.exp(1j * sim.star_phase(shape, amp=0.8))[None] * 0.95
    c = sim.raster(shape, n, 4, jitter=1.0)
    I, ptrue = sim.simulate(obj, sim.make_probe(n, width=0.5), c, photons=1e5)
    d = sim.recon_data(I, c, shape, probe=ptrue * np.exp(0.3j))
    cfg = sim.config(optimizer={"iterations": 30, "batch_size": 16}, loss={"type": "poisson"})
    res = Reconstructor(cfg, d, **QUIET).run()
    assert res.history["loss"][-1] < res.history["loss"][0]
    assert sim.phase_ssim(res.params["object"][0], obj[0], (12, 52, 12, 52)) >= 0.9


def test_probe_recovery_from_wrong_guess(sim):
    from xrayflow.evaluate.alignment import align

    shape, n = (64, 64), 32
    obj = np.exp(1j * sim.star_phase(shape, amp=0.8))[None]
    c = sim.raster(shape, n, 3, jitter=1.0)
    I, ptrue = sim.simulate(obj, sim.make_probe(n, width=0.5), c, photons=1e5)
    d = sim.recon_data(I, c, shape)  # no probe in the data: start from a flat aperture
    cfg = sim.config(
        init={"probe": "aperture", "probe_width": 0.4},
        optimizer={"iterations": 60, "batch_size": 16, "probe": {"start": 1}},
    )
    rec = Reconstructor(cfg, d, **QUIET)
    p0 = rec.params["probe"][0].copy()
    res = rec.run()

    def corr(p):
        al, _ = align(p, ptrue[0], scale=True)
        return abs(np.vdot(al, ptrue[0])) / (np.linalg.norm(al) * np.linalg.norm(ptrue[0]))

    c0, c1 = corr(p0), corr(res.params["probe"][0])
    assert c1 > 0.98 and (1 - c1) < 0.25 * (1 - c0), (c0, c1)
    assert sim.phase_ssim(res.params["object"][0], obj[0], (14, 50, 14, 50)) >= 0.9


def test_multislice_two_slices_beat_single_slice(sim):
    shape, n = (64, 64), 32
    lam, dz = 0.1, 300.0  # pixel units: wavelength and slice spacing in object pixels
    obj = np.stack(
        [np.exp(1j * sim.star_phase(shape, amp=0.5)), np.exp(1j * sim.blobs_phase(shape, amp=0.5))]
    )
    c = sim.raster(shape, n, 3, jitter=1.0)
    H = transfer_function("fresnel", (n, n), 1.0, lam, dz, dtype=np.complex128)
    I, ptrue = sim.simulate(
        obj, sim.make_probe(n, width=0.6, diffuser=1.0), c, photons=1e6, transfer=H
    )
    scores = {}
    for S in (2, 1):
        d = sim.recon_data(I, c, shape, probe=ptrue, wavelength=lam, slice_spacing=dz)
        cfg = sim.config(
            model={"type": "multislice_ptycho" if S > 1 else "ptycho2d", "n_slices": S},
            optimizer={"iterations": 30, "batch_size": 16, "probe": {"start": 1000}},
        )
        res = Reconstructor(cfg, d, **QUIET).run()
        scores[S] = [
            sim.phase_ssim(res.params["object"][min(j, S - 1)], obj[j], (12, 52, 12, 52))
            for j in range(2)
        ]
    assert min(scores[2]) >= 0.8, scores
    assert scores[2][0] > scores[1][0] and scores[2][1] > scores[1][1], scores


def test_position_correction_halves_error(sim):
    shape, n = (72, 72), 32
    obj = np.exp(1j * sim.star_phase(shape, amp=0.8))[None]
    c = sim.raster(shape, n, 4, jitter=1.0)
    inner = (c > 2).all(1) & (c < np.asarray(shape) - n - 3).all(1)
    c = c[inner]
    I, ptrue = sim.simulate(obj, sim.make_probe(n, width=0.5), c, photons=1e5)
    err = np.random.default_rng(5).normal(0, 2.0, c.shape).clip(-2.5, 2.5)
    d = sim.recon_data(I, c + err, shape, probe=ptrue)
    cfg = sim.config(
        model={"position_correction": True, "object_margin_px": 0},
        optimizer={
            "iterations": 60,
            "batch_size": 16,
            "probe": {"start": 1000},
            "positions": {"start": 3, "lr": 0.5},
        },
    )
    res = Reconstructor(cfg, d, **QUIET).run()
    e0 = err - err.mean(0)
    e1 = res.positions - c
    e1 -= e1.mean(0)
    rms0, rms1 = np.sqrt((e0**2).mean()), np.sqrt((e1**2).mean())
    assert rms1 <= 0.5 * rms0, (rms0, rms1)


def test_delta_beta_unknowns_with_regularisers(sim):
    """(delta, beta) per voxel -> transmission inside the model; TV, L1 and positivity."""
    shape, n = (48, 48), 24
    lam, dz = 0.1, 200.0
    kdz = 2 * np.pi / lam * dz
    phase = sim.star_phase(shape, amp=0.5)
    delta = np.stack([phase, 0.5 * sim.blobs_phase(shape, amp=1.0)]) / kdz  # phase = -k dz d
    beta = 0.05 * delta
    obj = np.exp(-1j * kdz * (delta - 1j * beta))
    c = sim.raster(shape, n, 3, jitter=1.0)
    H = transfer_function("fresnel", (n, n), 1.0, lam, dz, dtype=np.complex128)
    I, ptrue = sim.simulate(
        obj, sim.make_probe(n, width=0.6, diffuser=1.0), c, photons=1e6, transfer=H
    )
    d = sim.recon_data(I, c, shape, probe=ptrue, wavelength=lam, slice_spacing=dz)
    cfg = sim.config(
        model={"type": "multislice_ptycho", "n_slices": 2, "object_param": "delta_beta"},
        regularizers={
            "tv": {"weight": 1e-3, "param": "delta"},
            "l1": {"weight": 1e-4, "param": "beta"},
            "positivity": {"weight": 1.0, "param": "beta"},
        },
        optimizer={"iterations": 25, "batch_size": 16, "probe": {"start": 1000}},
    )
    res = Reconstructor(cfg, d, **QUIET).run()
    assert set(res.params) == {"delta", "beta", "probe"}
    assert res.history["loss"][-1] < 0.2 * res.history["loss"][0]
    est = np.exp(-1j * kdz * (res.params["delta"] - 1j * res.params["beta"]))
    assert sim.phase_ssim(est[0], obj[0], (10, 38, 10, 38)) >= 0.8


def test_many_slices_take_stable_full_steps(sim):
    """S slices share the exit-wave residual: the object step is 1/S of a single slice's
    (engine._preconditioners), so lr = 1 with a known probe converges at S = 4 instead of
    overshooting S-fold at the probe's brightest pixels."""
    shape, n, S = (56, 56), 24, 4
    lam, dz = 0.1, 50.0
    obj = np.stack([np.exp(1j * sim.blobs_phase(shape, amp=0.15, seed=s)) * 0.99 for s in range(S)])
    c = sim.raster(shape, n, 3, jitter=1.0)
    H = transfer_function("fresnel", (n, n), 1.0, lam, dz, dtype=np.complex128)
    I, ptrue = sim.simulate(obj, sim.make_probe(n, width=0.6), c, photons=1e6, transfer=H)
    d = sim.recon_data(I, c, shape, probe=ptrue, wavelength=lam, slice_spacing=dz)
    cfg = sim.config(
        model={"type": "multislice_ptycho", "n_slices": S},
        optimizer={"iterations": 30, "batch_size": 16, "probe": {"start": 1000}},
    )
    res = Reconstructor(cfg, d, **QUIET).run()
    loss = np.asarray(res.history["loss"])
    assert np.all(np.isfinite(loss)) and loss[-1] < 0.25 * loss[0], loss[[0, -1]]
    proj, true = np.prod(res.params["object"], axis=0), np.prod(obj, axis=0)
    assert sim.phase_ssim(proj, true, (12, 44, 12, 44)) >= 0.9
