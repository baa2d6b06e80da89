"""Near-field (in-line) holography forward model.

Frame ``f`` is recorded at propagation distance ``z_f`` (effective distance for a point
source, in the same length unit as the pixel size)::

    psi_f = P * O                              # (M, ny, nx) modes, object (S=1) transmission
    I_f   = sum_m |F^-1{H_{z_f} F{psi_m}}|^2    # Fresnel transfer function H

The object is either a complex transmission or (delta, beta) like
:class:`~xrayflow.models.ptychography.PtychoModel`; the object grid equals the detector grid.
"""

from __future__ import annotations

from xrayflow import ad
from xrayflow.models.ptychography import ObjectModel, intensity_loss


class HolographyModel(ObjectModel):
    """Args: ``transfers`` (F, ny, nx) complex, one per frame distance; keyword arguments
    of :class:`~xrayflow.models.ptychography.ObjectModel`."""

    def __init__(self, transfers, **kwargs):
        super().__init__(**kwargs)
        self.transfers = transfers
        self.n_slices = 1

    def intensities(self, obj_params, probe, frames, shifts=None):
        """Holograms (B, ny, nx) for the frame indices ``frames`` (B,)."""
        t = self._transmission(obj_params)  # (1, ny, nx)
        psi = probe * t  # (M, ny, nx)
        H = self.transfers[frames]  # (B, ny, nx)
        M = probe.shape[0]
        Psi = ad.reshape(ad.fft2(psi, backend=self.backend), 1, M, *psi.shape[-2:])
        out = ad.ifft2(Psi * H[:, None], backend=self.backend)  # (B, M, ny, nx)
        self.last["patch_power"] = None
        return ad.sum(ad.abs2(out), axis=1)

    def loss(self, obj_params, probe, frames, shifts, target):
        I = self.intensities(obj_params, probe, frames)
        return intensity_loss(I, target, self.mask, self.loss_kind, self.eps)
