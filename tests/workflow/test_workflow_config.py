"""Workflow config and scan sheet validation: bad values fail at load time, naming the key."""

import pytest
import yaml
from wfhelpers import profile, snakemake, use_cxi_dir


def write_config(workdir, mutate):
    path = workdir / "config" / "config.yaml"
    cfg = yaml.safe_load(path.read_text())
    mutate(cfg)
    path.write_text(yaml.safe_dump(cfg))


def dry_run(workdir, *extra):
    return snakemake(workdir, "-n", "--workflow-profile", profile("local"), *extra)


def failed_dry_run(workdir, *extra) -> str:
    """The output (stdout and stderr) of a dry run that must fail."""
    proc = dry_run(workdir, *extra)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    return out


@pytest.mark.parametrize(
    ("mutate", "names"),
    [
        (lambda c: c.update(mode="production"), ["mode", "production"]),
        (lambda c: c["datasets"]["bragg_cdi"].update(ranks=0), ["ranks", "bragg_cdi"]),
        (lambda c: c["datasets"]["bragg_cdi"].update(nrank=2), ["nrank"]),
        (lambda c: c["datasets"]["bragg_cdi"].pop("simulate"), ["simulate"]),
        (lambda c: c["resources"].update(train={"mem_mb": "lots"}), ["mem_mb", "train"]),
        (lambda c: c["train"].update(set=["no-equals-sign"]), ["set", "no-equals-sign"]),
    ],
    ids=["mode", "ranks", "unknown-key", "missing-key", "mem-type", "override-syntax"],
)
def test_invalid_config_names_key(workdir, mutate, names):
    write_config(workdir, mutate)
    out = failed_dry_run(workdir)
    assert "Error validating config file" in out, out
    for name in names:
        assert name in out, (name, out)


def test_scaling_mode_requires_its_section(workdir):
    out = failed_dry_run(workdir, "--config", "mode=scaling")
    assert "scaling" in out and "required" in out, out


def test_bad_scan_sheet_row(workdir):
    sheet = workdir / "config" / "scans.tsv"
    sheet.write_text(sheet.read_text() + "bad scan name\t\t1\t\t\tfalse\t\n")
    out = failed_dry_run(workdir, "--configfile", "config/beamtime.yaml")
    assert "Error validating row 3" in out and "bad scan name" in out, out


def test_duplicate_scans(workdir):
    sheet = workdir / "config" / "scans.tsv"
    lines = sheet.read_text().splitlines()
    sheet.write_text("\n".join([*lines, lines[1]]) + "\n")
    out = failed_dry_run(workdir, "--configfile", "config/beamtime.yaml")
    assert "duplicate scan names ['scan001']" in out, out


def test_cxi_directory_as_scan_list(workdir):
    cxi = use_cxi_dir(workdir, absolute=True)
    proc = dry_run(workdir, "--configfile", "config/beamtime.yaml", "-p")
    assert proc.returncode == 0, proc.stderr
    assert f"--data {cxi}/run_a.cxi" in proc.stdout
    assert "results/beamtime/recon/run_b.h5" in proc.stdout
    assert "simulate_scan" not in proc.stdout
