"""The scattering simulate stage: the data in memory and in the CXI file (tags, beam
centres, masks), the recorded tag subset, and the config checks."""

import copy

import numpy as np
import pytest

from xrayflow.errors import ConfigError
from xrayflow.io.cxi import read_cxi
from xrayflow.modalities.scattering.detector import gap_mask
from xrayflow.modalities.scattering.generator import generate
from xrayflow.modalities.scattering.simulate import base_geometry, memory_parts
from xrayflow.modalities.scattering.tags import TAGS
from xrayflow.modalities.simulation import rng_streams
from xrayflow.simulate import load_simulate_config, run, simulate

BASE = {
    "modality": "scattering",
    "energy_ev": 8900.0,
    "seed": 3,
    "batch_size": 2,
    "geometry": {"shape": [48, 64], "pixel_size": 75e-6, "distance": 5.0},
    "scattering": {
        "n_images": 5,
        "beam_center": {"y_range": [-0.3, 1.3], "x_range": [0.2, 0.8]},
        "detector": {"module_shape": [30, 40], "gap_width": [3, 2]},
    },
    "output": {"compression": "none"},
}


def config(**sections):
    cfg = copy.deepcopy(BASE)
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def test_simulate_returns_tagged_images_as_the_generator_makes_them():
    d = simulate(config())
    assert d.data.shape == (5, 48, 64) and d.data.dtype == np.float32 and not d.centred
    assert d.attrs["modality"] == "scattering" and d.pixel_size == (75e-6, 75e-6)
    gaps = gap_mask((48, 64), (30, 40), (3, 2))
    assert np.array_equal(d.mask, gaps) and not gaps[30:33].any() and not gaps[:, 40:42].any()
    s = d.signals
    assert s["frame_mask"].shape == (5, 48, 64) and s["frame_mask"].dtype == np.uint8
    assert not s["frame_mask"][:, ~gaps].any()  # every image's good pixels exclude the gaps
    assert s["tags"].shape == (5, len(TAGS)) and list(s["tag_names"]) == list(TAGS)
    cfg = load_simulate_config(config())
    rng = rng_streams(np.random.default_rng(3), ("images",))["images"]
    images = list(generate(cfg["scattering"], base_geometry(cfg), 5, rng))
    for i, img in enumerate(images):
        assert np.array_equal(d.data[i], img.counts) and np.array_equal(s["tags"][i], img.tags)
        assert tuple(s["beam_center"][i]) == img.beam_center
        assert np.array_equal(s["frame_mask"][i], img.mask)
        assert tuple(s["q_range"][i]) == img.q_range
    off = [not (-0.5 <= y <= 47.5) for y, _ in s["beam_center"]]
    assert any(off)
    column = list(TAGS).index("instrumental.beam.off_image")
    assert list(s["tags"][:, column]) == off
    assert d.truth["mean_per_pixel"].shape == (5,)


def test_the_file_round_trips_frames_tags_and_beam_centres(tmp_path):
    out = tmp_path / "scattering.cxi"
    run(config(), out)
    mem = simulate(config())
    d = read_cxi(out)
    assert np.array_equal(d.data, mem.data) and np.array_equal(d.mask, mem.mask)
    assert d.attrs["modality"] == "scattering" and not d.centred
    for key in ("tags", "beam_center", "frame_mask", "q_range"):
        assert np.array_equal(d.signals[key], mem.signals[key]), key
        assert d.signals[key].dtype == mem.signals[key].dtype, key
    assert [str(t) for t in d.signals["tag_names"]] == list(TAGS)
    assert np.array_equal(d.truth["mean_per_pixel"], mem.truth["mean_per_pixel"])


def test_a_tag_subset_records_those_columns():
    names = [TAGS[5], TAGS[0], TAGS[27]]
    full = simulate(config())
    sub = simulate(config(scattering={**BASE["scattering"], "tags": names}))
    assert list(sub.signals["tag_names"]) == names
    assert np.array_equal(sub.signals["tags"], full.signals["tags"][:, [5, 0, 27]])
    assert np.array_equal(sub.data, full.data)


def test_memory_estimate_counts_frames_only_when_not_streaming():
    cfg = load_simulate_config(config())
    streamed, held = memory_parts(cfg, True), memory_parts(cfg, False)
    assert sum(held.values()) - sum(streamed.values()) == 5 * 48 * 64 * 4
    assert streamed["5 frame masks"] == 5 * 48 * 64


def _sc(**sub):
    return config(scattering={**BASE["scattering"], **sub})


@pytest.mark.parametrize(
    "cfg, key",
    [
        (
            _sc(sample={"rings": {"d_spacings": [300.0, 0.01]}}),
            r"simulate\.scattering\.sample\.rings\.d_spacings\[1\]: d = 0\.01 nm .* nowhere",
        ),
        (
            _sc(sample={"rings": {"d_spacings": [1e5]}}),
            r"simulate\.scattering\.sample\.rings\.d_spacings\[0\]",
        ),
        (
            _sc(sample={"halo": {"d_range": [1e4, 1e5]}}),
            r"simulate\.scattering\.sample\.halo\.d_range: .* nowhere",
        ),
        (
            _sc(beam_center={"fixed": [1e6, 1e6]}),
            r"simulate\.scattering\.beam_center\.fixed: .* nothing can be placed",
        ),
        (
            _sc(tags=["features.main.ring", "image.problem.zinger"]),
            r"simulate\.scattering\.tags\[1\]: unknown tag 'image\.problem\.zinger'; did you "
            r"mean 'image\.problem\.zingers'",
        ),
        (
            _sc(counts={"mean_per_pixel": [100.0, 10.0]}),
            r"simulate\.scattering\.counts\.mean_per_pixel: range \[100\.0, 10\.0\] has lo > hi",
        ),
        (
            _sc(counts={"weak_below": 500.0}),
            r"simulate\.scattering\.counts\.weak_below",
        ),
        (
            _sc(sample={"lattice": {"constant": [0.01, 0.02]}}),
            r"simulate\.scattering\.sample\.lattice\.constant: .* first reflection",
        ),
        (
            _sc(sample={"lattice": {"constant": [1e5, 2e5]}}),
            r"simulate\.scattering\.sample\.lattice\.constant: .* too many reflections",
        ),
        (
            config(geometry={**BASE["geometry"], "gaps": [{"axis": 0, "start": 3, "width": 2}]}),
            r"simulate\.geometry\.gaps: .* scattering\.detector",
        ),
        (
            config(noise={"photons_per_probe": 1e6}),
            r"simulate\.noise\.photons_per_probe: .*mean_per_pixel",
        ),
    ],
    ids=[
        "d_beyond",
        "d_inside_beam",
        "d_range",
        "beam_far",
        "tag",
        "range",
        "strength",
        "lattice_small",
        "lattice_large",
        "geometry_gaps",
        "photons",
    ],
)
def test_config_errors_name_the_key(cfg, key):
    with pytest.raises(ConfigError, match=key):
        load_simulate_config(cfg)


def test_a_configured_d_spacing_and_an_off_image_beam_on_the_detector_are_accepted():
    cfg = load_simulate_config(
        _sc(beam_center={"fixed": [-20.0, 30.0]}, sample={"rings": {"d_spacings": [300.0]}})
    )
    assert cfg["scattering"]["beam_center"]["fixed"] == [-20.0, 30.0]
