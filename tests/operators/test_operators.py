"""Every operator of xrayflow.operators, from one table: the adjoint identity
<A x, y> = <x, Aᴴ y> (complex64 and complex128), and the gradient of a real loss through
its AD node against central finite differences and torch.autograd (complex128)."""

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from xrayflow import ad
from xrayflow import operators as ops
from xrayflow.backend import get_backend
from xrayflow.optics.propagation import critical_distance, transfer_function

LAM, DX = 1e-10, 1e-8
PIX = (1e-8, 1.2e-8)
CORNERS = np.array([[0, 0], [1, 2], [2, 1], [1, 2], [6, 5]])  # overlapping, one repeated


def crandn(rng, *shape):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


@dataclass
class Case:
    """``op`` acts on ``inputs[0]``; ``ad_fn(*inputs)`` is its AD node (the other inputs,
    e.g. the object of a multislice, are differentiated too), ``torch_fn`` the reference."""

    op: Any
    inputs: list
    ad_fn: Any
    torch_fn: Any


def _torch():
    return pytest.importorskip("torch")


def _t_fft2(x):
    return _torch().fft.fft2(x, norm="ortho")


def _t_ifft2(x):
    return _torch().fft.ifft2(x, norm="ortho")


def _t_windows(o, corners, h, w):
    return _torch().stack([o[..., r : r + h, c : c + w] for r, c in corners], dim=-3)


def _transfer(kind, shape, pixel, dz, dtype, check=True):
    return transfer_function(kind, shape, pixel, LAM, dz, dtype=dtype, check=check)


# ---------------------------------------------------------------- the table
def dft_fft2(rng, dt):
    x = crandn(rng, 3, 6, 5).astype(dt)
    return Case(ops.DFT("fft2"), [x], ad.fft2, _t_fft2)


def dft_fftn_backward(rng, dt):
    x = crandn(rng, 3, 4, 5).astype(dt)
    op = ops.DFT("fftn", "backward", axes=(0, 2))
    return Case(
        op,
        [x],
        lambda a: ad.fftn(a, axes=(0, 2), norm="backward"),
        lambda a: _torch().fft.fftn(a, dim=(0, 2), norm="backward"),
    )


def dft_ifft_forward(rng, dt):
    x = crandn(rng, 4, 3).astype(dt)
    return Case(
        ops.DFT("ifft", "forward", axis=0),
        [x],
        lambda a: ad.ifft(a, axis=0, norm="forward"),
        lambda a: _torch().fft.ifft(a, dim=0, norm="forward"),
    )


def far_field_2d(rng, dt):
    x = crandn(rng, 2, 8, 6).astype(dt)
    op = ops.FarField()
    return Case(op, [x], lambda a: ad.linear(op, a), _t_fft2)


def far_field_3d(rng, dt):
    x = crandn(rng, 4, 5, 6).astype(dt)
    op = ops.FarField3D()
    return Case(
        op,
        [x],
        lambda a: ad.linear(op, a),
        lambda a: _torch().fft.fftn(a, dim=(-3, -2, -1), norm="ortho"),
    )


def _propagation(kind, check):
    def build(rng, dt):
        shape = (12, 10)
        zc = critical_distance(shape, PIX, LAM)
        H = _transfer(kind, shape, PIX, 0.7 * zc if check else 5 * zc, dt, check)
        assert check or np.any(H == 0)  # beyond z_c: band-limited kernel with zeros
        op = ops.Propagation(H)
        x = crandn(rng, 2, *shape).astype(dt)

        def torch_fn(a):
            return _t_ifft2(_t_fft2(a) * _torch().from_numpy(H))

        return Case(op, [x], lambda a: ad.linear(op, a), torch_fn)

    return build


def patches(rng, dt):
    x = crandn(rng, 2, 12, 11).astype(dt)
    return Case(
        ops.Patches(CORNERS, (5, 4), x.shape),
        [x],
        lambda o: ad.gather_patches(o, CORNERS, (5, 4)),
        lambda o: _t_windows(o, CORNERS, 5, 4),
    )


def _t_shift(x, s):
    torch = _torch()
    h, w = x.shape[-2:]
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(w, dtype=torch.float64)[None, :]
    ramp = torch.exp(-2j * math.pi * (fy * s[..., 0, None, None] + fx * s[..., 1, None, None]))
    return _t_ifft2(_t_fft2(x) * ramp)


def _shift(shifts_shape, x_shape):
    def build(rng, dt):
        x = crandn(rng, *x_shape).astype(dt)
        s = rng.uniform(-2.5, 2.5, shifts_shape)
        return Case(ops.FourierShift(s, x.shape, dt), [x, s], ad.fourier_shift, _t_shift)

    return build


def transmission(rng, dt):
    t = ops.transmission(rng.random((8, 6)), rng.random((8, 6)), LAM, 2e-8, dtype=dt)
    x = crandn(rng, 3, 8, 6).astype(dt)
    op = ops.Transmission(t)
    return Case(op, [x], lambda a: ad.linear(op, a), lambda a: a * _torch().from_numpy(t))


def pattern_projection(rng, dt):
    P = rng.random((7, 6, 5)).astype(np.finfo(dt).dtype)
    w = rng.uniform(0.5, 2.0, 3)
    x = crandn(rng, 3, 6, 5).astype(dt)
    op = ops.PatternProjection(P, w)

    def torch_fn(a):
        t = _torch()
        return t.einsum("krc,erc->ke", t.from_numpy(P).to(a.dtype), a) * t.from_numpy(w)

    return Case(op, [x], lambda a: ad.linear(op, a), torch_fn)


def _t_rotate(v, angle):
    """Bilinear rotation in the (z, x) plane with torch's grid_sample (zeros outside)."""
    torch = _torch()
    Z, _, X = v.shape
    c0, c1 = (Z - 1) / 2, (X - 1) / 2
    p, q = torch.meshgrid(
        torch.arange(Z, dtype=torch.float64), torch.arange(X, dtype=torch.float64), indexing="ij"
    )
    ca, sa = math.cos(angle), math.sin(angle)
    s0 = ca * (p - c0) + sa * (q - c1) + c0
    s1 = -sa * (p - c0) + ca * (q - c1) + c1
    grid = torch.stack([s1 / (X - 1) * 2 - 1, s0 / (Z - 1) * 2 - 1], dim=-1)[None]
    inp = v.permute(1, 0, 2)[None]  # (1, Y, Z, X): channels y, image (z, x)

    def sample(a):
        return torch.nn.functional.grid_sample(
            a, grid, mode="bilinear", padding_mode="zeros", align_corners=True
        )[0].permute(1, 0, 2)

    return torch.complex(sample(inp.real), sample(inp.imag))


def rotation(rng, dt):
    x = crandn(rng, 6, 3, 7).astype(dt)
    angle = 0.37
    return Case(
        ops.Rotation(x.shape, angle, (0, 2), np, dt),
        [x],
        lambda v: ad.rotate_volume(v, angle, axes=(0, 2)),
        lambda v: _t_rotate(v, angle),
    )


def _t_multislice(probe, slices, Hs):
    """Multislice in torch: ``slices(j)`` (B, n, n), probe (1 or B, M, n, n)."""
    psi = probe
    for j in range(len(Hs) + 1):
        psi = psi * slices(j)[:, None]
        if j < len(Hs):
            psi = _t_ifft2(_t_fft2(psi) * _torch().from_numpy(Hs[j]))
    return psi


def _multislice(S, kind):
    def build(rng, dt):
        n, M = 8, 2
        obj = np.exp(1j * 0.5 * crandn(rng, S, 14, 13).real - 0.1 * rng.random((S, 14, 13)))
        obj = obj.astype(dt)
        probe = crandn(rng, M, n, n).astype(dt)
        H = _transfer(kind, (n, n), DX, 3e-6, dt) if S > 1 else None
        op = ops.Multislice(ops.ObjectWindows(obj, CORNERS, (n, n)), H, probe.shape, chunk=2)

        def ad_fn(p, o):
            return ad.multislice_object(p, o, CORNERS, H, chunk=2)

        def torch_fn(p, o):
            Hs = [H] * (S - 1)
            return _t_multislice(p[None], lambda j: _t_windows(o[j], CORNERS, n, n), Hs)

        return Case(op, [probe, obj], ad_fn, torch_fn)

    return build


def multislice_patches_per_position(rng, dt):
    S, B, M, n = 3, 5, 2, 8
    T = np.exp(1j * crandn(rng, S, B, n, n).real).astype(dt)
    probes = crandn(rng, B, M, n, n).astype(dt)
    Hs = np.stack([_transfer(k, (n, n), DX, 2e-6, dt) for k in ("fresnel", "angular_spectrum")])
    op = ops.Multislice(ops.PatchStack(T), Hs, probes.shape, chunk=2, reversible=False)
    return Case(
        op,
        [probes, T],
        lambda p, t: ad.multislice(p, t, Hs, chunk=2),
        lambda p, t: _t_multislice(p, lambda j: t[j], list(Hs)),
    )


CASES = {
    "dft_fft2": dft_fft2,
    "dft_fftn_backward_axes": dft_fftn_backward,
    "dft_ifft_forward": dft_ifft_forward,
    "far_field_2d": far_field_2d,
    "far_field_3d": far_field_3d,
    "fresnel": _propagation("fresnel", True),
    "fresnel_band_limited": _propagation("fresnel", False),
    "angular_spectrum": _propagation("angular_spectrum", True),
    "angular_spectrum_band_limited": _propagation("angular_spectrum", False),
    "patches_overlapping": patches,
    "fourier_shift_batched": _shift((3, 1, 2), (2, 8, 6)),
    "fourier_shift_broadcast": _shift((4, 2), (8, 6)),
    "transmission": transmission,
    "pattern_projection": pattern_projection,
    "rotation": rotation,
    "multislice_S1_fresnel": _multislice(1, "fresnel"),
    "multislice_S3_fresnel": _multislice(3, "fresnel"),
    "multislice_S1_angular_spectrum": _multislice(1, "angular_spectrum"),
    "multislice_S3_angular_spectrum": _multislice(3, "angular_spectrum"),
    "multislice_patches_per_position": multislice_patches_per_position,
}
TOL = {np.complex64: 2e-6, np.complex128: 1e-13}


def _case(name, dt, seed=0):
    return CASES[name](np.random.default_rng(seed), dt)


# ---------------------------------------------------------------- (a) adjoint identity
@pytest.mark.parametrize("dt", [np.complex64, np.complex128], ids=["c64", "c128"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_adjoint_identity(name, dt):
    case = _case(name, dt)
    x = case.inputs[0]
    Ax = case.op.fwd(x)
    rng = np.random.default_rng(1)
    y = crandn(rng, *Ax.shape).astype(dt)
    Ahy = case.op.adj(y)
    assert Ax.dtype == dt and Ahy.dtype == dt and Ahy.shape == x.shape
    lhs = np.vdot(Ax.astype(np.complex128), y)
    rhs = np.vdot(x.astype(np.complex128), Ahy)
    scale = np.linalg.norm(Ax) * np.linalg.norm(y)
    assert abs(lhs - rhs) <= TOL[dt] * scale, (name, abs(lhs - rhs) / scale)


# ---------------------------------------------------------------- (b) gradients
def _loss_pieces(case):
    out = case.ad_fn(*case.inputs).data
    rng = np.random.default_rng(2)
    C = crandn(rng, *out.shape)
    W = rng.random(out.shape)

    def loss_ad(*args):
        y = case.ad_fn(*args)
        return ad.sum(W * ad.abs2(y)) + ad.sum(ad.real(ad.conj(C) * y))

    def loss_torch(*args):
        torch = _torch()
        y = case.torch_fn(*args)
        Wt, Ct = torch.from_numpy(W), torch.from_numpy(C)
        return (Wt * (y.real**2 + y.imag**2)).sum() + (Ct.conj() * y).real.sum()

    return loss_ad, loss_torch


def _grads(case, loss_ad):
    argnums = tuple(range(len(case.inputs)))
    return ad.value_and_grad(loss_ad, argnums)(*case.inputs)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient_vs_central_differences(name):
    case = _case(name, np.complex128)
    loss_ad, _ = _loss_pieces(case)
    _, grads = _grads(case, loss_ad)
    rng = np.random.default_rng(3)
    h = 1e-6
    for i, (x, g) in enumerate(zip(case.inputs, grads, strict=True)):
        assert g.shape == x.shape and g.dtype == x.dtype
        for _ in range(3):  # directional derivatives: dL = Re sum conj(g) d
            d = rng.standard_normal(x.shape)
            if np.iscomplexobj(x):
                d = d + 1j * rng.standard_normal(x.shape)

            def at(step, i=i, x=x, d=d):
                args = list(case.inputs)
                args[i] = x + step * d
                return float(loss_ad(*args).data)

            fd = (at(h) - at(-h)) / (2 * h)
            exact = float(np.real(np.vdot(g, d)))
            scale = np.linalg.norm(g) * np.linalg.norm(d)
            assert abs(fd - exact) <= 1e-7 * scale, (name, i, fd, exact)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient_vs_torch(name):
    torch = _torch()
    case = _case(name, np.complex128)
    loss_ad, loss_torch = _loss_pieces(case)
    val, grads = _grads(case, loss_ad)
    tin = [torch.tensor(x, requires_grad=True) for x in case.inputs]
    tl = loss_torch(*tin)
    tl.backward()
    assert abs(val - tl.item()) <= 1e-11 * max(1.0, abs(tl.item()))
    for g, t in zip(grads, tin, strict=True):
        ref = t.grad.resolve_conj().numpy()
        assert np.abs(g - ref).max() <= 1e-11 * np.abs(ref).max(), name


# ---------------------------------------------------------------- multislice specifics
def test_multislice_adj_is_the_probe_gradient_of_vjp():
    case = _case("multislice_S3_fresnel", np.complex128)
    op, (probe, _) = case.op, case.inputs
    y = op.fwd(probe, keep=True)
    g = crandn(np.random.default_rng(4), *y.shape)
    gp, go = op.vjp(g)
    np.testing.assert_array_equal(op.adj(g), gp)
    assert go.shape == case.inputs[1].shape
    with pytest.raises(RuntimeError, match="keep=True"):
        ops.Multislice(op.src, op.engine.gaps[0].H, probe.shape).vjp(g)


@pytest.mark.parametrize("dt", [np.complex64, np.complex128], ids=["c64", "c128"])
@pytest.mark.parametrize("S", [1, 3])
@pytest.mark.parametrize("kind", ["fresnel", "angular_spectrum"])
def test_simulation_and_ad_forward_give_the_same_intensities(kind, S, dt):
    """MultisliceModel.intensities and ad.multislice_object + ad.far_field_intensity (with
    the probe shifted by ad.fourier_shift) on the same inputs, fractional corners."""
    rng = np.random.default_rng(5)
    backend = get_backend("cpu", "single" if dt == np.complex64 else "double", workers=2)
    n, M, dz = 32, 2, 1e-6
    vol = ops.transmission(
        1e-5 * rng.random((S, 60, 64)), 1e-7 * rng.random((S, 60, 64)), LAM, dz, dtype=dt
    )
    y = np.arange(n) - n / 2
    env = np.exp(-(y[:, None] ** 2 + y[None, :] ** 2) / (2 * (n / 6) ** 2))
    probe = (env * crandn(rng, M, n, n)).astype(dt)
    corners = rng.uniform(0, 27, (21, 2))
    model = ops.MultisliceModel(vol, probe, dz, LAM, DX, backend, propagator=kind)
    I_sim = model.intensities(corners)
    ci, frac = ops.split_corners(corners)
    H = _transfer(kind, (n, n), DX, dz, dt) if S > 1 else None
    pb = ad.fourier_shift(probe, frac[:, None], backend=backend)  # (B, M, n, n)
    psi = ad.multislice_object(pb, vol, ci, H, backend=backend)
    I_ad = ad.far_field_intensity(psi, backend=backend).data
    assert I_sim.dtype == I_ad.dtype == np.finfo(dt).dtype
    assert np.abs(I_sim - I_ad).max() <= 1e-6 * np.abs(I_ad).max()
