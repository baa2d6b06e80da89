"""xrf_speckle simulation: determinism, speckle size from grit and distance, fluorescence
counts against a hand calculation, the diffuser line and its spill, the data file, bad input."""

import copy
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import xraydb
import yaml

from xrayflow.cli import main
from xrayflow.errors import ConfigError
from xrayflow.io.cxi import DiffractionData, read_cxi, write_cxi
from xrayflow.modalities.xrf_speckle.diffusers import (
    Diffuser,
    expected_speckle_size,
    measure_speckle_size,
)
from xrayflow.modalities.xrf_speckle.simulate import n_patterns
from xrayflow.operators import PatternProjection
from xrayflow.simulate import load_simulate_config, run, simulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "simulate"))
from simconfigs import make_config

NOISE_FREE = {"noise": {"photons_per_probe": 1e8, "poisson": False}}


def tiny(**sections):
    """The generic tests' tiny config (32², 16 patterns) with ``sections`` merged in."""
    return make_config("xrf_speckle", **copy.deepcopy(sections))


def uniform_cobalt():
    """A uniform cobalt slab (4 voxels of 2 µm), Co mapped, no diffuser background."""
    return tiny(
        **NOISE_FREE,
        energy_ev=10000,
        phantom={
            "type": "battery_cathode",
            "shape": [4, None, None],
            "params": {"fractions": {}, "porosity": 0.0, "carbon_fraction": 0.0,
                       "binder": "cobalt"},
        },
        xrf_speckle={"elements": ["Co"], "background": {"view_factor": 0.0}},
    )  # fmt: skip


def test_demo_config_is_compressive_at_64_squared():
    cfg = load_simulate_config(
        Path(__file__).resolve().parents[2] / "config/simulate/xrf_speckle.yaml"
    )
    ny, nx = cfg["geometry"]["shape"]
    assert ny >= 64 and nx >= 64 and cfg["phantom"]["type"] == "battery_cathode"
    assert n_patterns(cfg) == 0.25 * ny * nx
    assert cfg["noise"]["photons_per_probe"] == 1e8


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = simulate(tiny()), simulate(tiny()), simulate(tiny(seed=2))
    assert np.array_equal(a.data, b.data)
    for k, v in a.signals.items():
        assert np.array_equal(v, b.signals[k]), k
    for k in ("element_maps", "raster_counts", "speckle_size_m"):
        assert np.array_equal(a.truth[k], b.truth[k]), k
    assert not np.array_equal(a.data, c.data)
    assert not np.array_equal(a.signals["counts"], c.signals["counts"])


@pytest.mark.parametrize(
    "energy_ev, pixel, diffusers",
    [
        (10000, 2e-6, None),  # the default pair: P2000 SiC at 1.5 m, P2500 SiC at 1.0 m
        (12000, 2.5e-6, [{"grit": 1200, "material": "Al2O3", "distance": 3.0}]),
    ],
    ids=["two_SiC", "one_Al2O3"],
)
def test_speckle_size_from_grit_and_distance(energy_ev, pixel, diffusers):
    xrf = {"n_patterns": 64, "raster": False}
    if diffusers:
        xrf["diffusers"] = diffusers
    d = simulate(
        tiny(
            **NOISE_FREE,
            energy_ev=energy_ev,
            geometry={"shape": 64, "pixel_size": pixel},
            xrf_speckle=xrf,
        )
    )
    cfg_diffusers = [Diffuser(**x) for x in d.config["xrf_speckle"]["diffusers"]]
    expected = expected_speckle_size(cfg_diffusers, energy_ev, 1e-3)
    assert d.truth["speckle_size_expected_m"] == pytest.approx(expected)
    assert d.truth["speckle_size_m"] == pytest.approx(expected, rel=0.2)
    assert measure_speckle_size(d.data, pixel) == pytest.approx(expected, rel=0.2)


def test_expected_speckle_size_limits():
    """Weak screens: the grain size; strong screens: ℓ/(√2σ); far away: λz/D."""
    thin = Diffuser(2000, "SiC", 1.0, thickness=1e-9)
    assert expected_speckle_size([thin], 10000, 1e-3) == pytest.approx(10.3e-6, rel=1e-3)
    thick = Diffuser(2000, "SiC", 1.0, thickness=4e-3)
    sigma = thick.phase_rms(10000)
    assert sigma > 10
    strong = 10.3e-6 / (math.sqrt(2.0) * sigma)
    assert expected_speckle_size([thick], 10000, 1e-3) == pytest.approx(strong, rel=1e-2)
    far = Diffuser(2000, "SiC", 100.0)
    lam = 1.239841984e-6 / 10000
    assert expected_speckle_size([far], 10000, 1e-4) == pytest.approx(lam * 100.0 / 1e-4)


def test_counts_of_a_uniform_map_against_a_hand_calculation():
    d = simulate(uniform_cobalt())
    e0, t_be, t_si, omega_sr = 10000.0, 12.5e-6, 350e-6, 0.1
    # sensitivity s = τ·(1 − 1/J)·ω·p·Ω/4π·ε, by hand from the xraydb tables
    edge = xraydb.xray_edge("Co", "K")
    ka = [v for name, v in xraydb.xray_lines("Co", "K").items() if name.startswith("Ka")]
    p = sum(v.intensity for v in ka)
    e_ka = sum(v.energy * v.intensity for v in ka) / p
    eps = math.exp(-xraydb.material_mu("Be", e_ka) * t_be * 100) * (
        1 - math.exp(-xraydb.material_mu("Si", e_ka) * t_si * 100)
    )
    tau = xraydb.mu_elam("Co", e0, kind="photo")
    s = tau * (1 - 1 / edge.jump_ratio) * edge.fyield * p * omega_sr / (4 * math.pi) * eps
    assert d.signals["sensitivity"][0] == pytest.approx(s, rel=1e-9)
    assert list(d.signals["line_names"]) == ["Co Ka", "Si Ka"]
    assert d.signals["line_energies_ev"][0] == pytest.approx(e_ka)
    c = 8.90 * 4 * 2e-4  # g/cm²: cobalt 8.90 g/cm³ × 4 voxels of 2 µm
    np.testing.assert_allclose(d.truth["element_maps"], c, rtol=1e-6)
    # y_k = s·c·Σ_r I_k(r): every pattern's photons times s·c
    expected = s * c * d.data.sum(axis=(1, 2), dtype=np.float64)
    np.testing.assert_allclose(d.signals["counts"][:, 0], expected, rtol=1e-5)
    np.testing.assert_array_equal(d.signals["counts"][:, 1], 0)  # view factor 0
    # the dose: 1e8 photons per pattern on average, the raster at the same total dose
    assert d.data.sum(axis=(1, 2)).mean() == pytest.approx(1e8, rel=0.05)
    per_point = 16 * 1e8 / 32**2
    np.testing.assert_allclose(d.truth["raster_counts"], s * c * per_point, rtol=1e-5)
    np.testing.assert_allclose(d.truth["raster_maps"], c, rtol=1e-5)
    assert d.attrs["photons_per_pattern"] == 1e8 and d.attrs["n_patterns"] == 16


def test_diffuser_lines_and_their_spill_as_configured():
    xrf = {
        "diffusers": [
            {"grit": 2000, "material": "SiC", "distance": 1.5},
            {"grit": 2500, "material": "Al2O3", "distance": 1.0},
        ],
        "background": {"view_factor": 1.0, "spill": {"Co": 0.3, "Fe": 0.0}},
    }
    d = simulate(tiny(**NOISE_FREE, energy_ev=10000, xrf_speckle=xrf))
    s = d.signals
    assert list(s["line_names"]) == ["Co Ka", "Fe Ka", "Mn Ka", "Si Ka", "Al Ka"]
    assert list(s["line_kind"]) == ["sample"] * 3 + ["diffuser"] * 2
    assert list(s["line_elements"]) == ["Co", "Fe", "Mn", "Si", "Al"]
    np.testing.assert_allclose(s["line_energies_ev"][3:], [1740, 1487], atol=2)
    assert (s["sensitivity"][:3] > 0).all() and (s["sensitivity"][3:] == 0).all()
    np.testing.assert_array_equal(d.truth["background_spill"], [[0.3, 0.3], [0, 0], [0, 0]])
    counts = s["counts"].astype(np.float64)
    d_k = counts[:, 3:].sum(axis=1)
    assert (d_k > 0).all()
    # what the sample lines hold beyond s_e·Σ I·c is the spill β_e·d_k
    frames = np.asarray(d.data, dtype=np.float64)
    maps = d.truth["element_maps"].astype(np.float64)
    sample = PatternProjection(frames, s["sensitivity"][:3]).fwd(maps)
    np.testing.assert_allclose(counts[:, :3] - sample, np.outer(d_k, [0.3, 0, 0]), atol=0.05)
    # diffuser line j = s_j · (photons on paper j) · (its element's areal mass), one layer
    # of grains (d50 thick); N photons reach the sample behind both papers' absorption
    papers = (("SiC", "Si", 10.3e-6, 3.21), ("Al2O3", "Al", 8.4e-6, 3.95))
    t = [math.exp(-xraydb.material_mu(f, 10000, rho) * d50 * 100) for f, _, d50, rho in papers]
    incident = (1e8 / (t[0] * t[1]), 1e8 / t[1])
    for j, (formula, el, d50, rho) in enumerate(papers):
        parsed = xraydb.chemparse(formula)
        mass = sum(n * xraydb.atomic_mass(e) for e, n in parsed.items())
        w = parsed[el] * xraydb.atomic_mass(el) / mass
        edge = xraydb.xray_edge(el, "K")
        _, e_line, prob = xraydb.fluor_yield(el, "K", "Ka", 10000)
        eps = math.exp(-xraydb.material_mu("Be", e_line) * 12.5e-4) * (
            1 - math.exp(-xraydb.material_mu("Si", e_line) * 350e-4)
        )
        s_j = (xraydb.mu_elam(el, 10000, kind="photo") * (1 - 1 / edge.jump_ratio)
               * edge.fyield * prob * 0.1 / (4 * math.pi) * eps)  # fmt: skip
        hand = s_j * incident[j] * w * rho * d50 * 100
        assert counts[:, 3 + j].mean() == pytest.approx(hand, rel=0.03)


def test_data_file_round_trip(tmp_path):
    out = tmp_path / "xrf.cxi"
    d = run(tiny(), out)
    r = read_cxi(out)
    assert r.attrs["modality"] == "xrf_speckle" and not r.centred
    np.testing.assert_array_equal(r.data, np.asarray(d.data))
    assert set(r.signals) == {
        "counts", "line_names", "line_energies_ev", "line_elements", "line_kind",
        "sensitivity", "transmission",
    }  # fmt: skip
    for k, v in d.signals.items():
        np.testing.assert_array_equal(r.signals[k], np.asarray(v), err_msg=k)
    assert r.signals["counts"].dtype == np.float32 and r.signals["counts"].shape == (16, 4)
    assert r.signals["line_names"].dtype.kind == "U"
    assert r.signals["transmission"].shape == (32, 32)
    assert r.truth["elements"] == ["Co", "Fe", "Mn"]
    assert r.truth["element_maps"].shape == r.truth["raster_maps"].shape == (3, 32, 32)
    assert r.geometry.object_pixel == (2e-6, 2e-6)
    # a subset of frames keeps every signal whole
    assert read_cxi(out, indices=[1, 2]).signals["counts"].shape == (16, 4)


def test_signals_round_trip_any_file(tmp_path):
    signals = {
        "names": np.array(["a", "bé"]),
        "table": np.arange(6, dtype=np.float64).reshape(2, 3),
        "scalar": np.float32(2.5),
    }
    d = DiffractionData(np.ones((2, 4, 4), np.float32), 8000.0, 1.0, (1e-4, 1e-4),
                        signals=signals)  # fmt: skip
    write_cxi(tmp_path / "s.cxi", d)
    r = read_cxi(tmp_path / "s.cxi")
    assert r.signals["names"].tolist() == ["a", "bé"]
    np.testing.assert_array_equal(r.signals["table"], signals["table"])
    assert float(r.signals["scalar"]) == 2.5
    write_cxi(tmp_path / "none.cxi", DiffractionData(d.data, 8000.0, 1.0, (1e-4, 1e-4)))
    assert read_cxi(tmp_path / "none.cxi").signals == {}


BAD = [
    ({"xrf_speckle": {"elements": ["Co", "Xx"]}}, r"xrf_speckle\.elements\[1\]: .*'Xx'"),
    ({"xrf_speckle": {"elements": ["W"]}, "energy_ev": 10000},
     r"xrf_speckle\.elements\[0\]: the W Ka line .* above the beam energy"),
    ({"energy_ev": 7000}, r"xrf_speckle\.elements\[0\]: the Co Ka line .*K edge"),
    ({"noise": {"photons_per_probe": -1e8}}, r"noise\.photons_per_probe"),
    ({"noise": {"photons_per_probe": 0}}, r"noise\.photons_per_probe"),
    ({"xrf_speckle": {"diffusers": [{"grit": 2001, "distance": 1.0}]}},
     r"xrf_speckle\.diffusers\[0\]\.grit: P2001 .*2000"),
    ({"xrf_speckle": {"background": {"spill": {"Ni": 0.1}}}},
     r"xrf_speckle\.background\.spill\.Ni"),
    ({"geometry": {"shape": 32, "binning": 2}}, r"geometry\.binning"),
    ({"xrf_speckle": {"diffusers": [{"grit": 2500, "distance": 1.0, "thickness": 1e-3}]}},
     r"xrf_speckle\.diffusers: the expected speckle size"),
]  # fmt: skip


@pytest.mark.parametrize("sections, match", BAD, ids=lambda v: str(v)[:40])
def test_bad_input_names_the_key(sections, match):
    with pytest.raises(ConfigError, match=match):
        load_simulate_config(tiny(**sections))


def test_element_missing_from_the_sample_names_the_key():
    with pytest.raises(ConfigError, match=r"xrf_speckle\.elements\[3\]: Ni is in none"):
        simulate(tiny(energy_ev=10000, xrf_speckle={"elements": ["Co", "Fe", "Mn", "Ni"]}))


@pytest.mark.parametrize(
    "sections, key",
    [
        (BAD[0][0], "xrf_speckle.elements[1]"),
        (BAD[1][0], "xrf_speckle.elements[0]"),
        (BAD[3][0], "noise.photons_per_probe"),
        ({"xrf_speckle": {"elements": ["Co", "Ni"]}}, "xrf_speckle.elements[1]"),
    ],
    ids=["unknown_element", "line_above_beam", "negative_dose", "element_not_in_sample"],
)
def test_cli_exits_2_and_writes_nothing(tmp_path, sections, key, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(tiny(**sections)))
    out = tmp_path / "out.cxi"
    assert main(["simulate", "--config", str(cfg), "--out", str(out)]) == 2
    assert f"simulate.{key}" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]
