"""Every AD primitive against central finite differences and torch.autograd (complex128)."""

import math

import numpy as np
import pytest
from ad_testutil import crandn, fd_grad, rel_err

from xrayflow import ad

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(2024)


def _inp(kind, shape):
    if kind == "c":
        return crandn(RNG, *shape)
    if kind == "r":
        return RNG.standard_normal(shape)
    if kind == "p":  # positive real
        return RNG.random(shape) + 0.5
    if kind == "cp":  # complex with positive real part (away from branch cuts)
        return (RNG.random(shape) + 0.5) + 0.5j * RNG.standard_normal(shape)
    raise ValueError(kind)


CORNERS = np.array([[0, 0], [1, 2], [2, 1], [0, 2]])
SHIFTS = np.array([[0.3, -1.2], [2.5, 0.7], [-0.4, 0.1]])


def _t_gather(o, corners, shape):
    return torch.stack([o[..., r : r + shape[0], c : c + shape[1]] for r, c in corners], dim=-3)


def _t_fshift(x, s):
    h, w = x.shape[-2:]
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(w, dtype=torch.float64)[None, :]
    ramp = torch.exp(-2j * math.pi * (fy * s[..., 0, None, None] + fx * s[..., 1, None, None]))
    return torch.fft.ifft2(torch.fft.fft2(x, norm="ortho") * ramp, norm="ortho")


# name: (ad function, torch function, input kinds+shapes)
CASES = {
    "add_broadcast": (lambda a, b: a + b, lambda a, b: a + b, [("c", (3, 1, 4)), ("c", (2, 4))]),
    "add_real_complex": (lambda a, b: a + b, lambda a, b: a + b, [("r", (2, 3)), ("c", (2, 3))]),
    "sub": (lambda a, b: a - b, lambda a, b: a - b, [("c", (2, 3)), ("c", (3,))]),
    "mul": (lambda a, b: a * b, lambda a, b: a * b, [("c", (2, 3)), ("c", (2, 1))]),
    "mul_real": (lambda a, b: a * b, lambda a, b: a * b, [("r", (2, 3)), ("c", (2, 3))]),
    "div": (lambda a, b: a / b, lambda a, b: a / b, [("c", (2, 3)), ("cp", (2, 3))]),
    "scalar_ops": (
        lambda a: (2.0 - a) * (1 + 2j) / 3.0 + 1 / (a + 4.0),
        lambda a: (2.0 - a) * (1 + 2j) / 3.0 + 1 / (a + 4.0),
        [("cp", (2, 3))],
    ),
    "neg": (lambda a: -a, lambda a: -a, [("c", (4,))]),
    "pow3": (lambda a: a**3, lambda a: a**3, [("c", (2, 3))]),
    "pow2": (lambda a: a**2, lambda a: a**2, [("c", (2, 3))]),
    "pow_half_real": (lambda a: a**0.5, lambda a: a**0.5, [("p", (2, 3))]),
    "rpow": (lambda a: 2.0**a, lambda a: 2.0**a, [("r", (5,))]),
    "exp": (ad.exp, torch.exp, [("c", (2, 3))]),
    "log": (ad.log, torch.log, [("cp", (2, 3))]),
    "sqrt": (ad.sqrt, torch.sqrt, [("cp", (2, 3))]),
    "sin": (ad.sin, torch.sin, [("c", (2, 3))]),
    "cos": (ad.cos, torch.cos, [("r", (2, 3))]),
    "abs": (ad.abs, torch.abs, [("c", (2, 3))]),
    "abs_real": (ad.abs, torch.abs, [("r", (2, 3))]),
    "abs2": (ad.abs2, lambda a: a.real**2 + a.imag**2, [("c", (2, 3))]),
    "conj": (ad.conj, lambda a: a.conj(), [("c", (2, 3))]),
    "real": (ad.real, lambda a: a.real, [("c", (2, 3))]),
    "imag": (ad.imag, lambda a: a.imag, [("c", (2, 3))]),
    "angle": (ad.angle, torch.angle, [("c", (2, 3))]),
    "expi": (ad.expi, lambda p: torch.exp(1j * p), [("r", (2, 3))]),
    "polar": (ad.polar, lambda a, p: a * torch.exp(1j * p), [("p", (2, 3)), ("r", (2, 3))]),
    "sum_axis": (lambda a: ad.sum(a, axis=1), lambda a: a.sum(dim=1), [("c", (2, 3, 4))]),
    "sum_keep": (
        lambda a: ad.sum(a, axis=(0, 2), keepdims=True),
        lambda a: a.sum(dim=(0, 2), keepdim=True),
        [("c", (2, 3, 4))],
    ),
    "mean": (lambda a: ad.mean(a, axis=-1), lambda a: a.mean(dim=-1), [("c", (2, 3, 4))]),
    "reshape": (lambda a: a.reshape(6, 4), lambda a: a.reshape(6, 4), [("c", (2, 3, 4))]),
    "transpose": (
        lambda a: ad.transpose(a, (2, 0, 1)),
        lambda a: a.permute(2, 0, 1),
        [("c", (2, 3, 4))],
    ),
    "moveaxis": (
        lambda a: ad.moveaxis(a, 0, -1),
        lambda a: torch.movedim(a, 0, -1),
        [("c", (2, 3, 4))],
    ),
    "broadcast_to": (
        lambda a: ad.broadcast_to(a, (2, 3, 4)),
        lambda a: a.expand(2, 3, 4),
        [("c", (3, 1))],
    ),
    "getitem_slices": (lambda a: a[1:, ::2, 1], lambda a: a[1:, ::2, 1], [("c", (3, 4, 2))]),
    "getitem_advanced": (
        lambda a: a[np.array([0, 2, 0])],
        lambda a: a[torch.tensor([0, 2, 0])],
        [("c", (3, 4))],
    ),
    "pad": (
        lambda a: ad.pad(a, ((1, 2), (0, 3))),
        lambda a: torch.nn.functional.pad(a, (0, 3, 1, 2)),
        [("c", (2, 3, 4))],
    ),
    "crop": (
        lambda a: ad.crop(a, (2, 3)),
        lambda a: a[..., 1:3, 1:4],
        [("c", (2, 4, 5))],
    ),
    "crop_start": (
        lambda a: ad.crop(a, (2, 3), start=(0, 2)),
        lambda a: a[..., 0:2, 2:5],
        [("c", (4, 5))],
    ),
    "stack": (
        lambda a, b: ad.stack([a, b, a], axis=1),
        lambda a, b: torch.stack([a, b, a], dim=1),
        [("c", (2, 3)), ("r", (2, 3))],
    ),
    "concatenate": (
        lambda a, b: ad.concatenate([a, b], axis=-1),
        lambda a, b: torch.cat([a, b], dim=-1),
        [("c", (2, 3)), ("c", (2, 2))],
    ),
    "where": (
        lambda a, b: ad.where(np.array([[True, False, True]]), a, b),
        lambda a, b: torch.where(torch.tensor([[True, False, True]]), a, b),
        [("c", (2, 3)), ("c", (2, 3))],
    ),
    "clip": (lambda a: ad.clip(a, -0.5, 0.7), lambda a: a.clamp(-0.5, 0.7), [("r", (3, 4))]),
    "maximum": (ad.maximum, torch.maximum, [("r", (3, 4)), ("r", (3, 4))]),
    "fft": (
        lambda a: ad.fft(a, norm="backward"),
        lambda a: torch.fft.fft(a, norm="backward"),
        [("c", (2, 5))],
    ),
    "ifft": (
        lambda a: ad.ifft(a, axis=0, norm="ortho"),
        lambda a: torch.fft.ifft(a, dim=0, norm="ortho"),
        [("c", (4, 3))],
    ),
    "fftn": (
        lambda a: ad.fftn(a, norm="forward"),
        lambda a: torch.fft.fftn(a, norm="forward"),
        [("c", (3, 4, 2))],
    ),
    "ifftn": (
        lambda a: ad.ifftn(a, axes=(0, 2), norm="backward"),
        lambda a: torch.fft.ifftn(a, dim=(0, 2), norm="backward"),
        [("c", (3, 4, 2))],
    ),
    "fft2_real_input": (ad.fft2, lambda a: torch.fft.fft2(a, norm="ortho"), [("r", (4, 4))]),
    "gather_patches": (
        lambda o: ad.gather_patches(o, CORNERS, (3, 2)),
        lambda o: _t_gather(o, CORNERS, (3, 2)),
        [("c", (2, 5, 5))],
    ),
    "fourier_shift": (
        ad.fourier_shift,
        _t_fshift,
        [("c", (1, 4, 6)), ("r", (3, 1, 2))],
    ),
}
for _norm in ("ortho", "backward", "forward"):
    CASES[f"fft2_{_norm}"] = (
        lambda a, n=_norm: ad.fft2(a, norm=n),
        lambda a, n=_norm: torch.fft.fft2(a, norm=n),
        [("c", (2, 4, 3))],
    )
    CASES[f"ifft2_{_norm}"] = (
        lambda a, n=_norm: ad.ifft2(a, norm=n),
        lambda a, n=_norm: torch.fft.ifft2(a, norm=n),
        [("c", (2, 3, 4))],
    )


def _make_case(name):
    fad, ftorch, specs = CASES[name]
    inputs = [_inp(k, s) for k, s in specs]
    y = fad(*inputs)
    y = y.data
    C = crandn(RNG, *y.shape) if np.iscomplexobj(y) else RNG.standard_normal(y.shape)
    W = RNG.random(y.shape)

    def loss_ad(*args):
        out = fad(*args)
        return ad.sum(ad.real(ad.conj(C) * out)) + ad.sum(W * ad.abs2(out))

    def loss_torch(*args):
        out = ftorch(*args)
        Ct = torch.from_numpy(C)
        Wt = torch.from_numpy(W)
        if out.is_complex():
            return (Ct.conj() * out).real.sum() + (Wt * (out.real**2 + out.imag**2)).sum()
        return (Ct * out).sum() + (Wt * out**2).sum()

    return inputs, loss_ad, loss_torch


@pytest.mark.parametrize("name", sorted(CASES))
def test_primitive_vs_finite_differences(name):
    inputs, loss_ad, _ = _make_case(name)
    argnums = tuple(range(len(inputs)))
    _, grads = ad.value_and_grad(loss_ad, argnums)(*inputs)
    for i, (x, g) in enumerate(zip(inputs, grads, strict=True)):
        assert g.shape == x.shape and g.dtype == x.dtype

        def f(xi, i=i):
            args = list(inputs)
            args[i] = xi
            return float(loss_ad(*args).data)

        assert rel_err(g, fd_grad(f, x)) < 1e-6, (name, i)


@pytest.mark.parametrize("name", sorted(CASES))
def test_primitive_vs_torch(name):
    inputs, loss_ad, loss_torch = _make_case(name)
    argnums = tuple(range(len(inputs)))
    val, grads = ad.value_and_grad(loss_ad, argnums)(*inputs)
    tin = [torch.tensor(x, requires_grad=True) for x in inputs]
    tl = loss_torch(*tin)
    tl.backward()
    assert abs(val - tl.item()) <= 1e-10 * max(1.0, abs(tl.item()))
    for g, t in zip(grads, tin, strict=True):
        assert rel_err(g, t.grad.resolve_conj().numpy()) < 1e-10, name


def test_reference_values_from_notes():
    _, g = ad.value_and_grad(lambda z: ad.abs2(z))(np.array(3 + 4j))
    assert g == 6 + 8j
    z = np.array([1 + 2j, 3 - 1j, 0.5 + 0.5j, -1])
    _, g = ad.value_and_grad(lambda z: ad.abs2(ad.fft(z, norm="backward")[1]))(z)
    np.testing.assert_allclose(g, [-1 - 5j, 5 - 1j, 1 + 5j, -5 + 1j], atol=1e-12)


def test_real_input_gradient_is_real():
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    _, g = ad.value_and_grad(lambda x: ad.sum(ad.abs(ad.fft2(x * (1 + 2j)))))(x)
    assert g.dtype == np.float32


def test_broadcast_reduction():
    a = crandn(RNG, 1, 3)
    b = crandn(RNG, 4, 1)
    _, (ga, gb) = ad.value_and_grad(lambda a, b: ad.sum(ad.abs2(a * b)), (0, 1))(a, b)
    np.testing.assert_allclose(ga, (2 * a * np.abs(b) ** 2).sum(axis=0, keepdims=True))
    np.testing.assert_allclose(gb, (2 * b * np.abs(a) ** 2).sum(axis=1, keepdims=True))
    # scalar-shaped parameter broadcast against a matrix
    s = np.array(0.5 + 0.2j)
    _, gs = ad.value_and_grad(lambda s: ad.sum(ad.abs2(s * a)))(s)
    assert gs.shape == () and np.isclose(gs, 2 * s * np.sum(np.abs(a) ** 2))


def test_abs_gradient_zero_at_zero():
    _, g = ad.value_and_grad(lambda z: ad.sum(ad.abs(z)))(np.array([0j, 3 + 4j]))
    np.testing.assert_allclose(g, [0, 0.6 + 0.8j])


def test_tensor_backward_accumulates_on_leaves():
    p = ad.param(np.array([1.0 + 1j, 2.0]))
    c = ad.const(np.array([2.0, 3.0]))
    loss = ad.sum(ad.abs2(p * c))
    loss.backward()
    np.testing.assert_allclose(p.grad, 2 * p.data * c.data**2)
    assert c.grad is None


def test_gather_patches_overlaps_accumulate():
    obj = np.zeros((6, 6), complex)
    corners = np.array([[0, 0], [1, 1], [1, 1]])
    _, g = ad.value_and_grad(lambda o: ad.sum(ad.real(ad.gather_patches(o, corners, (3, 3)))))(obj)
    expect = np.zeros((6, 6))
    for r, c in corners:
        expect[r : r + 3, c : c + 3] += 1
    np.testing.assert_array_equal(g.real, expect)
    with pytest.raises(ValueError):
        ad.gather_patches(obj, np.array([[4, 0]]), (3, 3))
    with pytest.raises(ValueError):
        ad.gather_patches(obj, np.array([[0.5, 0]]), (3, 3))


def test_fourier_shift_integer_is_roll():
    x = crandn(RNG, 5, 6)
    y = ad.fourier_shift(x, np.array([2.0, -1.0])).data
    np.testing.assert_allclose(y, np.roll(x, (2, -1), axis=(0, 1)), atol=1e-12)


def test_fourier_shift_probe_modes_broadcast():
    probe = crandn(RNG, 2, 4, 4)
    shifts = RNG.standard_normal((3, 1, 2))
    y = ad.fourier_shift(probe, shifts)
    assert y.shape == (3, 2, 4, 4)
    _, (gp, gs) = ad.value_and_grad(
        lambda p, s: ad.sum(ad.abs2(ad.fourier_shift(p, s)[..., 0, :])), (0, 1)
    )(probe, shifts)
    assert gp.shape == probe.shape and gs.shape == shifts.shape and gs.dtype == np.float64


def test_rotate_volume_matches_scipy_and_adjoint():
    ndi = pytest.importorskip("scipy.ndimage")
    v = RNG.standard_normal((7, 3, 9))
    a = 0.37
    y = ad.rotate_volume(v, a).data
    ca, sa = math.cos(a), math.sin(a)
    c = (np.array(v.shape) - 1) / 2
    M = np.array([[ca, 0, sa], [0, 1, 0], [-sa, 0, ca]])
    ref = ndi.affine_transform(v, M, offset=c - M @ c, order=1, mode="grid-constant", cval=0)
    np.testing.assert_allclose(y, ref, atol=1e-12)
    # exact adjoint: <A x, y> = <x, A^T y>
    x = crandn(RNG, 7, 3, 9)
    w = crandn(RNG, 7, 3, 9)
    _, gx = ad.value_and_grad(lambda x: ad.sum(ad.real(ad.conj(w) * ad.rotate_volume(x, a))))(x)
    lhs = np.vdot(w, ad.rotate_volume(x, a).data)
    assert abs(np.vdot(gx, x) - lhs) < 1e-10 * abs(lhs)
    # 90 degrees is rot90 in the (z, x) plane
    cube = RNG.standard_normal((5, 2, 5))
    np.testing.assert_allclose(
        ad.rotate_volume(cube, np.pi / 2).data, np.rot90(cube, 1, axes=(0, 2)), atol=1e-12
    )


def test_rotate_volume_finite_differences():
    v = crandn(RNG, 5, 2, 4)
    W = RNG.random((5, 2, 4))

    def loss(v):
        return ad.sum(W * ad.abs2(ad.rotate_volume(v, 0.6, axes=(0, 2))))

    _, g = ad.value_and_grad(loss)(v)
    assert rel_err(g, fd_grad(lambda x: float(loss(x).data), v)) < 1e-6


def test_value_and_grad_errors():
    with pytest.raises(TypeError):
        ad.value_and_grad(lambda z: ad.sum(z))(np.ones(3, complex))
    with pytest.raises(ValueError):
        ad.value_and_grad(lambda z: ad.abs(z))(np.ones(3, complex))


@pytest.mark.parametrize("recompute", [True, False])
def test_far_field_intensity_vs_torch(recompute):
    psi = crandn(RNG, 3, 2, 4, 4)
    W = RNG.random((3, 4, 4))

    def loss(p):
        return ad.sum(W * ad.sqrt(ad.far_field_intensity(p, recompute=recompute) + 0.1))

    _, g = ad.value_and_grad(loss)(psi)
    t = torch.tensor(psi, requires_grad=True)
    F = torch.fft.fft2(t, norm="ortho")
    (torch.from_numpy(W) * torch.sqrt((F.abs() ** 2).sum(1) + 0.1)).sum().backward()
    assert rel_err(g, t.grad.numpy()) < 1e-10
    assert rel_err(g, fd_grad(lambda x: float(loss(x).data), psi)) < 1e-6


def test_gather_patches_int_shape_and_has_aux():
    obj = crandn(RNG, 6, 7)
    corners = np.array([[0, 1], [2, 3]])
    a = ad.gather_patches(obj, corners, 3).data
    b = ad.gather_patches(obj, corners, (3, 3)).data
    np.testing.assert_array_equal(a, b)
    (val, aux), g = ad.value_and_grad(lambda o: (ad.sum(ad.abs2(o)), "aux"), has_aux=True)(
        ad.const(obj)
    )
    assert aux == "aux" and np.isclose(val, np.sum(np.abs(obj) ** 2))
    np.testing.assert_allclose(g, 2 * obj)
