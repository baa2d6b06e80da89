"""The diffuse simulate stage: the images and labels in memory and in the CXI file,
determinism and per-sample seeding, the memory estimate and the config checks."""

import copy
import json

import numpy as np
import pytest

from xrayflow.cli import main
from xrayflow.errors import ConfigError
from xrayflow.io.cxi import read_cxi
from xrayflow.modalities.diffuse.diffraction import bragg_mask, expected_image
from xrayflow.modalities.diffuse.encoding import measure_correlations, neighbour_vectors
from xrayflow.modalities.diffuse.simulate import (
    image_mask,
    memory_parts,
    physics,
    physics_from_attrs,
    structure,
)
from xrayflow.modalities.diffuse.training import DATA_SECTION
from xrayflow.modalities.simulation import rng_streams
from xrayflow.simulate import load_simulate_config, run, simulate

BASE = {
    "modality": "diffuse",
    "energy_ev": 10000.0,
    "seed": 3,
    "batch_size": 2,
    "diffuse": {
        "n_samples": 3,
        "dimension": 8,
        "lattice": {"shape": [32, 32], "n_lattices": 2},
        "image": {"size": 32},
    },
    "output": {"compression": "none"},
}


def config(**diffuse):
    cfg = copy.deepcopy(BASE)
    cfg["diffuse"].update(diffuse)
    return cfg


def test_simulate_returns_images_labels_and_monte_carlo_records():
    d = simulate(config())
    assert d.data.shape == (3, 32, 32) and d.data.dtype == np.float32 and d.centred
    assert d.attrs["modality"] == "diffuse"
    np.testing.assert_array_equal(d.mask, ~bragg_mask(32))
    assert np.all(d.data[:, ~d.mask] == 0) and np.all(d.data == np.round(d.data))
    s = d.signals
    v = neighbour_vectors(8)
    np.testing.assert_array_equal(s["neighbour_vectors"], v)
    assert list(s["encoding_names"])[:3] == ["a(1,0)", "a(0,1)", "a(1,1)"]
    assert s["encoding"].shape == s["target_encoding"].shape == (3, 8)
    assert s["converged"].dtype == np.uint8 and s["converged"].any()
    np.testing.assert_allclose(
        s["max_error"], np.abs(s["encoding"] - s["target_encoding"]).max(axis=1)
    )
    assert np.all((s["max_error"] <= 0.02) == s["converged"].astype(bool))
    assert np.all(s["sweeps"] >= 3)
    assert d.truth["interactions"].shape == (3, 8)
    # the same physics again: sample i from the i-th spawned generator
    cfg = load_simulate_config(config())
    streams = rng_streams(np.random.default_rng(3), ("samples",))["samples"].spawn(3)
    x = cfg["diffuse"]
    expected, target, mc = structure(x, physics(x), v, image_mask(x), streams[0])
    np.testing.assert_array_equal(target, s["target_encoding"][0])
    np.testing.assert_array_equal(mc.achieved, s["encoding"][0])
    np.testing.assert_array_equal(measure_correlations(mc.lattices, v), s["encoding"][0])
    assert expected.sum() == pytest.approx(1e6) and expected.shape == (32, 32)
    # the recorded physics re-simulates
    phys, vectors, mask = physics_from_attrs(json.loads(d.attrs["diffuse"]))
    np.testing.assert_array_equal(vectors, v)
    np.testing.assert_array_equal(mask, bragg_mask(32))
    assert expected_image(s["encoding"][0], vectors, phys).shape == (32, 32)


def test_same_seed_same_data_and_samples_do_not_depend_on_their_number():
    a, b = simulate(config()), simulate(config())
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.signals["encoding"], b.signals["encoding"])
    more = simulate(config(n_samples=4))
    np.testing.assert_array_equal(more.data[:3], a.data)
    other = copy.deepcopy(config())
    other["seed"] = 4
    assert not np.array_equal(simulate(other).data, a.data)


def test_the_file_round_trips_images_and_labels(tmp_path):
    out = tmp_path / "diffuse.cxi"
    mem = run(config(), out)
    d = read_cxi(out)
    np.testing.assert_array_equal(d.data, np.asarray(mem.data[:]))
    np.testing.assert_array_equal(d.mask, ~bragg_mask(32))
    assert d.centred and d.attrs["modality"] == "diffuse"
    for key in ("encoding", "target_encoding", "neighbour_vectors", "converged", "sweeps"):
        np.testing.assert_array_equal(d.signals[key], mem.signals[key])
    assert [str(t) for t in d.signals["encoding_names"]] == list(mem.signals["encoding_names"])
    assert json.loads(d.attrs["diffuse"])["dimension"] == 8


def test_element_form_factors_and_no_bragg_mask():
    d = simulate(
        config(
            n_samples=1,
            species={"a": "Cu", "b": "Au"},
            lattice={"shape": [32, 32], "n_lattices": 1, "constant": 3.0e-10},
            image={"size": 32, "bragg_mask": False},
        )
    )
    assert d.mask is None and d.data.sum() > 0


def test_memory_estimate_counts_frames_only_when_not_streaming():
    cfg = load_simulate_config(config())
    streamed, held = memory_parts(cfg, True), memory_parts(cfg, False)
    assert sum(held.values()) - sum(streamed.values()) == 3 * 32 * 32 * 4
    assert streamed["Monte Carlo and diffraction of one sample"] > 2 * 32 * 32 * 8 * 32


@pytest.mark.parametrize(
    "cfg, match",
    [
        (config(dimension=15, lattice={"shape": [6, 32]}),
         r"simulate\.diffuse\.lattice\.shape: \[6, 32\] is too small for the neighbour vectors "
         r"of dimension 15"),
        (config(lattice={"shape": [40, 40]}),
         r"simulate\.diffuse\.lattice\.shape: does not fit image\.size and image\.h_max"),
        (config(concentration=1e-4),
         r"simulate\.diffuse\.concentration: 0\.0001 leaves no site of one species"),
        (config(species={"a": "Cu"}), r"simulate\.diffuse\.lattice\.constant: is needed"),
        (config(species={"b": "Qq"}, lattice={"shape": [32, 32], "constant": 3e-10}),
         r"simulate\.diffuse\.species\.b: .*unknown element or ion 'Qq'"),
        (config(species={"a": 2.0, "b": 2.0}), r"simulate\.diffuse\.species: .*no contrast"),
        (config(dimension=5), r"diffuse\.dimension"),
        ({**config(), "noise": {"photons_per_probe": 1e6}},
         r"simulate\.noise\.photons_per_probe: diffuse sets the photons"),
        ({**config(), "geometry": {"binning": 2}}, r"simulate\.geometry\.binning"),
        (config(dimension=3, encoding={"values": [[0.1, 0.2, 0.0], [0.1, 0.2]]}),
         r"simulate\.diffuse\.encoding\.values\[1\]: 2 values for an encoding of dimension 3"),
        (config(dimension=3, encoding={"values": [[0.1, 1.5, 0.0]]}),
         r"simulate\.diffuse\.encoding\.values\[0\]\[1\]: 1\.5: a correlation coefficient"),
        (config(dimension=3, concentration=0.2, encoding={"values": [[-0.5, 0.0, 0.0]]}),
         r"simulate\.diffuse\.encoding\.values\[0\]: target correlation α\(1, 0\) = -0\.5 is "
         r"below -0\.25.*concentration 0\.2"),
    ],
    ids=["small", "sampling", "concentration", "constant", "element", "contrast", "dim",
         "photons", "binning", "length", "range", "pair-bound"],
)  # fmt: skip
def test_config_errors_name_the_key(cfg, match):
    with pytest.raises(ConfigError, match=match):
        load_simulate_config(cfg)


def test_given_target_encodings_are_reached_in_turn():
    given = [[0.3, -0.1, 0.05], [-0.2, 0.1, 0.0]]
    d = simulate(config(n_samples=3, dimension=3, encoding={"values": given}))
    t, a = d.signals["target_encoding"], d.signals["encoding"]
    np.testing.assert_allclose(t, [given[0], given[1], given[0]])
    converged = d.signals["converged"].astype(bool)
    assert converged.any()
    assert np.all(np.abs(a - t)[converged] <= 0.02 + 1e-12)


def test_train_data_has_no_given_encodings():
    assert "values" not in DATA_SECTION["properties"]["encoding"]["properties"]


def test_a_bad_given_encoding_exits_2_and_writes_nothing(tmp_path, capsys):
    cfg = config(dimension=3, concentration=0.2, encoding={"values": [[-0.5, 0.0, 0.0]]})
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    out = tmp_path / "d.cxi"
    assert main(["simulate", "--config", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "encoding.values[0]" in err and "Traceback" not in err and not out.exists()
