"""Differentiable forward models (built from :mod:`xrayflow.ad` and :mod:`xrayflow.optics`)."""

from xrayflow.models.holography import HolographyModel
from xrayflow.models.ptychography import PtychoModel, intensity_loss

__all__ = ["HolographyModel", "PtychoModel", "intensity_loss"]
