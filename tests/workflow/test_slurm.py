"""The workflow on a real single-node Slurm (workflow/scripts/local-slurm.sh start):
simulate -> reconstruct with `srun --mpi=pmi2 -n 2` through snakemake-executor-plugin-slurm.

Skipped with the reason when no local Slurm answers (`local-slurm.sh status` fails); CI starts
it before pytest (`sudo workflow/scripts/local-slurm.sh start`). The stand-in CLI variant runs
as soon as Slurm is up; the real-stage variant also needs the stage CLIs and configs.
"""

import json
import re
import subprocess

import h5py
import numpy as np
import pytest
from wfhelpers import (
    FAKE_CLI,
    REPO,
    SRUN_2,
    make_workdir,
    profile,
    snakemake,
    stages_available,
)


def slurm_status():
    script = REPO / "workflow" / "scripts" / "local-slurm.sh"
    try:
        proc = subprocess.run([str(script), "status"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, str(err)
    return proc.returncode == 0, (proc.stderr or proc.stdout).strip()


SLURM_UP, SLURM_WHY = slurm_status()
STAGES, STAGES_WHY = stages_available()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.mpi,
    pytest.mark.skipif(
        not SLURM_UP,
        reason=f"no local Slurm (workflow/scripts/local-slurm.sh status: {SLURM_WHY}); "
        "start it with `sudo workflow/scripts/local-slurm.sh start`",
    ),
]

TARGET = "results/recon/multislice_ptycho.h5"
JOBID = re.compile(r"has been submitted with SLURM jobid (\d+)")


def scontrol_job(jobid: str) -> dict[str, str]:
    """Fields of `scontrol show job` (kept for MinJobAge after the job ends)."""
    out = subprocess.run(
        ["scontrol", "-o", "show", "job", jobid], capture_output=True, text=True, check=True
    ).stdout
    return dict(f.split("=", 1) for f in out.split() if "=" in f)


def test_stand_in_reconstruct_runs_two_ranks_under_srun(tmp_path):
    workdir = make_workdir(tmp_path / "wd", placeholders=True)
    calls = tmp_path / "calls.jsonl"
    proc = snakemake(
        workdir,
        TARGET,
        "--workflow-profile",
        profile("local-slurm"),
        env={"FAKE_XRAYFLOW_LOG": str(calls)},
        path_prefix=[FAKE_CLI],
        timeout=480,
        check=True,
    )
    out = proc.stdout + proc.stderr
    assert SRUN_2 in out
    assert (workdir / TARGET).exists()
    assert JOBID.search(out), out
    ranks = [json.loads(line) for line in calls.read_text().splitlines()]
    recon = [r for r in ranks if r["argv"][0] == "reconstruct"]
    assert sorted(r["rank"] for r in recon) == ["0", "1"]


@pytest.mark.skipif(not STAGES, reason=STAGES_WHY)
def test_demo_runs_end_to_end_through_slurm(tmp_path):
    """The whole demo (all stages, the 2-rank MPI reconstruction under srun) as Slurm jobs."""
    workdir = make_workdir(tmp_path / "wd", placeholders=False)
    proc = snakemake(workdir, "--workflow-profile", profile("local-slurm"), timeout=900, check=True)
    out = proc.stdout + proc.stderr
    jobids = JOBID.findall(out)
    assert len(jobids) >= 5, out  # simulate x2, reconstruct, train, evaluate, ... as jobs
    jobs = {j: scontrol_job(j) for j in jobids}
    states = [f["JobState"] for f in jobs.values()]
    # the profile retries a job whose MPI_Init failed (pmodels/mpich#7417); all others complete
    assert states.count("COMPLETED") >= len(states) - 2 and "COMPLETED" in states, jobs
    two_task = [f for f in jobs.values() if f.get("NumTasks") == "2"]
    assert two_task, "no Slurm job ran with 2 tasks (the MPI reconstruction)"
    assert SRUN_2 in out
    with h5py.File(workdir / TARGET) as f:
        assert np.isfinite(f["loss"][:]).all() and f["loss"].size > 0
    metrics = list((workdir / "results" / "metrics").glob("*.json"))
    assert metrics, "the demo wrote no evaluation metrics"
