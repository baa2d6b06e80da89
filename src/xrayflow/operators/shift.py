"""Sub-pixel Fourier shift of images (periodic, band-limited)."""

from __future__ import annotations

import numpy as np

from xrayflow.backend import array_module, fftfreq, to_numpy

from .base import OperatorError, unbroadcast
from .fourier import DFT

__all__ = ["FourierShift"]


class FourierShift:
    """``y(r) = x(r − s)``: shift of the last two axes by ``s = (sy, sx)`` pixels (positive:
    towards larger indices), ``y = F⁻¹{F{x}·ry·rx}`` with the separable ramps
    ``ry = exp(−2πi fy sy)``, ``rx = exp(−2πi fx sx)``, ``f = fftfreq(n)`` cycles/pixel
    (phases in float64, then cast to ``dtype``). Periodic: content leaving one edge enters
    at the other.

    Args:
        shifts: ``(..., 2)`` pixels; its leading axes broadcast against those of ``x``
            (NumPy rules): a probe ``(M, n, n)`` with shifts ``(B, 1, 2)`` gives
            ``(B, M, n, n)``.
        shape: shape ``(..., h, w)`` of the input ``x``.
        dtype: complex dtype of the result. xp: namespace of the ramps. workers: FFT threads.

    ``adj`` shifts by ``−s`` and sums back to ``shape`` (the adjoint of the broadcast).
    """

    def __init__(self, shifts, shape, dtype=np.complex64, xp=np, workers=None):
        s = np.asarray(to_numpy(shifts), dtype=np.float64)
        if s.ndim < 1 or s.shape[-1] != 2:
            raise OperatorError(f"shifts must have shape (..., 2), got {s.shape}")
        self.shape = tuple(int(v) for v in shape)
        h, w = self.shape[-2:]
        self.out_shape = np.broadcast_shapes(self.shape[:-2], s.shape[:-1]) + (h, w)
        fy, fx = fftfreq(h), fftfreq(w)
        ry = np.exp(-2j * np.pi * s[..., 0, None, None] * fy[:, None]).astype(dtype)
        rx = np.exp(-2j * np.pi * s[..., 1, None, None] * fx[None, :]).astype(dtype)
        self.ry, self.rx = xp.asarray(ry), xp.asarray(rx)  # (..., h, 1), (..., 1, w)
        self.dft = DFT("fft2", "ortho", workers, axes=(-2, -1))

    def fwd(self, x):
        F = self.dft.fwd(x)
        return self.shift_spectrum(F, F if F.shape == self.out_shape else None)

    def shift_spectrum(self, F, out=None):
        """The shifted image from the spectrum ``F = fft2(x)`` (ortho); ``out`` (may be
        ``F``) receives it."""
        xp = array_module(F)
        out = xp.multiply(F, self.ry, out=out)
        xp.multiply(out, self.rx, out=out)
        return self.dft.adj(out, out)

    def adj(self, y):
        xp = array_module(y)
        F = self.dft.fwd(y)
        F *= xp.conj(self.ry)
        F *= xp.conj(self.rx)
        return unbroadcast(self.dft.adj(F, F), self.shape)
