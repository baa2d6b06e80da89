"""Command line: stage listing, simulate, info, and one-line errors with exit status 2."""

import subprocess
import sys

import pytest
import yaml

from xrayflow.cli import main

DEMO = {
    "modality": "ptycho2d",
    "energy_ev": 8000,
    "seed": 0,
    "geometry": {"shape": 32},
    "probe": {"gaussian": {"waist": 0.3e-6}},
    "scan": {"n_y": 2, "n_x": 2, "step": 0.3e-6},
    "phantom": {"shape": [2, None, None]},
}


@pytest.fixture
def cfg_path(tmp_path):
    p = tmp_path / "sim.yaml"
    p.write_text(yaml.safe_dump(DEMO))
    return p


def _fail(capsys, tmp_path, argv, *needles):
    out = tmp_path / "out" / "data.cxi"
    out.parent.mkdir(exist_ok=True)  # a missing output folder is an error of its own
    rc = main([*argv, "--out", str(out)] if argv[0] == "simulate" else argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]
    assert not out.exists()
    if out.parent.exists():
        assert list(out.parent.iterdir()) == []  # no temporary files left either
    return lines[0]


def test_help_lists_stages(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "simulate" in out and "info" in out


@pytest.mark.parametrize("stage", ["simulate", "reconstruct", "train", "evaluate"])
def test_stage_help_has_no_markup(capsys, stage):
    """``--help`` shows the stage's docstring as plain text (no Sphinx roles, no ``)."""
    assert main([stage, "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: xrayflow " + stage in out
    assert "``" not in out and ":mod:" not in out and ":func:" not in out, out


def test_python_dash_m():
    r = subprocess.run([sys.executable, "-m", "xrayflow", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "simulate" in r.stdout


def test_simulate_and_info(capsys, tmp_path, cfg_path):
    out = tmp_path / "d.cxi"
    assert main(["simulate", "--config", str(cfg_path), "--out", str(out), "--set", "seed=4"]) == 0
    assert out.exists()
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    for needle in (
        "modality:    ptycho2d",
        "frames:      4",
        "32 x 32",
        "8000 eV",
        "distance:",
        "pixel size:",
        "truth:",
        "object",
        "probe",
        "seed: 4",
        "git_commit",
    ):
        assert needle in text, needle


def test_simulate_check_prints_config(capsys, cfg_path):
    assert main(["simulate", "--config", str(cfg_path), "--check"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["geometry"]["distance"] == 2.0  # default filled in


def test_missing_key(capsys, tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({k: v for k, v in DEMO.items() if k != "energy_ev"}))
    _fail(
        capsys,
        tmp_path,
        ["simulate", "--config", str(p)],
        "simulate.energy_ev",
        "required key is missing",
    )


# test id: the --set overrides applied to the demo config, what the one-line error names
BAD_SETTINGS = {
    "unknown-key-with-suggestion": (
        ["scan.stepp=1e-6"],
        ["simulate.scan.stepp", "unknown key", "did you mean 'step'"],
    ),
    "negative-energy": (["energy_ev=-5"], ["simulate.energy_ev: -5", "minimum of 0"]),
    "unknown-material-lists-known": (
        ["phantom.material=goldd"],
        [
            "simulate.phantom.material",
            "unknown material 'goldd'",
            "did you mean 'gold'",
            "tungsten",
        ],
    ),
    "probe-does-not-fit-detector-grid": (
        ["probe.gaussian.waist=2e-6"],
        ["simulate.probe.gaussian.waist", "does not fit", "32x32"],
    ),
    # object pixel 2.8 nm: depth of field 2 dx^2/lambda ~ 0.1 um < 64 voxels (0.18 um)
    "slice-thicker-than-validity": (
        [
            "modality=multislice_ptycho",
            "geometry.distance=0.05",
            "geometry.pixel_size=172e-6",
            "geometry.shape=16",
            "probe.gaussian.waist=8e-9",
            "scan.step=5e-9",
            "phantom.shape=[64, null, null]",
            "multislice.n_slices=1",
        ],
        ["simulate.multislice.n_slices", "depth of field"],
    ),
    "voxel-size-vs-far-field-relation": (
        ["phantom.voxel_size=1e-8"],
        ["simulate.phantom.voxel_size", "lambda*z/(N*p)"],
    ),
    "unknown-phantom-param": (
        ["phantom.params={spoke: 3}"],
        ["simulate.phantom.params.spoke", "did you mean 'spokes'"],
    ),
}


@pytest.mark.parametrize(
    ("settings", "needles"), list(BAD_SETTINGS.values()), ids=list(BAD_SETTINGS)
)
def test_bad_setting(capsys, tmp_path, cfg_path, settings, needles):
    argv = ["simulate", "--config", str(cfg_path)]
    for setting in settings:
        argv += ["--set", setting]
    _fail(capsys, tmp_path, argv, *needles)


def test_bad_yaml_and_missing_config(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("modality: [ptycho2d\n")
    _fail(capsys, tmp_path, ["simulate", "--config", str(bad)], "invalid YAML", "line")
    _fail(capsys, tmp_path, ["simulate", "--config", str(tmp_path / "none.yaml")], "does not exist")


def test_info_on_corrupt_file(capsys, tmp_path):
    p = tmp_path / "x.cxi"
    p.write_bytes(b"garbage" * 100)
    line = _fail(capsys, tmp_path, ["info", str(p)], "x.cxi")
    assert "HDF5" in line


def test_argparse_errors_exit_2(capsys):
    assert main(["simulate", "--bogus"]) == 2
    assert main(["nosuchstage"]) == 2
