"""The physics operators of xrayflow, shared by simulation and reconstruction.

Each linear operator is a small class with ``fwd(x) = A x`` and ``adj(y) = Aᴴ y`` (exact
adjoint for ``<a, b> = Σ conj(a)·b``) on NumPy or CuPy arrays, FFTs through
:mod:`xrayflow.backend`; :func:`xrayflow.ad.linear` turns one into a differentiable node.
Conventions: docs/physics.md (ortho FFTs, zero frequency at index 0, corners = top-left,
``t = exp(−ikΔz(δ − iβ))``).

Modules: :mod:`.fourier` (DFTs), :mod:`.propagation` (Fraunhofer far field, transfer-function
propagation, far-field intensity), :mod:`.farfield3d` (3D far field of Bragg CDI),
:mod:`.patches` (windows at corners, scatter-add), :mod:`.projection` (maps onto
illumination patterns), :mod:`.shift` (sub-pixel Fourier shift),
:mod:`.transmission` (slice transmission), :mod:`.rotation` (volume rotation),
:mod:`.multislice` (multislice forward and reversible gradient: the one engine),
:mod:`.ptychography` (the simulation's far-field multislice model).
"""

from .base import LinearOperator, OperatorError, unbroadcast
from .farfield3d import FarField3D
from .fourier import DFT
from .multislice import Multislice, MultisliceEngine, ObjectWindows, PatchStack, exit_waves
from .patches import Patches, scatter_add_patches
from .projection import PatternProjection
from .propagation import FarField, Propagation, far_field_intensity, intensity
from .ptychography import MultisliceModel, simulate_intensities, split_corners
from .rotation import Rotation, rotation_operator
from .shift import FourierShift
from .transmission import Transmission, transmission

__all__ = [
    "DFT",
    "FarField",
    "FarField3D",
    "FourierShift",
    "LinearOperator",
    "Multislice",
    "MultisliceEngine",
    "MultisliceModel",
    "ObjectWindows",
    "OperatorError",
    "PatchStack",
    "Patches",
    "PatternProjection",
    "Propagation",
    "Rotation",
    "Transmission",
    "exit_waves",
    "far_field_intensity",
    "intensity",
    "rotation_operator",
    "scatter_add_patches",
    "simulate_intensities",
    "split_corners",
    "transmission",
    "unbroadcast",
]
