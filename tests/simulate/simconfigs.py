"""Tiny configs for every modality (32x32 detectors, at most 16 frames).

Imported by the simulate tests (a plain module, not a conftest, so that its name cannot
clash with other test directories' conftest modules).
"""

import copy

BASE = {
    "energy_ev": 8000,
    "seed": 1,
    "geometry": {"shape": 32, "distance": 2.0, "pixel_size": 75e-6},
    "probe": {"gaussian": {"waist": 0.3e-6}},
    "scan": {"n_y": 2, "n_x": 2, "step": 0.3e-6},
    "phantom": {"shape": [4, None, None], "params": {"spokes": 8}},
    "noise": {"photons_per_probe": 1e5},
    "output": {"compression": "none"},
}

CONFIGS = {
    "ptycho2d": {"modality": "ptycho2d"},
    "multislice_ptycho": {"modality": "multislice_ptycho", "multislice": {"n_slices": 2}},
    "ptychotomo": {
        "modality": "ptychotomo",
        "phantom": {"type": "hollow_cone", "shape": [None, None, None], "params": {}},
        "scan": {"n_y": 1, "n_x": 2, "step": 0.3e-6, "rotation": {"n_angles": 3}},
        "multislice": {"n_slices": 2},
    },
    "holography": {
        "modality": "holography",
        "energy_ev": 17000,
        "geometry": {"shape": 64, "pixel_size": 2e-6, "distance": 0.5, "source_distance": 0.2},
        "holography": {"distances": [0.4, 0.5]},
        "phantom": {"shape": [2, None, None], "params": {"spokes": 12}, "material": "tungsten"},
        "multislice": {"n_slices": 1},
    },
    "bragg_cdi": {
        "modality": "bragg_cdi",
        "geometry": {"shape": 16, "distance": 1.0, "pixel_size": 55e-6},
        "phantom": {
            "type": "faceted_crystals",
            "shape": [None, None, None],
            "params": {"n_crystals": 1},
        },
        "noise": {"photons_per_probe": 1e6},
    },
    "xrf_speckle": {
        "modality": "xrf_speckle",
        "geometry": {"shape": 32, "distance": 0.1, "pixel_size": 2e-6},
        "phantom": {
            "type": "battery_cathode",
            "shape": [4, None, None],
            "params": {"radius_range": [3e-6, 6e-6]},
        },
        "xrf_speckle": {"n_patterns": 16},
    },
}

MODALITY_NAMES = list(CONFIGS)


def _merge(a, b):
    out = copy.deepcopy(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "params":
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def make_config(modality, **sections):
    cfg = _merge(BASE, CONFIGS[modality])
    return _merge(cfg, sections)
