"""PtychoModel (fused multislice) against a plain composition of generic ``ad`` ops."""

from __future__ import annotations

import numpy as np
import pytest

from xrayflow import ad
from xrayflow.modalities.losses import loss_target
from xrayflow.modalities.ptycho2d.model import PtychoModel, split_positions
from xrayflow.optics.propagation import transfer_function

N, SHAPE = 16, (40, 36)


def _reference_loss(obj, probe, ci, shifts, H, target):
    """Textbook model: ad.fourier_shift, gather, multiply, propagate, |fft2|^2, amplitude loss."""
    S, B = obj.shape[0], ci.shape[0]
    pb = ad.fourier_shift(probe, ad.reshape(shifts, B, 1, 2))  # (B, M, n, n)
    patches = ad.gather_patches(obj, ci, (N, N))  # (S, B, n, n)
    psi = pb * ad.reshape(patches[0], B, 1, N, N)
    for j in range(1, S):
        psi = ad.ifft2(ad.fft2(psi) * H) * ad.reshape(patches[j], B, 1, N, N)
    inten = ad.sum(ad.abs2(ad.fft2(psi)), axis=1)
    return ad.sum(ad.abs2(ad.sqrt(inten + 1e-6) - target))


@pytest.mark.parametrize("S", [1, 3])
def test_fused_model_matches_generic_ops(S):
    rng = np.random.default_rng(3)
    obj = np.exp(1j * 0.4 * rng.standard_normal((S, *SHAPE))) * 0.9
    probe = rng.standard_normal((2, N, N)) + 1j * rng.standard_normal((2, N, N))
    ci, fr = split_positions(rng.uniform(0, 19, (5, 2)))
    H = transfer_function("fresnel", (N, N), 1.0, 0.1, 15.0, dtype=np.complex128)
    target = loss_target(rng.poisson(4.0, (5, N, N)).astype(float))
    model = PtychoModel((N, N), SHAPE, n_slices=S, transfer=H)

    def fused(o, p, s):
        return model.loss({"object": o}, p, ci, s, target)

    def ref(o, p, s):
        return _reference_loss(o, p, ci, s, H, target)

    v1, g1 = ad.value_and_grad(fused, argnums=(0, 1, 2))(obj, probe, fr)
    v0, g0 = ad.value_and_grad(ref, argnums=(0, 1, 2))(obj, probe, fr)
    assert v1 == pytest.approx(v0, rel=1e-12)
    for a, b in zip(g1, g0, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * np.abs(b).max())
    # preconditioner side outputs: prod_j |t_j|^2 at the windows, and the shifted probes
    pw = np.prod(np.abs(obj) ** 2, axis=0)
    want = np.stack([pw[r : r + N, c : c + N] for r, c in ci])
    np.testing.assert_allclose(model.last["patch_power"], want, rtol=1e-12)
    assert model.last["probe_shifted"].shape == (5, 2, N, N)


def test_delta_beta_equals_transmission_and_integer_positions():
    rng = np.random.default_rng(4)
    S, k_dz = 2, 3.0
    delta = 0.05 * rng.random((S, *SHAPE))
    beta = 0.01 * rng.random((S, *SHAPE))
    t = np.exp(-1j * k_dz * (delta - 1j * beta))
    probe = rng.standard_normal((1, N, N)) + 1j * rng.standard_normal((1, N, N))
    ci = rng.integers(0, 19, (4, 2))
    H = transfer_function("fresnel", (N, N), 1.0, 0.1, 15.0, dtype=np.complex128)
    m_db = PtychoModel((N, N), SHAPE, S, H, k_dz=k_dz, object_param="delta_beta")
    m_t = PtychoModel((N, N), SHAPE, S, H)
    i_db = m_db.intensities({"delta": delta, "beta": beta}, probe, ci, None).data
    # no shifts: the unshifted probe; zero shifts through the Fourier shift give the same
    i_t = m_t.intensities({"object": t}, probe, ci, np.zeros((4, 2))).data
    np.testing.assert_allclose(i_db, i_t, rtol=1e-10, atol=1e-10 * i_t.max())
    assert m_db.last["probe_shifted"].shape == (1, 1, N, N)

    # the delta gradient is the transmission gradient times dt/d(delta) (chain rule)
    tgt = loss_target(rng.poisson(3.0, (4, N, N)).astype(float))

    def loss_db(d):
        return m_db.loss({"delta": d, "beta": beta}, probe, ci, None, tgt)

    _, gd = ad.value_and_grad(loss_db)(delta)
    _, gt = ad.value_and_grad(lambda o: m_t.loss({"object": o}, probe, ci, None, tgt))(t)
    want = np.real(gt * np.conj(-1j * k_dz * t))
    np.testing.assert_allclose(gd, want, rtol=1e-8, atol=1e-10 * np.abs(want).max())
