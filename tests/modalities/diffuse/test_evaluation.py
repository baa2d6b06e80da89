"""Evaluation of predicted encodings: R² and MAE against scikit-learn, the image-space R²
of re-simulated images, figures, and files that do not fit."""

import json

import h5py
import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from xrayflow.errors import DataError
from xrayflow.modalities.diffuse import evaluation
from xrayflow.modalities.diffuse.diffraction import DiffuseConfig, bragg_mask, expected_image
from xrayflow.modalities.diffuse.encoding import neighbour_vectors
from xrayflow.modalities.diffuse.lattice import random_encoding

NAMES = ["a(1,0)", "a(0,1)", "a(1,1)", "a(2,0)", "a(0,2)", "a(2,1)", "a(1,2)", "a(2,2)"]
PHYSICS = {
    "dimension": 8,
    "neighbour_vectors": neighbour_vectors(8).tolist(),
    "shape": [32, 32],
    "n_lattices": 2,
    "concentration": 0.5,
    "tolerance": 0.02,
    "max_sweeps": 200,
    "f_a": 1.0,
    "f_b": 0.0,
    "lattice_constant": None,
    "size": 32,
    "h_max": 1.0,
    "counts": 1e6,
    "bragg_mask": True,
}


def _files(tmp_path, true, pred, physics=True, names=NAMES):
    truth, result = tmp_path / "truth.h5", tmp_path / "pred.h5"
    with h5py.File(truth, "w") as f:
        f["targets_encoding"] = true.astype(np.float32)
        f.attrs["encoding_names"] = json.dumps(names)
        if physics:
            f.attrs["diffuse"] = json.dumps(PHYSICS)
    with h5py.File(result, "w") as f:
        f["encoding"] = pred.astype(np.float32)
        f.create_dataset("encoding_names", data=np.array(names, dtype=object))
        f.attrs["modality"] = "diffuse"
    return result, truth


def _encodings(n, seed=0):
    rng = np.random.default_rng(seed)
    v = neighbour_vectors(8)
    true = np.array([random_encoding(v, rng) for _ in range(n)])
    pred = true + rng.normal(0, 0.05, true.shape) * np.arange(1, 9) / 4
    return true.astype(np.float32).astype(np.float64), pred.astype(np.float32).astype(np.float64)


def test_scores_equal_scikit_learn(tmp_path):
    true, pred = _encodings(40)
    m, arrays = evaluation.evaluate(*_files(tmp_path, true, pred), {})
    assert m["kind"] == "encoding" and m["mode"] == "truth" and m["n_samples"] == 40
    np.testing.assert_allclose(
        m["r2_per_variable"], r2_score(true, pred, multioutput="raw_values"), rtol=1e-10
    )
    assert m["r2"] == pytest.approx(r2_score(true, pred), rel=1e-10)
    assert m["mae"] == pytest.approx(mean_absolute_error(true, pred), rel=1e-10)
    assert m["mse"] == pytest.approx(mean_squared_error(true, pred), rel=1e-10)
    for j, name in enumerate(NAMES):
        var = m["variables"][name]
        assert var["r2"] == pytest.approx(r2_score(true[:, j], pred[:, j]), rel=1e-10)
        assert var["mae"] == pytest.approx(mean_absolute_error(true[:, j], pred[:, j]))
        assert var["vector"] == neighbour_vectors(8)[j].tolist()
    assert m["n_images"] == 40 and -1 < m["r2_images"] < 1
    line = evaluation.summary_line(m, "out.json")
    assert "R2" in line and "40 samples" in line and "out.json" in line


def test_image_r2_compares_closed_form_re_simulations(tmp_path):
    true, pred = _encodings(10, seed=1)
    cfg = DiffuseConfig(shape=(32, 32), size=32, counts=1e6)
    v = neighbour_vectors(8)
    mask = bragg_mask(32)
    m, arrays = evaluation.evaluate(
        *_files(tmp_path, true, pred), {"diffuse": {"image_samples": 4}}
    )
    assert m["n_images"] == 4 and m["image_rows"] == [0, 3, 6, 9]
    keep = ~mask
    scores = []
    for i in m["image_rows"]:
        a, b = expected_image(pred[i], v, cfg)[keep], expected_image(true[i], v, cfg)[keep]
        scores.append(r2_score(b / b.mean(), a / a.mean()))
    assert m["r2_images"] == pytest.approx(np.mean(scores), rel=1e-9)
    # exact predictions re-simulate exactly
    m, _ = evaluation.evaluate(*_files(tmp_path, true, true.copy()), {})
    assert m["r2"] == 1.0 and m["r2_images"] == pytest.approx(1.0) and m["image_mse"] < 1e-20


def test_figures_are_written(tmp_path):
    true, pred = _encodings(12)
    m, arrays = evaluation.evaluate(*_files(tmp_path, true, pred), {})
    figs = tmp_path / "figs"
    figs.mkdir()
    written = evaluation.write_figures(figs, m, arrays, {"figures": {"dpi": 40}})
    assert sorted(p.name for p in written) == sorted(evaluation.FIGURE_NAMES)
    assert all(p.stat().st_size > 1000 for p in written)


def test_files_that_do_not_fit_raise_data_errors(tmp_path):
    true, pred = _encodings(6)
    with pytest.raises(DataError, match="6 predictions, truth file .* 5 labelled"):
        evaluation.evaluate(*_files(tmp_path, true[:5], pred), {})
    with pytest.raises(DataError, match="physics"):
        evaluation.evaluate(*_files(tmp_path, true, pred, physics=False), {})
    result, truth = _files(tmp_path, true, pred)
    with h5py.File(result, "a") as f:
        del f["encoding_names"]
        f.create_dataset("encoding_names", data=np.array(["x"] * 8, dtype=object))
    with pytest.raises(DataError, match="does not predict a\\(1,0\\)"):
        evaluation.evaluate(result, truth, {})
    with h5py.File(result, "a") as f:
        f["encoding"][0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        evaluation.evaluate(result, truth, {})
