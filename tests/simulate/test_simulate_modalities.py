"""Every registered modality: shapes, determinism, photon scaling, Parseval, truth, I/O."""

import numpy as np
import pytest
from simconfigs import MODALITY_NAMES, make_config

from xrayflow.io.cxi import read_cxi
from xrayflow.modalities import Modality, modalities, register, unregister
from xrayflow.simulate import run, simulate

EXPECTED_FRAMES = {
    "ptycho2d": (4, 32, 32),
    "multislice_ptycho": (4, 32, 32),
    "ptychotomo": (6, 32, 32),
    "holography": (2, 64, 64),
    "bragg_cdi": (16, 16, 16),
    "xrf_speckle": (16, 32, 32),
}


def test_builtin_modalities_registered():
    assert set(MODALITY_NAMES) <= set(modalities())


@pytest.mark.parametrize("modality", MODALITY_NAMES)
def test_shapes_and_counts(modality):
    d = simulate(make_config(modality))
    assert d.data.shape == EXPECTED_FRAMES[modality]
    assert d.data.dtype == np.float32
    assert np.all(d.data >= 0) and np.all(np.isfinite(d.data))
    assert np.array_equal(d.data, np.round(d.data))  # Poisson counts are integers
    assert d.attrs["modality"] == modality
    assert d.provenance["seed"] == 1 and d.config["modality"] == modality
    if modality in ("ptycho2d", "multislice_ptycho", "ptychotomo"):
        assert d.positions.shape == (d.n_frames, 2)
        assert d.truth["probe"].shape == (1, 32, 32)
        assert d.centred
    if modality == "ptychotomo":
        assert d.angles.shape == (6,)
        assert d.truth["delta"].ndim == 3 and len(d.truth["angles"]) == 3
    if modality == "holography":
        assert not d.centred and d.positions is None
        np.testing.assert_allclose(d.attrs["magnifications"], [3.0, 3.5])
        np.testing.assert_allclose(d.attrs["effective_distances"], [0.4 / 3, 0.5 / 3.5])
    if modality == "bragg_cdi":
        assert d.attrs["fft_ndim"] == 3
        assert d.truth["strain_phase"].shape == d.truth["support"].shape == (8, 8, 8)
        assert np.abs(d.truth["strain_phase"]).max() > 0


@pytest.mark.parametrize("modality", MODALITY_NAMES)
def test_same_seed_bit_identical_and_seed_matters(modality):
    a = simulate(make_config(modality))
    b = simulate(make_config(modality))
    c = simulate(make_config(modality, seed=2))
    assert np.array_equal(a.data, b.data)
    for k, v in a.truth.items():
        if isinstance(v, np.ndarray):
            assert np.array_equal(v, b.truth[k]), k
    assert not np.array_equal(a.data, c.data)


@pytest.mark.parametrize("modality", MODALITY_NAMES)
def test_expected_counts_scale_with_fluence(modality):
    lo = simulate(make_config(modality, noise={"photons_per_probe": 1e4, "poisson": False}))
    hi = simulate(make_config(modality, noise={"photons_per_probe": 1e6, "poisson": False}))
    np.testing.assert_allclose(hi.data, 100 * lo.data, rtol=2e-4, atol=1e-3)


@pytest.mark.parametrize("modality", ["ptycho2d", "multislice_ptycho", "ptychotomo", "holography"])
def test_parseval_total_equals_probe_photons(modality):
    """Vacuum sample, no noise: each frame holds exactly the probe's photons."""
    cfg = make_config(modality, noise={"photons_per_probe": 1e5, "poisson": False})
    cfg["phantom"]["material"] = "vacuum"
    cfg["phantom"]["type"] = "siemens_star"
    cfg["phantom"]["params"] = {}
    d = simulate(cfg)
    np.testing.assert_allclose(d.data.reshape(d.n_frames, -1).sum(1), 1e5, rtol=1e-5)
    if "probe" in d.truth and d.truth["probe"].ndim == 3 and modality != "holography":
        assert np.sum(np.abs(d.truth["probe"].astype(complex)) ** 2) == pytest.approx(1e5, 1e-5)


def test_bragg_total_photons_and_friedel_symmetry():
    cfg = make_config("bragg_cdi", noise={"photons_per_probe": 1e6, "poisson": False})
    cfg["bragg"] = {"strain": {"amplitude": 0.0}}
    d = simulate(cfg)
    assert d.data.sum() == pytest.approx(1e6, rel=1e-4)
    # real (unstrained) crystal: I(q) = I(-q) about the centre (index N//2)
    c = d.data[1:, 1:, 1:]
    np.testing.assert_allclose(c, c[::-1, ::-1, ::-1], rtol=1e-3, atol=1e-3 * c.max())


def test_fluence_option_and_mask_binning():
    d = simulate(
        make_config(
            "ptycho2d",
            noise={"photons_per_probe": None, "photons_per_m2": 1e20, "poisson": False},
            geometry={"shape": 32, "binning": 2, "gaps": [{"axis": 1, "start": 15, "width": 2}]},
        )
    )
    assert d.data.shape == (4, 16, 16)
    assert d.pixel_size == (150e-6, 150e-6)
    assert d.mask is not None and not d.mask[:, 7].any() and d.mask[:, 0].all()
    assert np.all(d.data[:, ~d.mask] == 0)


def test_multimode_probe():
    d = simulate(make_config("ptycho2d", probe={"modes": 3, "coherence_fraction": 0.7}))
    assert d.truth["probe"].shape == (3, 32, 32)


def test_run_writes_readable_cxi(tmp_path):
    out = tmp_path / "sim.cxi"
    d = run(make_config("multislice_ptycho"), out)
    r = read_cxi(out)
    np.testing.assert_array_equal(r.data, d.data)
    np.testing.assert_allclose(r.positions, d.positions)
    assert r.attrs["modality"] == "multislice_ptycho"
    assert r.config["multislice"]["n_slices"] == 2
    assert r.truth["object"].shape[0] == 2  # two slice transmissions
    assert r.provenance["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim.cxi"]


def test_registry_plugin_modality():
    from xrayflow.io.cxi import DiffractionData

    def flat(config, rng, backend):
        n = config["geometry"]["shape"]
        lam = np.full((2, n, n), config["flat"]["level"])
        return DiffractionData(
            rng.poisson(lam).astype(np.float32),
            config["energy_ev"],
            1.0,
            (1e-4, 1e-4),
            attrs={"modality": "test_flat_field"},
        )

    register(
        Modality(
            "test_flat_field",
            description="uniform frames (test plug-in)",
            simulate=flat,
            simulate_sections={
                "flat": {
                    "type": "object",
                    "default": {},
                    "additionalProperties": False,
                    "properties": {"level": {"type": "number", "default": 3.0}},
                }
            },
        )
    )
    try:
        d = simulate(
            {
                "modality": "test_flat_field",
                "energy_ev": 5000,
                "geometry": {"shape": 8},
                "flat": {"level": 5.0},
            }
        )
        assert d.data.shape == (2, 8, 8) and d.config["flat"]["level"] == 5.0
    finally:
        unregister("test_flat_field")


@pytest.mark.parametrize(
    "probe",
    [
        {"kind": "pinhole", "pinhole": {"diameter": 1.0e-6, "distance": 20e-6}},
        {
            "kind": "diffuser",
            "diffuser": {"grain_size": 0.15e-6, "strength": 2.0, "envelope_diameter": 1.0e-6},
        },
        {
            "kind": "zone_plate",
            "zone_plate": {"diameter": 20e-6, "outer_zone_width": 100e-9, "defocus": 150e-6},
        },
        {"kind": "gaussian", "gaussian": {"waist": 0.3e-6, "defocus": 50e-6}},
    ],
    ids=lambda p: p["kind"],
)
def test_probe_kinds(probe):
    d = simulate(
        make_config(
            "ptycho2d",
            probe=probe,
            geometry={"shape": 64},
            noise={"photons_per_probe": 1e5, "poisson": False},
        )
    )
    assert d.data.shape == (4, 64, 64)
    assert np.sum(np.abs(d.truth["probe"].astype(complex)) ** 2) == pytest.approx(1e5, 1e-5)


def test_photons_per_m2_scales_linearly():
    def run_f(f):
        return simulate(
            make_config(
                "ptycho2d", noise={"photons_per_probe": None, "photons_per_m2": f, "poisson": False}
            )
        ).data

    np.testing.assert_allclose(run_f(4e20), 2 * run_f(2e20), rtol=2e-4, atol=1e-3)


def test_holography_and_tomo_round_trip(tmp_path):
    h = run(make_config("holography"), tmp_path / "h.cxi")
    r = read_cxi(tmp_path / "h.cxi")
    assert not r.centred and r.positions is None
    np.testing.assert_allclose(r.attrs["distances"], [0.4, 0.5])
    np.testing.assert_array_equal(r.data, h.data)
    t = run(make_config("ptychotomo"), tmp_path / "t.cxi")
    r = read_cxi(tmp_path / "t.cxi", indices=[2, 3])
    np.testing.assert_allclose(r.angles, t.angles[[2, 3]])
    assert r.angles[0] == r.angles[1] == t.truth["angles"][1]  # angle-major frame order
    np.testing.assert_array_equal(r.data, t.data[[2, 3]])
