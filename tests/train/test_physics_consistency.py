"""One physics: the torch far fields of the training losses are the operators' (through
``xrayflow.ad``): same values and gradients on the torch path (torch.autograd through the
bridge) as on the xp path (the AD engine), and as torch.fft's own far field."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xrayflow import ad
from xrayflow.modalities.bragg_cdi import training as bragg
from xrayflow.modalities.ptycho2d import training as ptycho


def _inputs(shape, seed):
    rng = np.random.default_rng(seed)
    amp = (0.5 + 0.5 * rng.random(shape)).astype(np.float32)
    phase = (rng.random(shape) - 0.5).astype(np.float32)
    return amp, phase, rng


def _torch_path(fn, amp, phase, weight, *rest):
    """Σ weight · fn(amp, phase, *rest) and its gradients by torch.autograd."""
    a = torch.tensor(amp, requires_grad=True)
    p = torch.tensor(phase, requires_grad=True)
    value = (torch.from_numpy(weight) * fn(a, p, *rest)).sum()
    ga, gp = torch.autograd.grad(value, (a, p))
    return float(value.detach()), ga.numpy(), gp.numpy()


def _xp_path(fn, amp, phase, weight, *rest):
    """The same by the AD engine on NumPy arrays."""
    value, (ga, gp) = ad.value_and_grad(
        lambda a, p: ad.sum(fn(a, p, *rest) * weight), argnums=(0, 1)
    )(amp, phase)
    return float(value), ga, gp


def _check(torch_res, other, rtol):
    np.testing.assert_allclose(torch_res[0], other[0], rtol=rtol)
    for g_t, g_o in zip(torch_res[1:], other[1:], strict=True):
        np.testing.assert_allclose(g_t, g_o, rtol=rtol, atol=rtol * np.abs(g_o).max())


def test_2d_far_field_torch_path_equals_xp_path_and_torch_fft():
    amp, phase, rng = _inputs((3, 16, 16), 0)
    probe = (rng.standard_normal((16, 16)) + 1j * rng.standard_normal((16, 16))).astype(
        np.complex64
    )
    weight = rng.random((3, 16, 16)).astype(np.float32)
    res = _torch_path(ptycho.far_field_amplitude, amp, phase, weight, torch.from_numpy(probe))
    _check(res, _xp_path(ptycho._far_field, amp, phase, weight, probe), 1e-5)

    def torch_fft(a, p, P):  # the far field the training loss computed before (torch.fft)
        return torch.fft.fft2(P * torch.polar(a, p), norm="ortho").abs()

    _check(res, _torch_path(torch_fft, amp, phase, weight, torch.from_numpy(probe)), 1e-4)


@pytest.mark.parametrize("m, n", [(6, 12), (8, 8)])
def test_3d_far_field_torch_path_equals_xp_path_and_torch_fft(m, n):
    amp, phase, rng = _inputs((2, m, m, m), 1)
    weight = rng.random((2, n, n, n)).astype(np.float32)
    res = _torch_path(bragg.far_field_amplitude, amp, phase, weight, n)
    _check(res, _xp_path(bragg._far_field, amp, phase, weight, n), 1e-5)

    def torch_fft(s, p, n):
        lo = (n - s.shape[-1]) // 2
        rho = torch.nn.functional.pad(torch.polar(s, p), (lo, n - s.shape[-1] - lo) * 3)
        return torch.fft.fftn(rho, dim=(-3, -2, -1), norm="ortho").abs()

    _check(res, _torch_path(torch_fft, amp, phase, weight, n), 1e-4)


def test_far_field_gradients_match_finite_differences():
    """Double precision through the bridge: torch.autograd.gradcheck (random inputs, so that
    no far-field amplitude is 0, where |.| has no derivative)."""
    rng = np.random.default_rng(2)
    probe = torch.from_numpy(rng.standard_normal((6, 6)) + 1j * rng.standard_normal((6, 6)))
    a, p, s, q = (
        torch.tensor(rng.random(shape) + offset, requires_grad=True)
        for shape, offset in (
            ((1, 6, 6), 0.5),
            ((1, 6, 6), -0.5),
            ((1, 4, 4, 4), 0.5),
            ((1, 4, 4, 4), -0.5),
        )
    )
    assert torch.autograd.gradcheck(lambda a, p: ptycho.far_field_amplitude(a, p, probe), (a, p))
    assert torch.autograd.gradcheck(lambda s, q: bragg.far_field_amplitude(s, q, 6), (s, q))
