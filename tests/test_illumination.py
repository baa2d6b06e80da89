"""Probe models: zone-plate focus, pinhole Airy limit, diffuser speckle, coherent modes, dose."""

import numpy as np
import pytest
from scipy.special import j1

from xrayflow.errors import PhysicsError
from xrayflow.illumination import (
    coherent_modes,
    diffuser_probe,
    mode_powers,
    pinhole_probe,
    probe_power,
    random_phase_screen,
    scale_to_fluence,
    scale_to_photons,
    zone_plate_focal_length,
    zone_plate_probe,
)
from xrayflow.optics.constants import wavelength

LAM = wavelength(12398.4198)  # ≈ 1.0e-10 m
D, DR = 100e-6, 50e-9  # f = D·Δr/λ ≈ 50 mm


def _airy(r, width_scale):
    v = np.pi * r / width_scale
    safe = np.where(v == 0, 1.0, v)
    return np.where(v == 0, 1.0, (2 * j1(safe) / safe) ** 2)


def _first_minimum(profile, pixel):
    """Sub-pixel position (m) of the first local minimum of a radial profile."""
    i = int(np.argmax(np.diff(profile) > 0))
    a, b, c = profile[i - 1], profile[i], profile[i + 1]
    return (i + 0.5 * (a - c) / (a - 2 * b + c)) * pixel


def _fwhm_of_autocorrelation(img, pixel):
    d = img - img.mean()
    ac = np.fft.ifft2(np.abs(np.fft.fft2(d)) ** 2).real
    prof = ac[0, :] / ac[0, 0]
    k = int(np.argmax(prof < 0.5))
    return 2 * (k - 1 + (prof[k - 1] - 0.5) / (prof[k - 1] - prof[k])) * pixel


def test_zone_plate_focus_size_is_airy():
    assert zone_plate_focal_length(D, DR, LAM) == pytest.approx(D * DR / LAM)
    n, dx = 256, DR / 10
    p = zone_plate_probe((n, n), dx, LAM, D, DR)
    assert p.dtype == np.complex64 and probe_power(p) == pytest.approx(1.0, rel=1e-5)
    inten = np.abs(p.astype(complex)) ** 2
    assert np.unravel_index(inten.argmax(), inten.shape) == (n // 2, n // 2)
    prof = inten[n // 2, n // 2 :]
    assert _first_minimum(prof, dx) == pytest.approx(1.22 * DR, rel=0.02)
    r = np.arange(n // 2) * dx
    np.testing.assert_allclose(prof[:40] / prof[0], _airy(r[:40], DR), atol=2e-3)
    # symmetric focus
    np.testing.assert_allclose(inten[n // 2, n // 2 - 20 : n // 2], prof[20:0:-1], rtol=1e-3)


def test_zone_plate_focal_length_from_defocused_beam_and_focus_is_brightest():
    n, dx = 256, 20e-9
    f = D * DR / LAM
    dz = 1e-3
    p = zone_plate_probe((n, n), dx, LAM, D, DR, defocus=dz)
    inten = np.abs(p.astype(complex)) ** 2
    # geometric cone: a uniform disc of radius ρ = D·dz/(2f) holds half its power within ρ/√2
    yy, xx = np.mgrid[:n, :n] - n // 2
    r = np.hypot(yy, xx).ravel() * dx
    order = np.argsort(r)
    cum = np.cumsum(inten.ravel()[order]) / inten.sum()
    rho = np.sqrt(2) * r[order][np.searchsorted(cum, 0.5)]
    assert D * dz / (2 * rho) == pytest.approx(f, rel=0.05)
    peaks = {
        z: float((np.abs(zone_plate_probe((n, n), dx, LAM, D, DR, defocus=z)) ** 2).max())
        for z in (-200e-6, -60e-6, 0.0, 60e-6, 200e-6)
    }
    assert max(peaks, key=peaks.get) == 0.0
    assert peaks[200e-6] < peaks[60e-6] < peaks[0.0]
    with pytest.raises(PhysicsError, match="window"):
        zone_plate_probe((64, 64), dx, LAM, D, DR, defocus=1e-3)
    with pytest.raises(PhysicsError, match="outer zone"):
        zone_plate_probe((64, 64), 2 * DR, LAM, D, DR)


def test_zone_plate_central_stop_and_osa_change_the_focus():
    n, dx = 128, DR / 4
    full = np.abs(zone_plate_probe((n, n), dx, LAM, D, DR).astype(complex)) ** 2
    stop = np.abs(zone_plate_probe((n, n), dx, LAM, D, DR, central_stop=0.5).astype(complex)) ** 2
    # an annular pupil narrows the central lobe and moves power into the side lobes
    assert _first_minimum(stop[n // 2, n // 2 :], dx) < _first_minimum(full[n // 2, n // 2 :], dx)
    assert stop.max() < full.max()
    f = D * DR / LAM
    osa = zone_plate_probe((n, n), dx, LAM, D, DR, osa_diameter=D / 4, osa_distance=f / 2)
    osa_i = np.abs(osa.astype(complex)) ** 2  # pupil clipped to D/2: focus twice as wide
    assert _first_minimum(osa_i[n // 2, n // 2 :], dx) == pytest.approx(2.44 * DR, rel=0.05)


def test_pinhole_fraunhofer_limit_is_airy():
    n, dx = 256, 50e-9
    a, z = 80e-9, 1.28e-3  # Fresnel number a²/(λz) = 0.05
    p = pinhole_probe((n, n), dx, LAM, a, z)
    inten = np.abs(p.astype(complex)) ** 2
    prof = inten[n // 2, n // 2 :] / inten[n // 2, n // 2]
    r = np.arange(n // 2) * dx
    np.testing.assert_allclose(prof, _airy(r, LAM * z / a), atol=0.01)
    assert _first_minimum(prof, dx) == pytest.approx(1.22 * LAM * z / a, rel=0.02)


def test_pinhole_near_field_keeps_the_aperture_shape():
    n, dx = 128, 10e-9
    p = pinhole_probe((n, n), dx, LAM, 0.6e-6, 1e-6)  # Fresnel number 3600: shadow
    inten = np.abs(p.astype(complex)) ** 2
    inside = inten[n // 2, n // 2 - 20 : n // 2 + 20]
    assert inside.min() > 0.5 * inside.max()
    assert inten[n // 2, n // 2 + 40] < 0.01 * inside.mean()


def test_diffuser_grain_size_and_determinism():
    n, dx, g = 256, 10e-9, 100e-9
    screen = random_phase_screen((n, n), dx, g, rng=3)
    assert screen.std() == pytest.approx(1.0) and abs(screen.mean()) < 1e-12
    assert _fwhm_of_autocorrelation(screen, dx) == pytest.approx(g, rel=0.1)
    p = diffuser_probe((n, n), dx, LAM, g, 2 * np.pi, rng=1, envelope=np.ones((n, n)))
    inten = np.abs(p.astype(complex)) ** 2
    assert _fwhm_of_autocorrelation(inten, dx) == pytest.approx(g, rel=0.3)
    assert inten.std() / inten.mean() > 0.8  # developed speckle
    weak = diffuser_probe((n, n), dx, LAM, g, 0.2, rng=1, envelope=np.ones((n, n)))
    w = np.abs(weak.astype(complex)) ** 2  # low contrast for a weak screen
    assert w.std() / w.mean() < 0.6
    again = diffuser_probe((n, n), dx, LAM, g, 2 * np.pi, rng=1, envelope=np.ones((n, n)))
    np.testing.assert_array_equal(p, again)
    other = diffuser_probe((n, n), dx, LAM, g, 2 * np.pi, rng=2, envelope=np.ones((n, n)))
    assert not np.allclose(p, other)
    env = diffuser_probe((n, n), dx, LAM, g, 2 * np.pi, rng=1)  # default soft-disc envelope
    assert np.abs(env[0, 0]) == 0 and probe_power(env) == pytest.approx(1.0, rel=1e-5)


def test_coherent_modes_orthogonal_with_decaying_powers():
    p = zone_plate_probe((128, 128), 20e-9, LAM, D, DR, defocus=100e-6)
    for rng in (None, 4):
        modes = coherent_modes(p, 5, 0.6, rng=rng)
        assert modes.shape == (5, 128, 128)
        g = np.einsum("aij,bij->ab", modes.conj().astype(complex), modes.astype(complex))
        powers = np.real(np.diag(g))
        np.testing.assert_allclose(np.abs(g - np.diag(np.diag(g))), 0, atol=1e-5)
        np.testing.assert_allclose(powers, mode_powers(5, 0.6), rtol=1e-4)
        assert np.all(np.diff(powers) < 0) and powers[0] == pytest.approx(0.6, rel=1e-4)
        # mode 0 is the probe itself
        c = np.vdot(p, modes[0]) / (np.linalg.norm(p) * np.linalg.norm(modes[0]))
        assert abs(c) == pytest.approx(1.0, abs=1e-4)
    scaled = scale_to_photons(modes, 1e8)
    assert probe_power(scaled) == pytest.approx(1e8, rel=1e-5)
    g = np.einsum("aij,bij->ab", scaled.conj().astype(complex), scaled.astype(complex))
    assert np.real(np.trace(g)) == pytest.approx(1e8, rel=1e-5)
    np.testing.assert_allclose(mode_powers(3, 1.0), [1, 0, 0])
    with pytest.raises(PhysicsError):
        mode_powers(4, 0.2)


def test_scale_to_fluence():
    dx = 20e-9
    p = zone_plate_probe((64, 64), dx, LAM, D, DR)
    s = scale_to_fluence(p, 1e20, dx)
    assert (np.abs(s.astype(complex)) ** 2).max() / dx**2 == pytest.approx(1e20, rel=1e-5)
    m = scale_to_fluence(coherent_modes(p, 3, 0.8), 1e20, dx, reference="mean")
    inten = (np.abs(m.astype(complex)) ** 2).sum(axis=0)
    assert inten[inten >= 0.5 * inten.max()].mean() / dx**2 == pytest.approx(1e20, rel=1e-5)
