"""One forward model: for every modality, the simulation and the reconstruction's model,
evaluated on the ground truth written by the simulation, give the same noise-free
intensities (1e-6 relative, in double precision).

End to end through the file: ``xrayflow.simulate.run`` writes the CXI file, the reconstruct
stage's reader loads it and the modality's model (built through the registry as the
reconstruct stage builds it) evaluates the truth at the recorded positions."""

from __future__ import annotations

import numpy as np
import pytest
from simconfigs import make_config

from xrayflow import ad
from xrayflow.backend import fftshift, get_backend, ifftshift
from xrayflow.config import load_config
from xrayflow.io.cxi import read_cxi
from xrayflow.modalities import get_modality, stage_schema
from xrayflow.modalities.bragg_cdi.model import BraggCDIModel
from xrayflow.modalities.ptycho2d.model import split_positions
from xrayflow.parallel import get_comm
from xrayflow.reconstruct.data import load_data
from xrayflow.reconstruct.linear_inverse import read_measurements
from xrayflow.simulate import run

NOISE_FREE = {"noise": {"poisson": False}, "precision": "double"}
RTOL = 1e-6


def _simulate(tmp_path, modality, **sections):
    path = tmp_path / f"{modality}.cxi"
    run(make_config(modality, **NOISE_FREE, **sections), path)
    return path


def _recon_config(modality, **model):
    return load_config(
        {
            "model": {"type": modality, **model},
            "init": {"object": "truth", "probe": "truth"},
            "run": {"precision": "double"},
        },
        stage_schema("reconstruct"),
    )


def _rel(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _model_and_params(cfg, path):
    data = load_data(path, cfg)
    be = get_backend("cpu", "double")
    model = get_modality(cfg["model"]["type"]).build_model(cfg, data, be)
    params = {k: ad.const(v) for k, v in model.initial_object("truth", data.truth).items()}
    params["probe"] = ad.const(np.asarray(data.probe, np.complex128))
    return data, model, params


@pytest.mark.parametrize(("modality", "n_slices"), [("ptycho2d", 1), ("multislice_ptycho", 2)])
def test_far_field_ptychography(tmp_path, modality, n_slices):
    path = _simulate(tmp_path, modality)
    cfg = _recon_config(modality, n_slices=n_slices)
    data, model, params = _model_and_params(cfg, path)
    ci, frac = split_positions(data.corners)
    objp = {k: params[k] for k in model.object_names}
    I = model.intensities(objp, params["probe"], ci, ad.const(frac)).data
    assert _rel(I, data.intensities) < RTOL


def test_ptychotomo(tmp_path):
    path = _simulate(tmp_path, "ptychotomo")
    cfg = _recon_config("ptychotomo", n_slices=2)
    data, model, p = _model_and_params(cfg, path)
    blocks = model.frame_blocks(data.n_positions)
    I = np.concatenate(
        [model.intensities(p["delta"], p["beta"], p["probe"], b).data for b in blocks]
    )
    assert _rel(I, data.intensities) < RTOL


def test_holography(tmp_path):
    path = _simulate(tmp_path, "holography")
    cfg = _recon_config("holography")
    data, model, p = _model_and_params(cfg, path)
    frames = np.arange(data.n_positions)
    I = model.intensities({"object": p["object"]}, p["probe"], frames).data
    assert _rel(I, data.intensities) < RTOL


def test_bragg_cdi(tmp_path):
    """The 3D far field of the truth density on the detector grid; the simulation scales
    the pattern to the configured photons, so the densities' scale is fitted once."""
    path = _simulate(tmp_path, "bragg_cdi")
    d = read_cxi(path)
    be = get_backend("cpu", "double")
    model = BraggCDIModel(d.data, centred=True, backend=be)
    obj = d.truth["object"].astype(np.complex128)
    rho = np.zeros(d.data.shape, np.complex128)
    z0, y0, x0 = (n // 2 - s // 2 for n, s in zip(rho.shape, obj.shape, strict=True))
    rho[z0 : z0 + obj.shape[0], y0 : y0 + obj.shape[1], x0 : x0 + obj.shape[2]] = obj
    I = fftshift(model.intensity(ad.const(ifftshift(rho))).data)
    scale = d.data.sum() / I.sum()
    assert _rel(scale * I, d.data) < RTOL


def test_xrf_speckle(tmp_path):
    """The fluorescence counts of the truth maps and spill under the recorded patterns (the
    patterns are the frames as stored, float32; the spill is the diffuser lines' own)."""
    path = _simulate(tmp_path, "xrf_speckle")
    cfg = _recon_config("xrf_speckle")
    data = read_measurements(path, cfg["linear_inverse"]["block_rows"], get_comm())
    model = get_modality("xrf_speckle").build_model(cfg, data, get_backend("cpu", "double"))
    truth = read_cxi(path).truth
    params = {
        "maps": ad.const(truth["element_maps"] / model.map_unit[:, None, None]),
        "spill": ad.const(truth["background_spill"] / model.spill_unit),
    }
    y = model.predict(params, model.rows).data
    assert truth["background_spill"].any() and _rel(y, model.target(model.rows)) < RTOL
