"""simulate reliability: streamed frames are bit-identical to the in-memory path, memory
does not grow with the number of positions, the memory guard refuses fast, and failed
runs leave nothing behind."""

import time
import tracemalloc

import numpy as np
import pytest
from simconfigs import make_config

from xrayflow.errors import ConfigError, PhysicsError, ResourceError
from xrayflow.io.cxi import StreamedFrames, read_cxi
from xrayflow.modalities import get_modality
from xrayflow.modalities import simulation as C
from xrayflow.simulate import estimate_memory, load_simulate_config, run, simulate

FAR_FIELD = {
    "ptycho2d": {},
    "multislice_ptycho": {"probe": {"modes": 2, "coherence_fraction": 0.8}},
    "ptychotomo": {},
    # binning, module gap, beamstop, saturation, gzip and a batch that does not divide P
    "ptycho2d-detector": {
        "batch_size": 3,
        "scan": {"n_y": 3, "n_x": 3, "step": 0.25e-6},
        "geometry": {
            "binning": 2,
            "gaps": [{"axis": 0, "start": 10, "width": 2}],
            "beamstop_radius_px": 2,
            "saturation": 50,
        },
        "output": {"compression": "gzip"},
    },
}


@pytest.mark.parametrize("name", list(FAR_FIELD))
def test_streamed_frames_bit_identical_to_memory(name, tmp_path):
    modality = name.split("-")[0]
    cfg = make_config(modality, **FAR_FIELD[name])
    mem = simulate(cfg)
    assert isinstance(mem.data, np.ndarray)
    out = tmp_path / "s.cxi"
    streamed = run(cfg, out)
    assert isinstance(streamed.data, StreamedFrames)
    r = read_cxi(out)
    assert r.data.dtype == np.float32 and r.data.shape == mem.data.shape
    assert np.array_equal(r.data, mem.data)  # bit-identical
    assert r.centred and mem.centred
    assert streamed.data.sum() == pytest.approx(float(mem.data.sum(dtype=np.float64)))
    np.testing.assert_array_equal(r.positions, mem.positions)
    if mem.mask is not None:
        np.testing.assert_array_equal(r.mask, mem.mask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.cxi"]


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_streaming_memory_does_not_grow_with_positions(tmp_path):
    """16 vs 1024 positions on the same object: the streamed run's peak stays flat while
    holding the frames (the in-memory path) grows by their size (1024 x 64^2 x 4 B = 16 MiB)."""

    def cfg(n):
        return make_config(
            "ptycho2d",
            batch_size=8,
            geometry={"shape": 64},
            scan={"n_y": n, "n_x": n, "step": 0.1e-6},
            phantom={"shape": [2, 160, 160]},
        )

    frames_bytes = 1024 * 64 * 64 * 4
    small = _peak(lambda: run(cfg(4), tmp_path / "a.cxi"))
    large = _peak(lambda: run(cfg(32), tmp_path / "b.cxi"))
    assert read_cxi(tmp_path / "b.cxi", indices=[0]).n_frames == 1
    assert large - small < 0.15 * frames_bytes, (small, large)
    in_memory = _peak(lambda: simulate(cfg(32)))
    assert in_memory - large > 0.8 * frames_bytes, (large, in_memory)


def test_memory_estimate_covers_measured_peak(tmp_path):
    cfg = load_simulate_config(make_config("multislice_ptycho", batch_size=4))
    est = estimate_memory(cfg, streaming=True)
    peak = _peak(lambda: run(cfg, tmp_path / "m.cxi"))
    assert 0.5 * peak < est + (64 << 20)  # same order (fixed library overhead aside)


def test_memory_guard_refuses_in_under_2_s(tmp_path):
    """4096^2 frames x 10,000 positions (670 GB held in memory before streaming)."""
    cfg = make_config("ptycho2d", geometry={"shape": 4096}, scan={"n_y": 100, "n_x": 100})
    t0 = time.perf_counter()
    with pytest.raises(ResourceError, match=r"needs about .* GiB.*limit"):
        run(cfg, tmp_path / "huge.cxi")
    assert time.perf_counter() - t0 < 2.0
    assert list(tmp_path.iterdir()) == []


def test_in_memory_frames_count_towards_the_estimate():
    cfg = load_simulate_config(
        make_config("ptycho2d", geometry={"shape": 256}, scan={"n_y": 100, "n_x": 100})
    )
    memory_parts = get_modality("ptycho2d").simulate_memory
    streamed = memory_parts(cfg, True)
    held = memory_parts(cfg, False)
    extra = sum(held.values()) - sum(streamed.values())
    assert extra >= 10_000 * 256 * 256 * 4


def test_max_memory_gb_refuses_and_check_prints_estimate(tmp_path, capsys):
    from xrayflow.cli import main

    p = tmp_path / "sim.yaml"
    import yaml

    p.write_text(yaml.safe_dump(make_config("ptycho2d")))
    assert main(["simulate", "--config", str(p), "--check"]) == 0
    assert "# memory estimate:" in capsys.readouterr().out
    rc = main(["simulate", "--config", str(p), "--check", "--set", "max_memory_gb=1e-5"])
    assert rc == 2
    assert "simulate.max_memory_gb" in capsys.readouterr().err
    assert sorted(q.name for q in tmp_path.iterdir()) == ["sim.yaml"]


def test_failure_while_streaming_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = C.detect

    def failing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise PhysicsError("detector exploded")
        return real(*a, **k)

    monkeypatch.setattr(C, "detect", failing)
    cfg = make_config("ptycho2d", batch_size=1)
    with pytest.raises(PhysicsError, match="exploded"):
        run(cfg, tmp_path / "x.cxi")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"noise": {"photons_per_probe": 1e-12}}, "frames are zero"),
        ({"noise": {"photons_per_probe": 1e12}, "geometry": {"saturation": 1}}, "saturated"),
    ],
)
@pytest.mark.parametrize("streamed", [False, True])
def test_all_zero_and_saturated_refused(settings, match, streamed, tmp_path):
    cfg = make_config("ptycho2d", **settings)
    with pytest.raises(PhysicsError, match=match):
        if streamed:
            run(cfg, tmp_path / "z.cxi")
        else:
            simulate(cfg)
    assert list(tmp_path.iterdir()) == []


def test_partly_saturated_data_pass():
    d = simulate(make_config("ptycho2d", geometry={"saturation": 200}))
    assert d.data.max() == 200 and (d.data < 200).any()


@pytest.mark.parametrize(
    "override, match",
    [
        ("energy_ev=8", r"did you mean 8000 eV \(8 keV\)"),
        ("geometry.pixel_size=75", r"7\.5e-05 m \(75 µm\)"),
        ("geometry.distance=1e30", r"geometry\.distance"),
        ("geometry.distance=2000", r"2 m \(2000 mm\)"),
    ],
)
def test_physical_ranges(override, match):
    with pytest.raises(ConfigError, match=match):
        load_simulate_config(make_config("ptycho2d"), [override])


def test_example_configs_in_range_and_fit():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "config" / "simulate"
    for path in sorted(root.glob("*.yaml")):
        cfg = load_simulate_config(path)
        assert estimate_memory(cfg, streaming=True) > 0, path
