"""docs/adding-a-modality.md works as written: its example package, registered with its one
line, runs through simulate, reconstruct and evaluate like a built-in modality."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from xrayflow import ad
from xrayflow.backend import get_backend
from xrayflow.cli import main
from xrayflow.config import load_config
from xrayflow.modalities import get_modality, modalities, stage_schema, unregister
from xrayflow.reconstruct.data import load_data

DOC = Path(__file__).parents[2] / "docs" / "adding-a-modality.md"


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture
def radiograph(tmp_path, monkeypatch):
    """The example package written to ``tmp_path/radiograph`` and registered by the doc's
    registration line; the configs written beside it."""
    package, registration = _blocks("python")
    simulate_cfg, recon_cfg = _blocks("yaml")
    (tmp_path / "radiograph").mkdir()
    (tmp_path / "radiograph" / "__init__.py").write_text(package)
    (tmp_path / "radiograph.yaml").write_text(simulate_cfg)
    (tmp_path / "radiograph_recon.yaml").write_text(recon_cfg)
    monkeypatch.syspath_prepend(str(tmp_path))
    exec(registration, {})
    yield tmp_path
    unregister("radiograph")
    sys.modules.pop("radiograph", None)


def test_the_example_is_one_folder_and_one_line(radiograph):
    assert "radiograph" in modalities()
    assert sorted(p.name for p in (radiograph / "radiograph").iterdir()) == ["__init__.py"]
    assert len(_blocks("python")[1].strip().splitlines()) == 1


def test_the_example_runs_through_every_stage(radiograph, capsys):
    data, rec, out = (radiograph / n for n in ("r.cxi", "r.h5", "r.json"))
    assert main(["simulate", "-c", str(radiograph / "radiograph.yaml"), "-o", str(data)]) == 0
    cfg = str(radiograph / "radiograph_recon.yaml")
    assert main(["reconstruct", "-c", cfg, "-d", str(data), "-o", str(rec)]) == 0
    assert main(["evaluate", "--result", str(rec), "--truth", str(data), "--out", str(out)]) == 0
    m = json.loads(out.read_text())
    assert m["amplitude"]["ssim"] >= 0.99, m["amplitude"]


def test_the_example_model_reproduces_its_simulation(radiograph):
    data_path = radiograph / "clean.cxi"
    over = ["noise.poisson=false", "precision=double"]
    assert (
        main(
            [
                "simulate",
                "-c",
                str(radiograph / "radiograph.yaml"),
                "-o",
                str(data_path),
                *sum((["--set", o] for o in over), []),
            ]
        )
        == 0
    )
    cfg = load_config(
        {"model": {"type": "radiograph"}, "init": {"object": "truth", "probe": "truth"}},
        stage_schema("reconstruct"),
    )
    data = load_data(data_path, cfg)
    model = get_modality("radiograph").build_model(cfg, data, get_backend("cpu", "double"))
    params = {k: ad.const(v) for k, v in model.initial_object("truth", data.truth).items()}
    params["probe"] = ad.const(np.asarray(data.probe, np.complex128))
    t = model._transmission({"object": params["object"]}).data[0]
    intensity = np.abs(params["probe"].data[0] * t) ** 2
    rel = np.linalg.norm(intensity - data.intensities[0]) / np.linalg.norm(data.intensities[0])
    assert rel < 1e-6
