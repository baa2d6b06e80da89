"""One tiny ptycho2d experiment shared by the CLI-level reliability tests: 16 frames of
32x32 pixels over a Siemens star (about a second to simulate and reconstruct)."""

TINY_SIM = {
    "modality": "ptycho2d",
    "energy_ev": 8000,
    "seed": 1,
    "geometry": {"shape": 32, "distance": 2.0, "pixel_size": 75e-6},
    "probe": {"gaussian": {"waist": 0.8e-6}},
    "scan": {"n_y": 4, "n_x": 4, "step": 0.6e-6},
    "phantom": {"shape": [4, None, None], "params": {"spokes": 8}},
    "noise": {"photons_per_probe": 1e5},
    "output": {"compression": "none"},
}

TINY_RECON = {
    "model": {"type": "ptycho2d"},
    "init": {"probe": "file"},
    "optimizer": {"method": "sgd", "iterations": 4, "batch_size": 16, "object": {"lr": 1.0}},
    "run": {"checkpoint_every": 2, "log_every": 0},
}
