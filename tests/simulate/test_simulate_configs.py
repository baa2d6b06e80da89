"""The example configs in config/simulate validate; the demos run and write CXI files."""

from pathlib import Path

import numpy as np
import pytest

from xrayflow.io.cxi import read_cxi_meta
from xrayflow.simulate import load_simulate_config, run

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config" / "simulate"
ALL = sorted(CONFIG_DIR.glob("*.yaml"))
DEMOS = [p for p in ALL if "realscale" not in p.stem]


def test_every_modality_has_a_demo_and_a_realscale_example():
    stems = {p.stem for p in ALL}
    for m in ("ptycho2d", "multislice_ptycho", "ptychotomo", "holography", "bragg_cdi"):
        assert m in stems and f"{m}_realscale" in stems


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_example_config_validates(path):
    cfg = load_simulate_config(path)
    assert path.stem.startswith(cfg["modality"])


@pytest.mark.parametrize("path", DEMOS, ids=lambda p: p.stem)
def test_demo_runs(path, tmp_path):
    out = tmp_path / "demo.cxi"
    d = run(path, out)
    meta = read_cxi_meta(out)
    assert meta["n_frames"] == d.n_frames and meta["modality"] == d.attrs["modality"]
    assert np.isfinite(d.data).all() and d.data.sum() > 0
