"""Near-field (in-line) holography forward model.

Frame ``f`` is recorded at propagation distance ``z_f`` (effective distance for a point
source, in the same length unit as the pixel size)::

    psi_f = P * O                              # (M, ny, nx) modes, object (S=1) transmission
    I_f   = sum_m |F^-1{H_{z_f} F{psi_m}}|^2    # Fresnel transfer function H

The object is either a complex transmission or (delta, beta) like
:class:`~xrayflow.modalities.ptycho2d.model.PtychoModel`; the object grid equals the
detector grid.
"""

from __future__ import annotations

import numpy as np

from xrayflow import ad
from xrayflow.errors import DataError
from xrayflow.modalities.transmission import ObjectModel, model_options
from xrayflow.optics.propagation import transfer_function


class HolographyModel(ObjectModel):
    """Args: ``transfers`` (F, ny, nx) complex, one per frame distance; keyword arguments
    of :class:`~xrayflow.modalities.transmission.ObjectModel`."""

    def __init__(self, transfers, **kwargs):
        super().__init__(**kwargs)
        self.transfers = transfers
        self.n_slices = 1
        self.object_shape = tuple(int(v) for v in transfers.shape[-2:])

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
        return self.data_term(self.intensities(obj_params, probe, frames), target)

    # -- the gradient solver's model interface ------------------------------------------------
    def block_loss(self, params: dict, frames, corners, target, refine_positions: bool):
        """Data term of the holograms ``frames`` (the scan positions are not used)."""
        objp = {k: params[k] for k in self.object_names}
        return self.loss(objp, params["probe"], frames, None, target), None, None

    def illumination(self, params, sums: dict, n_frames: int):
        """Probe power and object power over the whole grid, times the batch's frames."""
        xp = self.backend.xp
        illum = xp.sum(xp.abs(params["probe"]) ** 2, axis=0) * n_frames
        if "object" in params:
            opw = xp.abs(params["object"][0]) ** 2 * n_frames
        else:
            opw = xp.ones(self.object_shape) * n_frames
        return illum, opw


def build(cfg: dict, data, backend) -> HolographyModel:
    """The model of the reconstruct config ``cfg`` for ``data``: one Fresnel transfer
    function per frame, for its (effective) distance."""
    m = cfg["model"]
    opts = model_options(cfg, data, backend)
    if data.distances is None:
        if data.distance is None:
            raise DataError(
                "holography needs propagation distances (geometry.distances or geometry.distance)"
            )
        dists = np.full(data.n_positions, float(data.distance))
    else:
        dists = np.asarray(data.distances, np.float64)
    if dists.size != data.n_positions:
        raise DataError(f"{dists.size} holography distances for {data.n_positions} frames")
    if data.wavelength is None:
        raise DataError("holography needs the wavelength (energy)")
    Hs = np.stack(
        [
            transfer_function(
                m["propagator"],
                data.frame_shape,
                data.pixel_size,
                data.wavelength,
                z,
                check=False,
                dtype=backend.complex_dtype,
            )
            for z in dists
        ]
    )
    return HolographyModel(backend.xp.asarray(Hs), **opts)
