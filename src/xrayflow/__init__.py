"""xrayflow: X-ray imaging pipeline (simulate, reconstruct, train, evaluate)."""

__version__ = "0.1.0"
