"""Small reconstruction results of each exportable modality, made once per session by the
real ``xrayflow simulate`` and ``xrayflow reconstruct`` (a few seconds each); the
ptycho-tomography volume is written with the project's own result writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from bcdi_util import crystal_config
from tiny_ptycho import TINY_RECON, TINY_SIM

from xrayflow.cli import main
from xrayflow.io.hdf5 import write_h5

ROOT = Path(__file__).parents[2]


def _yaml(path: Path, cfg: dict) -> str:
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture(scope="session")
def ptycho_data(tmp_path_factory) -> Path:
    """16 frames of 32x32 (tests/tiny_ptycho.py): 8 keV, 2 m, 75 um detector pixels."""
    tmp = tmp_path_factory.mktemp("ptycho_data")
    data = tmp / "d.cxi"
    assert main(["simulate", "-c", _yaml(tmp / "sim.yaml", TINY_SIM), "-o", str(data)]) == 0
    return data


def _reconstruct(tmp: Path, data: Path, *sets: str, config: dict | str = TINY_RECON) -> Path:
    out = tmp / "r.h5"
    cfg = config if isinstance(config, str) else _yaml(tmp / "rec.yaml", config)
    args = ["reconstruct", "-c", cfg, "-d", str(data), "-o", str(out)]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    return out


@pytest.fixture(scope="session")
def ptycho_result(tmp_path_factory, ptycho_data) -> Path:
    """A ptycho2d result: object (1, 56, 56), probe (1, 32, 32), 16 positions."""
    return _reconstruct(tmp_path_factory.mktemp("ptycho2d"), ptycho_data)


@pytest.fixture(scope="session")
def multislice_result(tmp_path_factory, ptycho_data) -> Path:
    """A multislice_ptycho result of the same data: 2 slices, 2 probe modes."""
    return _reconstruct(
        tmp_path_factory.mktemp("multislice"),
        ptycho_data,
        "model.type=multislice_ptycho",
        "model.n_slices=2",
        "model.probe_modes=2",
    )


@pytest.fixture(scope="session")
def nearfield_result(tmp_path_factory) -> Path:
    """A nearfield_ptycho result (cone beam, magnification-corrected frames): a non-square
    object grid."""
    tmp = tmp_path_factory.mktemp("nearfield")
    data = tmp / "nf.cxi"
    sim = [
        "geometry.shape=[32,32]",
        "geometry.source_distance=0.02",
        "scan.n_y=2",
        "scan.n_x=2",
        "probe.diffuser.grain_size=0.6e-6",
    ]
    args = ["simulate", "-c", str(ROOT / "config/simulate/nearfield_ptycho.yaml")]
    for s in sim:
        args += ["--set", s]
    assert main([*args, "-o", str(data)]) == 0
    cfg = str(ROOT / "config/reconstruct/nearfield_ptycho.yaml")
    return _reconstruct(tmp, data, "optimizer.iterations=2", "run.log_every=0", config=cfg)


@pytest.fixture(scope="session")
def bragg_result(tmp_path_factory) -> Path:
    """A bragg_cdi result on a 16^3 grid with a reflection (strain group), a few
    iterations."""
    tmp = tmp_path_factory.mktemp("bragg")
    data, out = tmp / "b.cxi", tmp / "b.h5"
    sim = crystal_config(16, 4, (0.1, 0.11), 1e7, strained=True)
    assert main(["simulate", "-c", _yaml(tmp / "sim.yaml", sim), "-o", str(data)]) == 0
    rec = {
        "model": {"type": "bragg_cdi"},
        "cdi": {
            "iterations": 5,
            "hio": {"iterations": 10, "every": 5, "er": 2},
            "starts": 1,
            "shrinkwrap": {"every": 5},
            "reflection": {"d_spacing": 2.355e-10, "q_direction": [1, 0, 0]},
        },
    }
    assert (
        main(["reconstruct", "-c", _yaml(tmp / "rec.yaml", rec), "-d", str(data), "-o", str(out)])
        == 0
    )
    return out


@pytest.fixture(scope="session")
def tomo_result(tmp_path_factory) -> Path:
    """A ptychotomo result as the reconstruct stage lays it out (delta, beta (Z, Y, X),
    voxel_size), written with xrayflow.io.hdf5.write_h5."""
    rng = np.random.default_rng(0)
    delta = rng.random((6, 8, 10)).astype(np.float32) * 1e-6
    beta = rng.random((6, 8, 10)).astype(np.float32) * 1e-8
    path = tmp_path_factory.mktemp("tomo") / "t.h5"
    write_h5(
        path,
        {"delta": delta, "beta": beta, "voxel_size": 5e-8, "pixel_size": 5e-8, "loss": [1.0]},
        attrs={"model": "ptychotomo", "units": "metres", "energy_ev": 8000.0},
    )
    return path
