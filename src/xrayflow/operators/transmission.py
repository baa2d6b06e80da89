"""Slice transmission of the projection/multislice model and the operator that applies it."""

from __future__ import annotations

import numpy as np

from xrayflow.backend import array_module
from xrayflow.errors import PhysicsError

__all__ = ["Transmission", "transmission"]


def transmission(delta, beta, wavelength, thickness, xp=None, dtype=np.complex64):
    """Slice transmission ``t = exp(−ikΔz(δ − iβ)) = exp(−ikΔzδ)·exp(−kΔzβ)``, ``k = 2π/λ``.

    ``delta``, ``beta``: arrays (any shape) or scalars; ``wavelength`` λ in m;
    ``thickness`` Δz in m (scalar, or an array broadcasting against ``delta``, e.g.
    ``(S, 1, 1)`` per slice). Computed in float64, returned as ``dtype`` in namespace
    ``xp`` (default: the namespace of ``delta``).
    """
    if xp is None:
        xp = array_module(delta)
    lam = float(wavelength)
    if not lam > 0:
        raise PhysicsError(f"wavelength must be positive, got {wavelength!r}")
    k = 2.0 * np.pi / lam
    d = xp.asarray(delta, dtype=xp.float64)
    b = xp.asarray(beta, dtype=xp.float64)
    dz = xp.asarray(thickness, dtype=xp.float64)
    kdz = k * dz
    t = xp.exp(-kdz * b) * xp.exp(-1j * (kdz * d))
    return t.astype(dtype, copy=False)


class Transmission:
    """``ψ ↦ t·ψ`` elementwise for a slice transmission ``t`` (broadcasting against ``ψ``,
    whose shape is the result's); ``adj``: ``conj(t)·y``. ``out`` receives the result."""

    def __init__(self, t):
        self.t = t

    def fwd(self, x, out=None):
        return array_module(x).multiply(x, self.t, out=out)

    def adj(self, y, out=None):
        xp = array_module(y)
        return xp.multiply(y, xp.conj(self.t), out=out)
