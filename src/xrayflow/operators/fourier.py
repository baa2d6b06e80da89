"""Discrete Fourier transforms of :mod:`xrayflow.backend` as linear operators.

``DFT("fft2", norm="ortho")`` is ``fwd = fft2``, ``adj = ifft2`` with the adjoint
normalisation (``ortho`` ↔ ``ortho``, ``backward`` ↔ ``forward``), so ``adj`` is the exact
adjoint for every ``norm``. :func:`inplace` runs a transform on a buffer it owns.
"""

from __future__ import annotations

import numpy as np

from xrayflow import backend as fftlib
from xrayflow.backend import array_module

__all__ = ["ADJOINT_NORM", "DFT", "inplace"]

ADJOINT_NORM = {"backward": "forward", "forward": "backward", "ortho": "ortho", None: "forward"}
_INVERSE = {"fft": "ifft", "fft2": "ifft2", "fftn": "ifftn"}
_INVERSE.update({v: k for k, v in _INVERSE.items()})


def _ptr(a) -> int:
    if array_module(a) is np:
        return a.__array_interface__["data"][0]
    return a.data.ptr


def inplace(transform, buf, **kw):
    """``buf ← transform(buf, **kw)`` with ``overwrite_x=True``; returns ``buf``."""
    r = transform(buf, overwrite_x=True, **kw)
    if _ptr(r) != _ptr(buf):
        buf[...] = r
    return buf


class DFT:
    """``fwd = xrayflow.backend.<name>`` (``fft``, ``fft2``, ``fftn``, ``ifft``, ...) and
    ``adj`` = its inverse with the adjoint ``norm``.

    Args:
        name: the transform; ``axes`` (``axis=`` for 1D) as keywords, passed to both.
        norm: ``"ortho"`` (the project convention: unitary), ``"backward"``, ``"forward"``.
        workers: CPU FFT threads (None: :func:`xrayflow.backend.fft_workers`).

    ``fwd(x, out=None)`` / ``adj(y, out=None)``: with ``out`` (which may be the input) the
    result is computed in that buffer and returned; without it the input is kept.
    """

    def __init__(self, name: str = "fft2", norm: str | None = "ortho", workers=None, **axes):
        self.name, self.norm, self.workers, self.axes = name, norm, workers, axes
        self._fwd = getattr(fftlib, name)
        self._adj = getattr(fftlib, _INVERSE[name])
        self._adj_norm = ADJOINT_NORM[norm]

    def fwd(self, x, out=None):
        return self._apply(self._fwd, self.norm, x, out)

    def adj(self, y, out=None):
        return self._apply(self._adj, self._adj_norm, y, out)

    def _apply(self, transform, norm, x, out):
        kw = dict(self.axes, norm=norm, workers=self.workers)
        if out is None:
            return transform(x, **kw)
        if out is not x:
            out[...] = x
        return inplace(transform, out, **kw)
