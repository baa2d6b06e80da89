"""X-ray optics: constants, materials (δ, β), free-space propagation, Gaussian beams and the
multislice forward model. Conventions: docs/physics.md.

Submodules are imported on demand (``from xrayflow.optics import propagation``); this package
imports nothing heavy itself.
"""

__all__ = ["constants", "materials", "propagation", "gaussian", "multislice"]
