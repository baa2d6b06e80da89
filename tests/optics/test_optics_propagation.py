"""Free-space propagation against closed forms, conservation laws and sampling limits."""

import numpy as np
import pytest

from xrayflow.backend import get_backend
from xrayflow.errors import PhysicsError
from xrayflow.operators import FarField, Propagation
from xrayflow.optics import propagation as pr
from xrayflow.optics.gaussian import beam_radius, gaussian_beam, rayleigh_range

B64 = get_backend(precision="double", workers=1)
KINDS = ["fresnel", "angular_spectrum"]

# 12.4 keV, 10 nm pixels, 256^2: z_c = N dx^2 / lambda = 256 um; w0 = 6 px -> z_R = 113 um.
LAM, DX, N, W0 = 1e-10, 1e-8, 256, 6e-8


def rel_l2(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def crandn(rng, shape):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("frac", [0.1, 0.5, 1.0, 2.0])
def test_gaussian_beam_matches_closed_form(kind, frac):
    zr = rayleigh_range(W0, LAM)
    z = frac * zr
    assert z <= pr.critical_distance(N, DX, LAM)
    u0 = gaussian_beam((N, N), DX, LAM, W0, z=0.0)
    H = pr.transfer_function(kind, (N, N), DX, LAM, z, dtype=np.complex128)
    u = Propagation(H).fwd(u0)
    ref = gaussian_beam((N, N), DX, LAM, W0, z=z)
    assert rel_l2(u, ref) < 1e-3
    # the closed form itself: wrong Gouy sign or curvature sign would be far off
    bad = gaussian_beam((N, N), DX, LAM, W0, z=-z)
    assert rel_l2(u, bad) > 0.05


def test_gaussian_beam_radius_from_second_moment():
    z = 1.5 * rayleigh_range(W0, LAM)
    u = gaussian_beam((N, N), DX, LAM, W0, z=z)
    y = (np.arange(N) - N // 2) * DX
    inten = np.abs(u) ** 2
    var_x = (inten.sum(0) * y**2).sum() / inten.sum()
    # intensity exp(-2 r^2 / w^2): <x^2> = w^2 / 4
    assert 2 * np.sqrt(var_x) == pytest.approx(beam_radius(z, W0, LAM), rel=1e-6)
    assert np.sum(np.abs(u) ** 2) * DX**2 == pytest.approx(np.pi * W0**2 / 2, rel=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_h00_is_one(kind):
    for dt in (np.complex64, np.complex128):
        H = pr.transfer_function(kind, (64, 48), (1e-8, 2e-8), LAM, 3e-5, dtype=dt)
        assert H.dtype == dt and H.shape == (64, 48)
        assert H[0, 0] == 1


@pytest.mark.parametrize("kind", KINDS)
def test_parseval_propagation_and_far_field(kind):
    rng = np.random.default_rng(1)
    psi = crandn(rng, (3, 64, 64))
    H = pr.transfer_function(
        kind, (64, 64), DX, LAM, 0.9 * pr.critical_distance(64, DX, LAM), dtype=np.complex128
    )
    e0 = np.sum(np.abs(psi) ** 2)
    assert np.sum(np.abs(Propagation(H).fwd(psi)) ** 2) == pytest.approx(e0, rel=1e-6)
    assert np.sum(np.abs(FarField().fwd(psi)) ** 2) == pytest.approx(e0, rel=1e-6)
    p32 = psi.astype(np.complex64)
    H32 = H.astype(np.complex64)
    assert np.sum(np.abs(Propagation(H32).fwd(p32)).astype(np.float64) ** 2) == pytest.approx(
        e0, rel=1e-5
    )


def _adjoint_gap(A, AH, x, y):
    lhs = np.vdot(A(x), y)
    rhs = np.vdot(x, AH(y))
    return abs(lhs - rhs) / abs(lhs)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("check", [True, False])
def test_propagate_adjoint_identity(kind, check):
    rng = np.random.default_rng(2)
    shape = (2, 40, 56)
    zc = pr.critical_distance(shape[1:], (1e-8, 1.2e-8), LAM)
    dist = 0.7 * zc if check else 5 * zc  # beyond z_c: band-limited kernel with zeros
    H = pr.transfer_function(
        kind, shape, (1e-8, 1.2e-8), LAM, dist, dtype=np.complex128, check=check
    )
    if not check:
        assert np.any(H == 0)
    x, y = crandn(rng, shape), crandn(rng, shape)
    op = Propagation(H, workers=1)
    assert _adjoint_gap(op.fwd, op.adj, x, y) < 1e-10


def test_far_field_adjoint_identity():
    rng = np.random.default_rng(3)
    x, y = crandn(rng, (3, 30, 34)), crandn(rng, (3, 30, 34))
    op = FarField(workers=1)
    assert _adjoint_gap(op.fwd, op.adj, x, y) < 1e-10
    np.testing.assert_allclose(op.adj(op.fwd(x)), x, atol=1e-12)


def test_propagate_in_place_out():
    rng = np.random.default_rng(4)
    psi = crandn(rng, (2, 32, 32))
    H = pr.fresnel_transfer((32, 32), DX, LAM, 1e-5, dtype=np.complex128)
    op = Propagation(H, workers=1)
    ref = op.fwd(psi)
    buf = psi.copy()
    res = op.fwd(buf, out=buf)
    assert res is buf
    np.testing.assert_allclose(buf, ref, atol=1e-13)
    out = np.empty_like(psi)
    assert op.fwd(psi, out=out) is out
    np.testing.assert_allclose(out, ref, atol=1e-13)
    assert op.adj(out, out=out) is out
    np.testing.assert_allclose(out, psi, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_propagation_composes(kind):
    rng = np.random.default_rng(5)
    psi = crandn(rng, (48, 48))
    H1 = pr.transfer_function(kind, psi.shape, DX, LAM, 3e-6, dtype=np.complex128)
    H2 = pr.transfer_function(kind, psi.shape, DX, LAM, 7e-6, dtype=np.complex128)
    H12 = pr.transfer_function(kind, psi.shape, DX, LAM, 1e-5, dtype=np.complex128)
    two = Propagation(H2).fwd(Propagation(H1).fwd(psi))
    assert rel_l2(two, Propagation(H12).fwd(psi)) < 1e-10
    back = pr.transfer_function(kind, psi.shape, DX, LAM, -1e-5, dtype=np.complex128)
    assert rel_l2(Propagation(back).fwd(Propagation(H12).fwd(psi)), psi) < 1e-10


def test_fresnel_and_angular_spectrum_paraxial_vs_not():
    rng = np.random.default_rng(6)
    psi = crandn(rng, (64, 64))
    # hard X-rays, 10 nm pixels: max angle lambda/(2 dx) = 5 mrad -> paraxial
    z = 0.5 * pr.critical_distance(64, DX, LAM)
    a = Propagation(pr.fresnel_transfer(psi.shape, DX, LAM, z, dtype=np.complex128)).fwd(psi)
    b = Propagation(pr.angular_spectrum_transfer(psi.shape, DX, LAM, z, dtype=np.complex128))
    b = b.fwd(psi)
    assert rel_l2(a, b) < 1e-3
    # 1 nm wavelength, 1 nm pixels: angles up to 30 degrees -> not paraxial
    lam, dx = 1e-9, 1e-9
    z = 0.5 * pr.critical_distance(64, dx, lam)
    a = Propagation(pr.fresnel_transfer(psi.shape, dx, lam, z, dtype=np.complex128)).fwd(psi)
    b = Propagation(pr.angular_spectrum_transfer(psi.shape, dx, lam, z, dtype=np.complex128))
    b = b.fwd(psi)
    assert rel_l2(a, b) > 0.1


def test_angular_spectrum_phase_formula():
    # direct evaluation of exp(i 2 pi z (sqrt(1/l^2 - f^2) - 1/l)) in extended precision
    lam, dx, z = 1e-9, 2e-9, 5e-8
    H = pr.angular_spectrum_transfer((16, 16), dx, lam, z, dtype=np.complex128)
    fy, fx = pr.frequency_grid((16, 16), dx)
    f2 = np.longdouble(fy) ** 2 + np.longdouble(fx) ** 2
    ph = 2 * np.pi * z * (np.sqrt(1 / np.longdouble(lam) ** 2 - f2) - 1 / np.longdouble(lam))
    np.testing.assert_allclose(H, np.exp(1j * ph.astype(np.float64)), atol=1e-9)


def test_evanescent_waves_removed():
    lam, dx = 4e-9, 1e-9  # 1/lambda < Nyquist 1/(2 dx)
    H = pr.angular_spectrum_transfer((32, 32), dx, lam, 1e-9, dtype=np.complex128, band_limit=False)
    fy, fx = pr.frequency_grid((32, 32), dx)
    ev = fy**2 + fx**2 > 1 / lam**2
    assert ev.any() and np.all(H[ev] == 0) and np.all(np.abs(H[~ev]) == pytest.approx(1.0))


def test_undersampled_propagation_raises():
    zc = pr.critical_distance(128, DX, LAM)
    assert zc == pytest.approx(128 * DX**2 / LAM)
    pr.check_propagation_sampling((128, 128), DX, LAM, zc)  # at the limit: fine
    for kind in KINDS:
        msg = r"0\.000256 m exceeds the critical distance.* 0\.000128 m"
        with pytest.raises(PhysicsError, match=msg):
            pr.transfer_function(kind, (128, 128), DX, LAM, 2 * zc)
        with pytest.raises(PhysicsError, match="critical distance"):
            pr.transfer_function(kind, (128, 128), DX, LAM, -2 * zc)  # back-propagation too
    # rectangular grid: the short axis decides
    assert pr.critical_distance((64, 128), DX, LAM) == pytest.approx(64 * DX**2 / LAM)


@pytest.mark.parametrize("kind", KINDS)
def test_band_limit_starts_at_critical_distance(kind):
    zc = pr.critical_distance(64, DX, LAM)
    # nothing cut up to z_c (angular spectrum: up to z_c (1 - lambda^2 / (8 dx^2)))
    z = zc if kind == "fresnel" else zc * (1 - LAM**2 / (8 * DX**2) - 1e-9)
    H = pr.transfer_function(kind, (64, 64), DX, LAM, z, dtype=np.complex128)
    assert np.all(np.abs(H) > 0.999)
    H = pr.transfer_function(kind, (64, 64), DX, LAM, 4 * zc, dtype=np.complex128, check=False)
    fy, fx = pr.frequency_grid((64, 64), DX)
    fmax = pr.band_limit_frequency(kind, 64, DX, LAM, 4 * zc)
    assert fmax[0] == pytest.approx(1 / (2 * DX) / 4, rel=1e-3)
    cut = (np.abs(fy) > fmax[0] * (1 + 1e-9)) | (np.abs(fx) > fmax[1] * (1 + 1e-9))
    assert np.all(H[cut] == 0) and np.all(np.abs(H[~cut]) > 0.999)
    # the kept kernel is not aliased: its phase step between neighbours stays below pi
    ph = np.angle(H[0, : 64 // 2][np.abs(H[0, : 64 // 2]) > 0])
    assert np.all(np.abs(np.angle(np.exp(1j * np.diff(ph)))) <= np.pi)


def test_far_field_sampling_grating_lands_on_predicted_pixel():
    lam, z, n, p = 1e-10, 5.0, 128, 75e-6
    dx = pr.far_field_pixel_size(lam, z, n, p)
    assert dx == pytest.approx(lam * z / (n * p))
    period = 16 * dx  # grating of period 16 object pixels
    x = np.arange(n) * dx
    obj = np.ones((n, n)) * (1 + 0.5 * np.cos(2 * np.pi * x / period))[None, :]
    inten = np.abs(FarField().fwd(obj.astype(np.complex128))) ** 2
    # first order diffracts to angle lambda / period -> detector offset z * lambda / period
    k_pred = z * lam / period / p
    assert k_pred == pytest.approx(8.0)
    row = inten[0].copy()
    row[0] = 0
    assert np.argmax(row[: n // 2]) == round(k_pred)
    assert pr.far_field_pixel_size(lam, z, (n, 2 * n), p) == pytest.approx((dx, dx / 2))


def test_frequency_grid_and_fresnel_number():
    fy, fx = pr.frequency_grid((4, 6), (1.0, 0.5))
    np.testing.assert_allclose(fy[:, 0], np.fft.fftfreq(4, 1.0))
    np.testing.assert_allclose(fx[0], np.fft.fftfreq(6, 0.5))
    assert fy.dtype == np.float64 and fy.shape == (4, 1) and fx.shape == (1, 6)
    assert pr.fresnel_number(1e-6, 1e-10, 1e-2) == pytest.approx(1.0)


def test_transfer_cache_reuses_and_is_read_only():
    a = pr.cached_transfer_function("fresnel", (32, 32), DX, LAM, 1e-6)
    b = pr.cached_transfer_function("fresnel", (32, 32), DX, LAM, 1e-6)
    c = pr.cached_transfer_function("fresnel", (32, 32), DX, LAM, 2e-6)
    assert a is b and a is not c
    assert not a.flags.writeable
    np.testing.assert_array_equal(a, pr.fresnel_transfer((32, 32), DX, LAM, 1e-6))


def test_depth_of_field_quarter_wave_rule():
    dof = pr.depth_of_field(DX, LAM)
    assert dof == pytest.approx(2 * DX**2 / LAM)
    # Fresnel phase at Nyquist across the DOF is a quarter wave
    H = pr.fresnel_transfer((64, 64), DX, LAM, dof, dtype=np.complex128)
    assert np.angle(H[0, 32]) == pytest.approx(-np.pi / 2)
    assert pr.critical_distance(64, DX, LAM) == pytest.approx(32 * dof)
