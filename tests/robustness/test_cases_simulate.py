"""Bad input and misuse of ``xrayflow simulate``: every case exits 2 with a message naming
the problem, writes nothing and leaves its inputs byte-identical (see robust_harness).

Classes of issue 12 covered: output safety (2), physical ranges of energy, distances and
pixel sizes with unit hints, all-zero / saturated data (4), memory guard (6), bad --set
values, duplicate and unknown keys, missing files (5, 7).
"""

from __future__ import annotations

import time

import pytest
from robust_harness import (
    SIM,
    Case,
    append_text,
    hardlink,
    replace_arg,
    run_case,
    symlink,
    with_set,
    write_file,
)

CHECK = ["simulate", "--config", "sim.yaml", "--check"]
HOLO = with_set(SIM, "modality=holography")

CASES = [
    # --- output safety (before any computation)
    Case("out-is-config", replace_arg(SIM, "--out", "sim.yaml"), r"would overwrite.*sim\.yaml"),
    Case("out-is-config-dotted", replace_arg(SIM, "--out", "./sim.yaml"), r"would overwrite"),
    Case(
        "out-symlink-to-config",
        replace_arg(SIM, "--out", "link.cxi"),
        r"would overwrite.*--config",
        symlink("link.cxi", "sim.yaml", absolute=False),
    ),
    Case(
        "out-hardlink-to-config",
        replace_arg(SIM, "--out", "hard.cxi"),
        r"would overwrite",
        hardlink("hard.cxi", "sim.yaml"),
    ),
    Case("out-dev-full", replace_arg(SIM, "--out", "/dev/full"), r"/dev/full.*not a regular"),
    Case("out-is-directory", replace_arg(SIM, "--out", "shards"), r"shards.*directory"),
    Case("out-missing-dir", replace_arg(SIM, "--out", "nodir/new.cxi"), r"nodir.*does not exist"),
    Case("out-empty", replace_arg(SIM, "--out", ""), r"--out.*empty"),
    Case("out-missing", SIM[:3], r"--out FILE is required"),
    Case("config-missing-flag", ["simulate", "--out", "new.cxi"], r"--config FILE is required"),
    Case("config-not-found", replace_arg(SIM, "--config", "nope.yaml"), r"nope\.yaml"),
    # --- photon energy (X-rays: 100 eV - 200 keV) with keV/eV hints
    Case(
        "energy-kev-slip",
        with_set(SIM, "energy_ev=8"),
        r"energy_ev.*did you mean 8000 eV \(8 keV\)",
    ),
    Case(
        "energy-kev-slip-17", with_set(SIM, "energy_ev=17.5"), r"energy_ev.*17500 eV \(17\.5 keV\)"
    ),
    Case("energy-visible-light", with_set(SIM, "energy_ev=2e-3"), r"energy_ev.*not an X-ray"),
    Case("energy-gamma", with_set(SIM, "energy_ev=2e7"), r"energy_ev.*not an X-ray.*20000 eV"),
    Case("energy-negative", with_set(SIM, "energy_ev=-5"), r"energy_ev.*-5"),
    Case("energy-inf", with_set(SIM, "energy_ev=.inf"), r"energy_ev.*inf"),
    Case("energy-string", with_set(SIM, "energy_ev=eight"), r"energy_ev"),
    Case("energy-check-only", with_set(CHECK, "energy_ev=8"), r"energy_ev.*8 keV"),
    # --- distances
    Case("distance-1e30", with_set(SIM, "geometry.distance=1e30"), r"geometry\.distance.*1e\+30"),
    Case(
        "distance-mm-slip", with_set(SIM, "geometry.distance=2000"), r"did you mean 2 m \(2000 mm\)"
    ),
    Case("distance-zero", with_set(SIM, "geometry.distance=0"), r"geometry\.distance"),
    Case(
        "distance-too-close-paraxial",
        with_set(SIM, "geometry.distance=0.002"),
        r"geometry\.distance.*scattering angle.*paraxial",
    ),
    Case(
        "distance-not-fraunhofer",
        with_set(SIM, "geometry.pixel_size=1e-6", "probe.gaussian.waist=20e-6"),
        r"geometry\.distance.*Fresnel number",
    ),
    Case(
        "distance-probe-below-pixel",
        with_set(SIM, "geometry.distance=50"),
        r"probe\.gaussian\.waist.*narrower than two object pixels",
    ),
    Case(
        "holography-distance-absurd",
        with_set(HOLO, "holography.distances=[1e30]"),
        r"holography\.distances\[0\]",
    ),
    Case(
        "holography-distance-mm-slip",
        with_set(HOLO, "holography.distances=[0.4, 500]"),
        r"holography\.distances\[1\].*0\.5 m \(500 mm\)",
    ),
    Case(
        "holography-source-too-far",
        with_set(HOLO, "geometry.source_distance=1e9"),
        r"geometry\.source_distance",
    ),
    # --- pixel sizes and their ratios
    Case(
        "pixel-75-metres",
        with_set(SIM, "geometry.pixel_size=75"),
        r"pixel_size.*7\.5e-05 m \(75 µm\)",
    ),
    Case("pixel-mm-slip", with_set(SIM, "geometry.pixel_size=0.075"), r"pixel_size.*\(0\.075 mm\)"),
    Case("pixel-picometre", with_set(SIM, "geometry.pixel_size=1e-12"), r"pixel_size.*outside"),
    Case(
        "pixel-pair-one-bad",
        with_set(SIM, "geometry.pixel_size=[75e-6, 75]"),
        r"geometry\.pixel_size\[1\]",
    ),
    Case(
        "voxel-vs-object-pixel",
        with_set(SIM, "phantom.voxel_size=1e-6"),
        r"phantom\.voxel_size.*object pixel",
    ),
    # --- data that come out all zero or saturated
    Case(
        "all-zero-few-photons",
        with_set(SIM, "noise.photons_per_probe=1e-12"),
        r"frames are zero.*photons_per_probe",
    ),
    Case(
        "all-zero-low-fluence",
        with_set(SIM, "noise.photons_per_probe=null", "noise.photons_per_m2=1e-3"),
        r"frames are zero.*photons_per_m2",
    ),
    Case(
        "all-saturated",
        with_set(SIM, "noise.photons_per_probe=1e12", "geometry.saturation=1"),
        r"saturated.*geometry\.saturation",
    ),
    Case(
        "all-zero-holography",
        with_set(
            HOLO,
            "geometry.shape=64",
            "geometry.pixel_size=2e-6",
            "holography.distances=[0.4]",
            "phantom.shape=[2, null, null]",
            "multislice.n_slices=1",
            "noise.photons_per_probe=1e-9",
        ),
        r"frames are zero",
    ),
    # --- memory guard
    Case("memory-max-gb", with_set(SIM, "max_memory_gb=1e-6"), r"needs about.*max_memory_gb"),
    Case(
        "memory-4096-frames-10000-positions",
        with_set(SIM, "geometry.shape=4096", "scan.n_y=100", "scan.n_x=100"),
        r"needs about .*GiB.*batch",
    ),
    Case(
        "memory-check-refuses",
        with_set(CHECK, "geometry.shape=4096", "scan.n_y=100", "scan.n_x=100"),
        r"needs about",
    ),
    Case("memory-probe-modes", with_set(SIM, "probe.modes=1000000"), r"needs about.*probe"),
    Case(
        "memory-phantom-depth",
        with_set(SIM, "phantom.shape=[10000000, null, null]"),
        r"needs about.*phantom",
    ),
    Case("memory-limit-negative", with_set(SIM, "max_memory_gb=-1"), r"max_memory_gb"),
    # --- bad --set values and config files
    Case("set-without-value", with_set(SIM, "energy_ev"), r"KEY=VALUE"),
    Case(
        "set-typo-nested",
        with_set(SIM, "geometry.distanse=2"),
        r"distanse.*did you mean 'distance'",
    ),
    Case("set-float-count", with_set(SIM, "scan.n_y=3.5"), r"scan\.n_y"),
    Case("set-unknown-modality", with_set(SIM, "modality=ptycho3d"), r"modality.*ptycho3d"),
    Case("set-batch-zero", with_set(SIM, "batch_size=0"), r"batch_size"),
    Case(
        "set-unknown-material", with_set(SIM, "phantom.material=unobtainium"), r"unknown material"
    ),
    Case(
        "set-saturation-negative", with_set(SIM, "geometry.saturation=-1"), r"geometry\.saturation"
    ),
    Case(
        "duplicate-nested-key",
        SIM,
        r"duplicate key",
        append_text("sim.yaml", "geometry: {shape: 64}\n"),
    ),
    Case("unknown-top-key", with_set(SIM, "energy=8000"), r"energy.*unknown"),
    Case(
        "config-empty",
        replace_arg(SIM, "--config", "empty.yaml"),
        r"required key is missing",
        write_file("empty.yaml", ""),
    ),
    Case(
        "config-energy-kev-in-file",
        replace_arg(SIM, "--config", "kev.yaml"),
        r"energy_ev.*8000 eV \(8 keV\)",
        write_file("kev.yaml", "modality: ptycho2d\nenergy_ev: 8\n"),
    ),
]


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_simulate_bad_input(case, pristine, tmp_path):
    run_case(case, pristine, tmp_path)


def test_memory_guard_refuses_fast(pristine, tmp_path):
    """4096² frames × 10,000 positions is refused by the estimate, within 2 s."""
    case = Case(
        "memory-fast",
        with_set(SIM, "geometry.shape=4096", "scan.n_y=100", "scan.n_x=100"),
        r"needs about",
    )
    t0 = time.perf_counter()
    run_case(case, pristine, tmp_path)
    assert time.perf_counter() - t0 < 2.0
