"""torch bridge: gradcheck through a physics loss, zero-copy DLPack exchange."""

import numpy as np
import pytest

from xrayflow import ad

torch = pytest.importorskip("torch")
from xrayflow.ad.torch_bridge import as_torch_function, from_xp, to_xp  # noqa: E402


def test_zero_copy_both_ways():
    t = torch.randn(3, 4, dtype=torch.complex128)
    a = to_xp(t)
    assert isinstance(a, np.ndarray) and np.shares_memory(a, t.numpy())
    b = np.ones((2, 5), dtype=np.complex64)
    tb = from_xp(b)
    assert np.shares_memory(b, tb.numpy())


def test_gradcheck_far_field_loss():
    rng = np.random.default_rng(0)
    amp = rng.random((2, 4, 4))
    f = as_torch_function(lambda z: ad.sum((ad.abs(ad.fft2(z)) - amp) ** 2))
    z = torch.randn(2, 4, 4, dtype=torch.complex128, requires_grad=True)
    assert torch.autograd.gradcheck(f, (z,))


def test_gradcheck_multislice_model_complex_output():
    rng = np.random.default_rng(1)
    n = 4
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.fftfreq(n)[None, :]
    H = np.exp(-1j * np.pi * 1.7 * (fx**2 + fy**2))
    f = as_torch_function(lambda p, t: ad.multislice(p, t, H))
    p = torch.randn(1, n, n, dtype=torch.complex128, requires_grad=True)
    t = torch.tensor(np.exp(1j * rng.standard_normal((2, 2, n, n))), requires_grad=True)
    assert torch.autograd.gradcheck(f, (p, t))


def test_gradient_matches_native_torch_and_mixed_inputs():
    rng = np.random.default_rng(2)
    amp = torch.tensor(rng.random((4, 4)))
    f = as_torch_function(lambda z, w, a: ad.sum((ad.abs(ad.fft2(z * w)) - a) ** 2))
    z = torch.randn(4, 4, dtype=torch.complex128, requires_grad=True)
    w = torch.rand(4, 4, dtype=torch.float64, requires_grad=True)
    f(z, w, amp).backward()
    z2 = z.detach().clone().requires_grad_()
    w2 = w.detach().clone().requires_grad_()
    ((torch.fft.fft2(z2 * w2, norm="ortho").abs() - amp) ** 2).sum().backward()
    assert torch.allclose(z.grad, z2.grad, rtol=1e-12, atol=1e-12)
    assert torch.allclose(w.grad, w2.grad, rtol=1e-12, atol=1e-12)
    assert w.grad.dtype == torch.float64
