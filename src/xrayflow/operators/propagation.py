"""Free-space propagation operators: Fraunhofer far field and transfer-function propagation.

Conventions (docs/physics.md): arrays ``(..., y, x)``, unitary FFTs (``norm="ortho"``),
zero frequency at index 0. Transfer functions (Fresnel, angular spectrum) and the sampling
limits come from :mod:`xrayflow.optics.propagation`.
"""

from __future__ import annotations

import numpy as np

from xrayflow.backend import array_module

from .fourier import DFT

__all__ = ["FarField", "Propagation", "far_field_intensity", "intensity"]


class FarField(DFT):
    """Fraunhofer far field ``Ψ = F{ψ}`` over the last two axes: ortho 2D FFT, zero
    frequency at index (0, 0); ``adj`` = ``F⁻¹`` (unitary). The phase factors of the
    Fraunhofer integral (``exp(ikz)``, the quadratic detector phase) are dropped: they do not
    change intensities. Detector pixel k collects ``f = k/(NΔx)`` cycles/m."""

    def __init__(self, workers=None):
        super().__init__("fft2", "ortho", workers, axes=(-2, -1))


class Propagation:
    """Free-space propagation ``ψ ↦ F⁻¹{H·F{ψ}}`` over the last two axes (unitary FFTs).

    Args:
        H: transfer function ``(ny, nx)`` on the FFT grid (zero frequency at index 0), e.g.
            :func:`xrayflow.optics.propagation.transfer_function` (Fresnel or angular
            spectrum) for a distance Δz in m; broadcasts against ``ψ`` ``(..., ny, nx)``.
        workers: CPU FFT threads.

    ``adj`` multiplies by ``conj(H)`` (back-propagation by −Δz where ``|H| = 1``).
    ``fwd(x, out=None)`` / ``adj(y, out=None)``: ``out`` (may be the input) receives the
    result.
    """

    def __init__(self, H, workers=None):
        self.H = H
        self.dft = FarField(workers)
        self._Hc = None

    def fwd(self, x, out=None):
        return self._apply(x, self.H, out)

    def adj(self, y, out=None):
        if self._Hc is None:
            self._Hc = array_module(self.H).conj(self.H)
        return self._apply(y, self._Hc, out)

    def _apply(self, x, H, out):
        F = self.dft.fwd(x, out)
        F *= H
        return self.dft.adj(F, F)


def intensity(F, mode_axis: int | None = -3, out=None, overwrite: bool = False):
    """``Σ_m |F_m|²`` over ``mode_axis`` (None: ``|F|²``, no sum), in ``F``'s real dtype.

    The squares of real and imaginary parts are added in order,
    ``((Re F_0² + Im F_0²) + Re F_1²) + Im F_1² …``, the same numbers on every path.
    ``overwrite=True`` lets it square ``F`` in place (no temporaries).
    """
    xp = array_module(F)
    rdt = F.real.dtype
    ax = None if mode_axis is None else mode_axis % F.ndim
    Fm = F[None] if ax is None else xp.moveaxis(F, ax, 0)
    if out is None:
        out = xp.empty(Fm.shape[1:], dtype=rdt)
    if overwrite and xp is np and F.dtype.kind == "c" and F.flags.c_contiguous:
        v = F.view(rdt).reshape(F.shape + (2,))
        np.multiply(v, v, out=v)
        vm = v[None] if ax is None else np.moveaxis(v, ax, 0)
        np.add(vm[0, ..., 0], vm[0, ..., 1], out=out)
        for m in range(1, vm.shape[0]):
            np.add(out, vm[m, ..., 0], out=out)
            np.add(out, vm[m, ..., 1], out=out)
        return out
    tmp = xp.empty_like(out)
    for m in range(Fm.shape[0]):
        for k, part in enumerate((Fm[m].real, Fm[m].imag)):
            if m == 0 and k == 0:
                xp.multiply(part, part, out=out)
            else:
                xp.multiply(part, part, out=tmp)
                out += tmp
    return out


def far_field_intensity(psi, mode_axis: int | None = -3, out=None, overwrite=False, workers=None):
    """Detector intensity ``Σ_m |F{ψ_m}|²`` (ortho, zero frequency at index (0, 0)) of waves
    ``ψ`` summed over ``mode_axis`` (None: one mode), e.g. ``(B, M, n, n)`` -> ``(B, n, n)``.
    ``overwrite=True`` lets the FFT and the squares reuse ``psi``'s buffer."""
    F = FarField(workers).fwd(psi, psi if overwrite else None)
    return intensity(F, mode_axis, out, overwrite=True)
