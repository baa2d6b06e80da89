"""Differentiable 3D Bragg CDI forward model.

The unknown is the complex crystal density ``rho`` (Z, Y, X) on the detector grid (the
crystal box zero-padded by the oversampling). A circular shift of ``rho`` only multiplies
its Fourier transform by a phase ramp, so ``rho`` can be held in the centred layout (crystal
in the middle of the array) while the model works with the DC-at-corner layout of the
FFT::

    I(q) = |F{rho}(q)|^2          # ortho 3D FFT, DC at index (0, 0, 0)

Measured counts are stored centred (``DiffractionData.centred``); :class:`BraggCDIModel`
moves them (and the mask) to the DC-corner layout once. The data term is
:func:`xrayflow.modalities.losses.intensity_loss`: ``gaussian`` (least squares on
amplitudes, the variance-stabilised Poisson form) or ``poisson`` (negative log-likelihood).
For the Gaussian loss without mask the gradient is ``2 (rho - P_M rho)`` (``P_M``: the
modulus projection), so a gradient step of 0.5 followed by the support projection is exactly
one error-reduction iteration.
"""

from __future__ import annotations

from xrayflow import ad
from xrayflow.backend import get_backend, ifftshift
from xrayflow.modalities.losses import LOSSES, intensity_loss, loss_target

__all__ = ["LOSSES", "BraggCDIModel"]


class BraggCDIModel:
    """3D far-field intensities of a complex object and their misfit to measured counts.

    Args:
        counts: (Z, Y, X) measured photon counts (float, >= 0).
        mask: (Z, Y, X) bool, True = good voxel, or None (all good).
        loss: ``"gaussian"`` or ``"poisson"``.
        centred: True when ``counts`` / ``mask`` have the zero frequency in the middle
            (as stored in CXI files); they are then ``ifftshift``-ed once.
        scale: the counts are divided by ``scale`` (photons), so that ``rho`` is held in
            units of ``sqrt(scale)``; the minimiser is unchanged up to that factor.
        eps: regulariser of ``sqrt`` / ``log`` at zero intensity (in scaled counts).
        backend: :class:`xrayflow.backend.Backend` (default CPU, single precision).
    """

    def __init__(
        self,
        counts,
        mask=None,
        loss: str = "gaussian",
        centred: bool = True,
        scale: float = 1.0,
        eps: float = 1e-6,
        backend=None,
    ):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.backend = backend or get_backend("cpu")
        xp = self.backend.xp
        c = xp.asarray(counts, dtype=self.backend.real_dtype)
        if c.ndim != 3:
            raise ValueError(f"counts must be a 3D array (Z, Y, X), got shape {c.shape}")
        if centred:
            c = ifftshift(c)
        c = c / self.backend.real_dtype(scale)
        self.shape = tuple(c.shape)
        self.loss_kind = loss
        self.eps = float(eps)
        self.target = loss_target(c, loss)
        self.amplitude = self.target if loss == "gaussian" else xp.sqrt(c)
        self.mask = None
        if mask is not None:
            m = xp.asarray(mask, dtype=bool)
            if m.shape != c.shape:
                raise ValueError(f"mask shape {m.shape} does not match counts {c.shape}")
            if centred:
                m = ifftshift(m)
            self.mask = m.astype(self.backend.real_dtype)

    def far_field(self, rho):
        """``F{rho}`` (ortho 3D FFT, DC at the corner) as a Tensor."""
        return ad.fftn(rho, backend=self.backend)

    def intensity(self, rho):
        """Model intensities ``|F{rho}|^2`` (scaled counts) as a Tensor."""
        return ad.abs2(self.far_field(rho))

    def loss(self, rho):
        """Data term (real scalar Tensor) for the complex object ``rho`` (Z, Y, X)."""
        return intensity_loss(self.intensity(rho), self.target, self.mask, self.loss_kind, self.eps)

    def modulus_projection(self, rho):
        """``P_M rho``: replace ``|F{rho}|`` by the measured amplitude on good voxels (array)."""
        xp = self.backend.xp
        F = self.backend.fftn(rho)
        mag = xp.abs(F)
        fac = self.amplitude / xp.maximum(mag, 1e-30)
        if self.mask is not None:
            fac = self.mask * fac + (1 - self.mask)
        F *= fac
        return self.backend.ifftn(F, overwrite_x=True)

    def r_factor(self, rho) -> float:
        """Normalised amplitude misfit ``sqrt(sum m (|F| - a)^2 / sum m a^2)`` (good voxels)."""
        xp = self.backend.xp
        d = xp.abs(self.backend.fftn(rho)) - self.amplitude
        a2 = self.amplitude**2
        if self.mask is not None:
            d = d * self.mask
            a2 = a2 * self.mask
        return float(xp.sqrt((d * d).sum() / xp.maximum(a2.sum(), 1e-30)))
