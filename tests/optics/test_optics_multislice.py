"""Multislice forward model: operators, adjoints, limits and consistency."""

import numpy as np
import pytest

from xrayflow import operators as ops
from xrayflow.backend import get_backend
from xrayflow.errors import PhysicsError
from xrayflow.optics import propagation as pr
from xrayflow.optics.gaussian import gaussian_beam

B64 = get_backend(precision="double", workers=1)
B32 = get_backend(precision="single", workers=1)
LAM, DX = 1e-10, 1e-8
KINDS = ["fresnel", "angular_spectrum"]


def rel_l2(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def crandn(rng, shape):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


def random_object(rng, S, N, phase=0.3, absorb=0.05):
    return np.exp(1j * phase * rng.standard_normal((S, N, N)) - absorb * rng.random((S, N, N)))


def random_probe(rng, M, n, width=0.25):
    y = np.arange(n) - n / 2
    env = np.exp(-(y[:, None] ** 2 + y[None, :] ** 2) / (2 * (width * n) ** 2))
    return env * crandn(rng, (M, n, n))


# ---------------------------------------------------------------------------- adjoints
def _gap(A, AH, x, y):
    lhs = np.vdot(A(x), y)
    rhs = np.vdot(x, AH(y))
    return abs(lhs - rhs) / abs(lhs)


def test_extract_patches_adjoint_scatter_add():
    rng = np.random.default_rng(0)
    vol_shape = (3, 40, 50)
    corners = np.array([[0, 0], [5, 7], [5, 8], [20, 30], [24, 34], [5, 7]])  # overlaps, repeats
    x = crandn(rng, vol_shape)
    y = crandn(rng, (3, len(corners), 16, 16))
    op = ops.Patches(corners, 16, vol_shape)
    assert _gap(op.fwd, op.adj, x, y) < 1e-10
    p = ops.Patches(corners, (16, 16), vol_shape).fwd(x)
    assert p.shape == (3, 6, 16, 16)
    np.testing.assert_array_equal(p[1, 3], x[1, 20:36, 30:46])
    # 2D object: (B, n, n)
    assert ops.Patches(corners, 16, vol_shape[1:]).fwd(x[0]).shape == (6, 16, 16)


def test_extract_patches_out_of_bounds_raises():
    with pytest.raises(PhysicsError, match="outside"):
        ops.Patches(np.array([[0, 5], [10, 10]]), 16, (1, 20, 20))


def test_fourier_shift_adjoint_identity():
    rng = np.random.default_rng(1)
    shifts = rng.uniform(-3, 3, (4, 2))
    # batched form (B, M, n, n)
    x, y = crandn(rng, (4, 2, 24, 20)), crandn(rng, (4, 2, 24, 20))
    op = ops.FourierShift(shifts[:, None], x.shape, np.complex128)
    assert _gap(op.fwd, op.adj, x, y) < 1e-10
    # broadcast form: one (n, n) image -> (B, n, n); the adjoint sums over B
    x, y = crandn(rng, (24, 20)), crandn(rng, (4, 24, 20))
    op = ops.FourierShift(shifts, x.shape, np.complex128)
    assert _gap(op.fwd, op.adj, x, y) < 1e-10


def _shift(a, shifts):
    """``a`` (n, n) or (B, n, n) shifted by shifts (B, 2) -> (B, n, n)."""
    return ops.FourierShift(np.asarray(shifts, float), a.shape, np.complex128).fwd(a)


def test_transmit_adjoint_identity():
    rng = np.random.default_rng(2)
    t = random_object(rng, 1, 32)[0]
    x, y = crandn(rng, (3, 32, 32)), crandn(rng, (3, 32, 32))
    op = ops.Transmission(t)
    assert _gap(op.fwd, op.adj, x, y) < 1e-10


def test_fourier_shift_integer_is_roll_and_composes():
    rng = np.random.default_rng(3)
    a = crandn(rng, (32, 32))
    s = _shift(a, [[2.0, -3.0]])[0]
    np.testing.assert_allclose(s, np.roll(a, (2, -3), axis=(0, 1)), atol=1e-12)
    s1 = _shift(a, [[0.3, 0.7]])
    s2 = _shift(s1, [[0.2, -1.2]])[0]
    s12 = _shift(a, [[0.5, -0.5]])[0]
    np.testing.assert_allclose(s2, s12, atol=1e-12)


# ---------------------------------------------------------------------------- physics
@pytest.mark.parametrize("kind", KINDS)
def test_vacuum_slices_equal_one_propagation(kind):
    rng = np.random.default_rng(4)
    n, S = 64, 5
    probe = random_probe(rng, 2, n)
    vol = np.ones((S, 80, 80), dtype=complex)
    spacing = np.array([1e-6, 3e-6, 0.5e-6, 2e-6])
    model = ops.MultisliceModel(vol, probe, spacing, LAM, DX, B64, propagator=kind)
    ew = model.exit_waves(np.array([[3.0, 4.0], [10.0, 0.0]]))
    H = pr.transfer_function(kind, (n, n), DX, LAM, spacing.sum(), dtype=np.complex128)
    ref = ops.Propagation(H).fwd(probe)
    assert rel_l2(ew[0], ref) < 1e-10 and rel_l2(ew[1], ref) < 1e-10


def test_one_slice_is_probe_times_transmission():
    rng = np.random.default_rng(5)
    vol = random_object(rng, 1, 48)
    probe = random_probe(rng, 1, 32)
    corners = np.array([[3, 9], [16, 0]])
    ew = ops.MultisliceModel(vol, probe, 0.0, LAM, DX, B64).exit_waves(corners)
    for b, (cy, cx) in enumerate(corners):
        np.testing.assert_allclose(
            ew[b, 0], probe[0] * vol[0, cy : cy + 32, cx : cx + 32], atol=1e-14
        )


def _smooth_random(rng, shape, sigma_px):
    f = np.fft.fft2(rng.standard_normal(shape))
    fy, fx = pr.frequency_grid(shape, 1.0)
    return np.real(np.fft.ifft2(f * np.exp(-2 * (np.pi * sigma_px) ** 2 * (fy**2 + fx**2))))


def test_thin_sample_equals_projection_approximation():
    rng = np.random.default_rng(6)
    n, S = 64, 8
    delta = 1e-5 * np.abs(_smooth_random(rng, (S, n, n), 1.0))
    beta = 0.1 * delta
    probe = random_probe(rng, 1, n)
    corners = np.zeros((1, 2))

    def compare(total):
        dz = total / S
        t_slices = ops.transmission(delta, beta, LAM, dz, dtype=np.complex128)
        t_proj = ops.transmission(delta.sum(0), beta.sum(0), LAM, dz, dtype=np.complex128)
        multi = ops.MultisliceModel(t_slices, probe, dz, LAM, DX, B64).exit_waves(corners)
        proj = ops.MultisliceModel(t_proj, probe, 0.0, LAM, DX, B64).exit_waves(corners)
        # the multislice exit wave lies (S-1) dz downstream of the entrance plane, where
        # the projection approximation puts it: refer both to the entrance plane
        Hback = pr.fresnel_transfer((n, n), DX, LAM, -(S - 1) * dz, dtype=np.complex128)
        return rel_l2(ops.Propagation(Hback).fwd(multi), proj)

    # depth of field ~ 2 dx^2 / lambda = 2 um: 20 nm total is thin, 50 um is not
    assert compare(20e-9) < 1e-4
    assert compare(50e-6) > 1e-2


def test_lens_focuses_with_consistent_signs():
    # parabolic profile thinner on axis (concave): with delta > 0 the phase
    # -k delta T(r) = -k r^2 / (2 f) is a converging lens under exp(+ikz).
    n = 256
    f = 2e-4
    delta = 1e-6
    y = (np.arange(n) - n // 2) * DX
    r2 = y[:, None] ** 2 + y[None, :] ** 2
    thickness = r2 / (2 * f * delta)
    probe = gaussian_beam((n, n), DX, LAM, 25 * DX, z=0.0)[None] * 1e3  # plane-ish beam
    H = pr.fresnel_transfer((n, n), DX, LAM, f, dtype=np.complex128)
    for sign, expect_focus in ((+1, True), (-1, False)):
        t = ops.transmission(
            sign * delta * np.ones((n, n)), np.zeros((n, n)), LAM, thickness, dtype=np.complex128
        )
        assert np.angle(t[n // 2, n // 2 + 5]) * sign < 0  # phase sign
        out = ops.Propagation(H).fwd(probe[0] * t)
        gain = np.abs(out[n // 2, n // 2]) ** 2 / np.abs(probe[0, n // 2, n // 2]) ** 2
        assert (gain > 10) if expect_focus else (gain < 1)


def test_precision_single_vs_double():
    rng = np.random.default_rng(7)
    vol = random_object(rng, 4, 96)
    probe = random_probe(rng, 2, 64)
    corners = rng.uniform(0, 30, (7, 2))
    i64 = ops.simulate_intensities(vol, probe, corners, 2e-6, LAM, DX, B64)
    i32 = ops.simulate_intensities(vol, probe, corners, 2e-6, LAM, DX, B32)
    assert i32.dtype == np.float32 and i64.dtype == np.float64
    assert rel_l2(i32, i64) < 1e-5


def test_mixed_modes_add_in_intensity_and_energy():
    rng = np.random.default_rng(8)
    vol = np.ones((3, 64, 64), dtype=complex)
    vol[:, 20:40, 20:40] = 0.5 * np.exp(0.3j)
    probe = random_probe(rng, 3, 32)
    corners = rng.uniform(0, 30, (5, 2))
    total = ops.simulate_intensities(vol, probe, corners, 1e-6, LAM, DX, B64)
    parts = sum(
        ops.simulate_intensities(vol, probe[m : m + 1], corners, 1e-6, LAM, DX, B64)
        for m in range(3)
    )
    np.testing.assert_allclose(total, parts, rtol=1e-12, atol=1e-12 * total.max())
    vac = ops.simulate_intensities(np.ones((3, 64, 64)), probe, corners, 1e-6, LAM, DX, B64)
    np.testing.assert_allclose(vac.sum(axis=(1, 2)), np.sum(np.abs(probe) ** 2), rtol=1e-10)
    assert np.all(total.sum(axis=(1, 2)) < vac.sum(axis=(1, 2)))


def test_threads_chunks_and_generic_path_agree():
    rng = np.random.default_rng(9)
    vol = random_object(rng, 3, 80)
    probe = random_probe(rng, 2, 32)
    corners = rng.uniform(0, 47, (23, 2))
    ref = ops.MultisliceModel(vol, probe, 1e-6, LAM, DX, B64, chunk=23).intensities(corners)
    b4 = get_backend(precision="double", workers=4)
    for chunk, threads in ((None, None), (None, 3), (1, 4), (5, 2)):
        model = ops.MultisliceModel(vol, probe, 1e-6, LAM, DX, b4, chunk=chunk, threads=threads)
        got = model.intensities(corners)
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12 * ref.max())
    ci, frac = ops.split_corners(corners)
    shifted = ops.FourierShift(frac[:, None], probe.shape, np.complex128).fwd(probe)
    patches = ops.Patches(ci, 32, vol.shape).fwd(vol)
    H = pr.fresnel_transfer((32, 32), DX, LAM, 1e-6, dtype=np.complex128)
    ew = ops.exit_waves(shifted, patches, H, B64)
    gen = ops.far_field_intensity(ew, workers=1)
    np.testing.assert_allclose(gen, ref, rtol=1e-12, atol=1e-12 * ref.max())


def test_subpixel_shift_of_probe_in_vacuum_and_object_translation():
    rng = np.random.default_rng(10)
    probe = random_probe(rng, 1, 32)
    vac = np.ones((2, 64, 64), dtype=complex)
    i0 = ops.simulate_intensities(vac, probe, np.array([[10.0, 10.0]]), 1e-6, LAM, DX, B64)
    i1 = ops.simulate_intensities(vac, probe, np.array([[10.3, 9.6]]), 1e-6, LAM, DX, B64)
    np.testing.assert_allclose(i1, i0, rtol=1e-9, atol=1e-12 * i0.max())
    vol = random_object(rng, 2, 64)
    c = np.array([[10.3, 12.45]])
    a = ops.simulate_intensities(vol, probe, c, 1e-6, LAM, DX, B64)
    b = ops.simulate_intensities(
        np.roll(vol, (3, -2), axis=(1, 2)), probe, c + [3, -2], 1e-6, LAM, DX, B64
    )
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * a.max())
    # a fractional corner differs from the rounded one on a structured object
    r = ops.simulate_intensities(vol, probe, np.rint(c), 1e-6, LAM, DX, B64)
    assert rel_l2(a, r) > 1e-3


def test_model_input_validation():
    rng = np.random.default_rng(11)
    vol = random_object(rng, 3, 40)
    probe = random_probe(rng, 1, 32)
    with pytest.raises(PhysicsError, match="slice_spacing"):
        ops.MultisliceModel(vol, probe, [1e-6, 1e-6, 1e-6], LAM, DX, B64)
    with pytest.raises(PhysicsError, match="critical distance"):
        ops.MultisliceModel(vol, probe, 1.0, LAM, DX, B64)
    with pytest.raises(PhysicsError, match="outside"):
        ops.simulate_intensities(vol, probe, np.array([[9.0, 0.0]]), 1e-6, LAM, DX, B64)
    with pytest.raises(PhysicsError, match="propagator"):
        ops.MultisliceModel(vol, probe, 1e-6, LAM, DX, B64, propagator="fraunhofer")


def test_transmission_per_slice_thickness():
    d = np.full((3, 4, 4), 1e-6)
    b = np.full((3, 4, 4), 1e-8)
    dz = np.array([1e-7, 2e-7, 3e-7])[:, None, None]
    t = ops.transmission(d, b, LAM, dz, dtype=np.complex128)
    k = 2 * np.pi / LAM
    np.testing.assert_allclose(np.angle(t[:, 0, 0]), -k * 1e-6 * dz.ravel())
    np.testing.assert_allclose(np.abs(t[:, 0, 0]), np.exp(-k * 1e-8 * dz.ravel()))


def test_repeated_fractions_share_shifted_probes():
    # raster scan with a step of 7.5 px: two distinct fractional parts per axis
    rng = np.random.default_rng(12)
    vol = random_object(rng, 2, 96)
    probe = random_probe(rng, 2, 32)
    g = np.arange(8) * 7.5 + 0.25
    corners = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    model = ops.MultisliceModel(vol, probe, 1e-6, LAM, DX, B64, chunk=5)
    shared = model._prepare_shared(ops.split_corners(corners)[1])
    assert shared is not None and shared[0].shape[0] == 4
    together = model.intensities(corners)
    one_by_one = np.stack([model.intensities(c[None])[0] for c in corners])
    np.testing.assert_allclose(together, one_by_one, rtol=1e-12, atol=1e-12 * together.max())


def test_subpixel_corner_direction():
    # a band-limited object seen from corner i + f equals the object Fourier-shifted by -f
    # seen from corner i (intensities are translation invariant)
    rng = np.random.default_rng(13)
    N, n = 96, 48
    ph = _smooth_random(rng, (2, N, N), 4.0)
    vol = np.exp((1j - 0.1) * ph / ph.std())
    y = np.arange(n) - n / 2
    probe = np.exp(-(y[:, None] ** 2 + y[None, :] ** 2) / (2 * 6.0**2))[None].astype(complex)
    f = np.array([0.4, -0.3])
    c = np.array([[20.0, 30.0]]) + f
    got = ops.simulate_intensities(vol, probe, c, 1e-6, LAM, DX, B64)
    vol_shift = _shift(vol, np.repeat(-f[None], 2, axis=0))
    ref = ops.simulate_intensities(vol_shift, probe, np.rint(c), 1e-6, LAM, DX, B64)
    wrong = ops.simulate_intensities(
        _shift(vol, np.repeat(f[None], 2, axis=0)),
        probe,
        np.rint(c),
        1e-6,
        LAM,
        DX,
        B64,
    )
    assert rel_l2(got, ref) < 1e-3 and rel_l2(got, wrong) > 1e-2  # ~3e-5 and ~0.1
