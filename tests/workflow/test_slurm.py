"""The workflow on a real single-node Slurm (workflow/scripts/local-slurm.sh start):
simulate -> reconstruct with `srun --mpi=pmi2 -n 2` through snakemake-executor-plugin-slurm.

Skipped with the reason when no local Slurm answers (`local-slurm.sh status` fails); CI starts
it before pytest (`sudo workflow/scripts/local-slurm.sh start`). The stand-in CLI variant runs
as soon as Slurm is up; the real-stage variant also needs the stage CLIs and configs.
"""

import json
import subprocess

import pytest
from wfhelpers import FAKE_CLI, REPO, make_workdir, profile, snakemake, stages_available


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


@pytest.mark.parametrize(
    "cli",
    [
        "stand-in",
        pytest.param("real", marks=pytest.mark.skipif(not STAGES, reason=STAGES_WHY)),
    ],
)
def test_reconstruct_on_local_slurm(tmp_path, cli):
    workdir = make_workdir(tmp_path / "wd", placeholders=(cli == "stand-in"))
    calls = tmp_path / "calls.jsonl"
    proc = snakemake(
        workdir,
        TARGET,
        "--workflow-profile",
        profile("local-slurm"),
        env={"FAKE_XRAYFLOW_LOG": str(calls)},
        path_prefix=[FAKE_CLI] if cli == "stand-in" else [],
        timeout=480,
        check=True,
    )
    out = proc.stdout + proc.stderr
    assert "srun --mpi=pmi2 -n 2 xrayflow reconstruct" in out
    assert (workdir / TARGET).exists()
    assert "sbatch" in out or "SLURM" in out or "slurm" in out
    if cli == "stand-in":
        ranks = [json.loads(line) for line in calls.read_text().splitlines()]
        recon = [r for r in ranks if r["argv"][0] == "reconstruct"]
        assert sorted(r["rank"] for r in recon) == ["0", "1"]
