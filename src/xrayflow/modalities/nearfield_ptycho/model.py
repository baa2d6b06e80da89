"""Near-field ptychography forward model: the far-field model's exit waves
(:class:`~xrayflow.modalities.ptycho2d.model.PtychoModel`: sub-pixel probe shift, object
patches, multislice) propagated to the detector plane instead of Fourier-transformed::

    I_b = sum_m |F^-1{H_z R_b F{psi_b,m}}|^2     # real-space frames on the object pixel

with ``H_z`` the ``model.propagator`` transfer function (Fresnel or angular spectrum) of
the sample-plane propagation distance ``z``: the effective distance ``z1·z2/(z1 + z2)`` of
magnification-corrected cone-beam frames (Fresnel scaling), ``z2`` for a plane wave.
``R_b`` shifts the wave back by the sub-pixel shift ``s_b`` of the probe: the exit wave is
sampled on the object window, the frame on the detector (probe) grid, so frame pixel ``k``
sees object coordinate ``c_b + k`` (in the far field such a shift only changes phases).
The simulation (:class:`xrayflow.operators.MultisliceModel` with a detector distance) is
the same model. Gradients come from :mod:`xrayflow.ad`.
"""

from __future__ import annotations

import numpy as np

from xrayflow import ad
from xrayflow.errors import DataError
from xrayflow.modalities.ptycho2d.model import PtychoModel, shift_ramp, slice_transfer
from xrayflow.modalities.transmission import model_options
from xrayflow.operators import split_corners
from xrayflow.optics.propagation import critical_distance, transfer_function

#: Smallest Fresnel number ``(N Δx)²/(λ z)`` of the frame's field of view that near-field
#: frames have; below it the frames are far-field diffraction patterns.
MIN_FRESNEL_NUMBER = 1.0


class NearFieldPtychoModel(PtychoModel):
    """Near-field ptychography of ``n_slices`` slices.

    Args:
        detector_transfer: ``(ny, nx)`` complex transfer function from the exit plane to
            the (magnification-corrected) detector plane.
        other arguments: those of :class:`~xrayflow.modalities.ptycho2d.model.PtychoModel`.
    """

    def __init__(self, frame_shape, object_shape, detector_transfer, **kwargs):
        super().__init__(frame_shape, object_shape, **kwargs)
        self.detector_transfer = detector_transfer

    @staticmethod
    def split(corners):
        """Fractional corners -> (windows at the nearest pixel, shifts in [-1/2, 1/2]), as
        the simulation (:func:`xrayflow.operators.ptychography.split_corners`): the window
        edges, where the periodic propagation wraps, are those of the simulation."""
        return split_corners(corners)

    def intensities(self, obj_params, probe, corners, shifts):
        """Near-field frames (B, ny, nx): the exit waves propagated to the detector."""
        psi = self.exit_waves(obj_params, probe, corners, shifts)
        be = self.backend
        Psi = ad.fft2(psi, backend=be) * self.detector_transfer
        if shifts is not None:
            Psi = Psi * shift_ramp(shifts, self.frame_shape, psi.dtype, psi.xp, sign=-1.0)
        return ad.sum(ad.abs2(ad.ifft2(Psi, backend=be)), axis=1)

    def probe_from_mean_frame(self, mean_frame):
        """A start probe (ny, nx) for a structured beam: the square root of the mean frame
        (counts) back-propagated to the sample plane (``F^-1{conj(H) F{sqrt(I)}}``)."""
        be = self.backend
        a = be.xp.sqrt(be.xp.maximum(be.xp.asarray(mean_frame, dtype=be.real_dtype), 0))
        return be.ifft2(be.fft2(a.astype(be.complex_dtype)) * be.xp.conj(self.detector_transfer))


def propagation_distance(data) -> float:
    """The sample-plane propagation distance of ``data``'s frames, m (one for all frames)."""
    if data.distances is None:
        raise DataError(
            "nearfield_ptycho needs the detector distance: set geometry.distance (m, "
            "sample-detector) and, for a cone beam, geometry.source_distance"
        )
    z = np.unique(np.asarray(data.distances, np.float64))
    if z.size != 1:
        raise DataError(
            f"nearfield_ptycho propagates every frame over one distance; the data have "
            f"{z.size} ({z.min():.4g} to {z.max():.4g} m): use holography for frames at "
            "several distances"
        )
    return float(z[0])


def check_near_field(data, z: float) -> None:
    """DataError unless the frames are near-field holograms that the sampled transfer
    function propagates: Fresnel number of the field of view ``(N Δx)²/(λ z)`` at least
    :data:`MIN_FRESNEL_NUMBER`, ``z`` within the critical distance ``N Δx²/λ``."""
    n = np.asarray(data.frame_shape, np.float64)
    dx, lam = float(data.pixel_size), float(data.wavelength)
    fresnel = float((n.min() * dx) ** 2 / (lam * z))
    zc = critical_distance(data.frame_shape, dx, lam)
    what = (
        f"propagation distance {z:.4g} m with the object pixel {dx:.4g} m and wavelength "
        f"{lam:.4g} m"
    )
    if fresnel < MIN_FRESNEL_NUMBER:
        raise DataError(
            f"{what}: the Fresnel number of the frame, (N dx)^2/(lambda z) = {fresnel:.3g}, is "
            f"below {MIN_FRESNEL_NUMBER:g}: these are far-field diffraction patterns; use "
            "ptycho2d (or fix geometry.distance / geometry.source_distance)"
        )
    if z > zc:
        raise DataError(
            f"{what}: {z / zc:.1f} x the critical distance N dx^2/lambda = {zc:.4g} m, beyond "
            "which the sampled transfer function aliases. For a cone beam set "
            "geometry.source_distance (focus-sample, m): the frames then propagate over "
            "z1 z2/(z1 + z2) on the pixel p (z1 + z2)/z1; or check geometry.distance and the "
            "pixel size"
        )


def build(cfg: dict, data, backend) -> NearFieldPtychoModel:
    """The model of the reconstruct config ``cfg`` for ``data``
    (:class:`xrayflow.reconstruct.data.ReconData`)."""
    m = cfg["model"]
    if data.wavelength is None:
        raise DataError(
            "nearfield_ptycho needs the wavelength: no photon energy in the data; set "
            "geometry.energy_ev (or geometry.wavelength_px in pixel units)"
        )
    z = propagation_distance(data)
    check_near_field(data, z)
    H = transfer_function(
        m["propagator"],
        data.frame_shape,
        data.pixel_size,
        data.wavelength,
        z,
        dtype=backend.complex_dtype,
    )
    return NearFieldPtychoModel(
        data.frame_shape,
        data.object_shape,
        backend.xp.asarray(H),
        n_slices=m["n_slices"],
        transfer=slice_transfer(cfg, data, backend),
        **model_options(cfg, data, backend),
    )
