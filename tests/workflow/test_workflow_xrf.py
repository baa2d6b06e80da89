"""The speckle-XRF workflow config (config/xrf_speckle.yaml, overlaid on the demo): its own
datasets only (selected_datasets), AD on 2 MPI ranks and the SIREN network on one, evaluated
into the report; the demo's datasets and training stay out."""

import pytest
import yaml
from test_workflow_dryrun import job_counts
from wfhelpers import profile, snakemake, stage_configs

XRF = "config/xrf_speckle.yaml"


@pytest.fixture
def xrf_workdir(workdir):
    """The work directory with placeholders for the stage configs the XRF config names."""
    for rel in stage_configs(workdir / "config", files=("xrf_speckle.yaml",)):
        target = workdir / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("{}\n")
    return workdir


def test_xrf_dry_run_builds_its_datasets_only(xrf_workdir):
    proc = snakemake(
        xrf_workdir, "-n", "-p", "--workflow-profile", profile("local"), "--configfile", XRF
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    counts = job_counts(proc.stdout)
    for rule, n in {"simulate": 2, "reconstruct": 2, "evaluate": 2, "summary": 1}.items():
        assert counts.get(rule) == n, (rule, counts)
    assert "train" not in counts and "bragg_cdi" not in out
    assert "results/xrf_speckle/figures/xrf_speckle_siren" in out
    assert "-n 2 xrayflow reconstruct" in out  # AD: MPI over the patterns
    assert "--set linear_inverse.method=siren --set linear_inverse.siren.omega_0=10" in out


def test_unknown_selected_dataset_names_the_key(xrf_workdir):
    cfg = xrf_workdir / "config" / "xrf_speckle.yaml"
    data = yaml.safe_load(cfg.read_text())
    data["selected_datasets"].append("xrf_nope")
    cfg.write_text(yaml.safe_dump(data))
    proc = snakemake(xrf_workdir, "-n", "--workflow-profile", profile("local"), "--configfile", XRF)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "selected_datasets" in out and "xrf_nope" in out, out


def test_xrf_lint(xrf_workdir):
    proc = snakemake(xrf_workdir, "--lint", "--configfile", XRF)
    assert proc.returncode == 0, proc.stdout + proc.stderr
