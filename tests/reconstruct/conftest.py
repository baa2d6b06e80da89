"""Shared helpers for the reconstruct tests: tiny simulated ptychography data sets."""

from __future__ import annotations

import numpy as np
import pytest

from xrayflow import ad
from xrayflow.config import load_config
from xrayflow.modalities.ptycho2d.model import PtychoModel, split_positions
from xrayflow.reconstruct.data import ReconData


def star_phase(shape, spokes=12, amp=0.6, radius=None, rng=None):
    ny, nx = shape
    y, x = np.mgrid[:ny, :nx]
    y = y - (ny - 1) / 2
    x = x - (nx - 1) / 2
    r = np.hypot(y, x)
    th = np.arctan2(y, x)
    R = radius if radius is not None else 0.42 * min(ny, nx)
    star = ((np.sin(spokes * th) > 0) & (r < R)).astype(float)
    from scipy.ndimage import gaussian_filter

    return amp * gaussian_filter(star, 0.6)


def blobs_phase(shape, n=10, amp=0.6, seed=3):
    rng = np.random.default_rng(seed)
    ny, nx = shape
    y, x = np.mgrid[:ny, :nx]
    out = np.zeros(shape)
    for _ in range(n):
        cy, cx = rng.uniform(0.2, 0.8) * ny, rng.uniform(0.2, 0.8) * nx
        s = rng.uniform(1.5, 4.0)
        out += np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * s * s))
    # squares: sharp features
    for _ in range(4):
        cy, cx = int(rng.uniform(0.2, 0.7) * ny), int(rng.uniform(0.2, 0.7) * nx)
        w = int(rng.integers(3, 7))
        out[cy : cy + w, cx : cx + w] += 1.0
    return amp * out / out.max()


def make_probe(n, width=0.35, seed=0, diffuser=0.0):
    """Aperture (radius width*n/2) with a quadratic (defocus) phase, smoothed; optional
    random phase diffuser for structured illumination."""
    from scipy.ndimage import gaussian_filter

    y, x = np.mgrid[:n, :n]
    y = y - n / 2
    x = x - n / 2
    r = np.hypot(y, x)
    ap = gaussian_filter((r < width * n / 2).astype(float), 1.0)
    phase = 0.02 * r**2 * 0.5
    if diffuser:
        rng = np.random.default_rng(seed)
        phase = phase + diffuser * gaussian_filter(rng.standard_normal((n, n)), 1.5) * 4
    return (ap * np.exp(1j * phase))[None].astype(np.complex128)


def raster(obj_shape, n, step, jitter=0.5, seed=1):
    rng = np.random.default_rng(seed)
    ys = np.arange(0, obj_shape[0] - n - 1, step, dtype=float)
    xs = np.arange(0, obj_shape[1] - n - 1, step, dtype=float)
    c = np.stack(np.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2)
    c = c + rng.uniform(0, jitter, c.shape)
    return np.clip(c, 0, np.asarray(obj_shape) - n - 1.01)


def simulate(obj, probe, corners, photons=2e4, seed=0, transfer=None):
    """Noisy uncentred far-field patterns from the reconstruct model itself (complex128)."""
    S = obj.shape[0]
    n = probe.shape[-2:]
    probe = probe * np.sqrt(photons / np.sum(np.abs(probe) ** 2))
    model = PtychoModel(n, obj.shape[-2:], n_slices=S, transfer=transfer)
    ci, fr = split_positions(corners)
    I = model.intensities({"object": ad.const(obj)}, ad.const(probe), ci, ad.const(fr)).data
    rng = np.random.default_rng(seed)
    return rng.poisson(np.maximum(I, 0)).astype(np.float32), probe


def recon_data(I, corners, obj_shape, probe=None, wavelength=None, slice_spacing=None):
    return ReconData(
        intensities=I,
        mask=np.ones(I.shape[-2:], bool),
        corners=np.asarray(corners, float),
        object_shape=tuple(obj_shape),
        pixel_size=1.0,
        wavelength=wavelength,
        distance=None,
        energy_ev=None,
        indices=np.arange(I.shape[0]),
        probe=probe,
        slice_spacing=slice_spacing,
        units="pixels",
    )


def config(**sections):
    base = {"geometry": {"units": "pixels"}, "run": {"checkpoint_every": 0, "log_every": 0}}
    for k, v in sections.items():
        base.setdefault(k, {}).update(v)
    return load_config(base, "reconstruct")


def phase_ssim(est, ref, crop):
    """Phase SSIM after removing global phase, phase ramp and sub-pixel shift."""
    from xrayflow.evaluate.alignment import align
    from xrayflow.evaluate.metrics import ssim

    sl = (slice(crop[0], crop[1]), slice(crop[2], crop[3]))
    e, r = est[sl], ref[sl]
    al, _ = align(e, r, scale=True)
    pe = np.angle(al)
    pr = np.angle(r)
    return ssim(pe, pr, data_range=max(float(pr.max() - pr.min()), 1e-3))


@pytest.fixture
def sim():
    class S:
        pass

    s = S()
    for f in (
        star_phase,
        blobs_phase,
        make_probe,
        raster,
        simulate,
        recon_data,
        config,
        phase_ssim,
    ):
        setattr(s, f.__name__, staticmethod(f))
    return s
