"""3D far field of Bragg coherent diffraction imaging."""

from __future__ import annotations

from .fourier import DFT

__all__ = ["FarField3D"]


class FarField3D(DFT):
    """``F{ρ}`` over the last three axes ``(z, y, x)``: ortho 3D FFT, zero frequency at index
    (0, 0, 0) (centre it with ``fftshift`` for files); ``adj`` = ``F⁻¹``. The Bragg CDI
    intensity is ``|F{ρ}|²`` for the complex crystal density ρ on the detector grid."""

    def __init__(self, workers=None):
        super().__init__("fftn", "ortho", workers, axes=(-3, -2, -1))
