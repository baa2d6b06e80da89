"""Simulated Bragg CDI crystals shared by the Bragg CDI tests (importable from every test
directory: ``tests/`` is on ``sys.path`` through its conftest)."""

from __future__ import annotations

#: The strain field of the test crystals (simulate section ``bragg``).
STRAIN = {"strain": {"amplitude": 5e-11, "correlation_length": 100e-9}}


def crystal_config(n, seed, radii, photons, poisson=True, strained=False) -> dict:
    """Simulate config of one faceted crystal on an n^3 grid (9 keV, 1 m, 55 um pixels);
    ``radii``: its radius range in units of the grid's extent; ``strained``: with the
    displacement field :data:`STRAIN`."""
    vox = 1.378e-10 / (n * 55e-6)  # lambda z / (N p) at 9 keV, 1 m
    cfg = {
        "modality": "bragg_cdi",
        "seed": seed,
        "energy_ev": 9000,
        "geometry": {"shape": n, "distance": 1.0, "pixel_size": 55e-6},
        "phantom": {
            "type": "faceted_crystals",
            "shape": [None, None, None],
            "params": {"n_crystals": 1, "radius_range": [r * n * vox for r in radii]},
        },
        "noise": {"photons_per_probe": photons, "poisson": poisson},
        "output": {"compression": "none"},
    }
    if strained:
        cfg["bragg"] = STRAIN
    return cfg
