"""What each cluster profile submits for the reconstruct rule.

Slurm profiles: a fake `sbatch` on PATH records its command line (the job never runs; the fake
`sacct`/`squeue` then report it failed, which is expected). PBS profiles: a fake `qsub` records
its arguments and runs the jobscript at once, a fake `qstat -xf -F json` reports the exit status,
so the whole cluster-generic round trip (submit.py -> qsub -> status.py) is exercised with the
fake xrayflow CLI.
"""

import json
import shlex

import pytest
from wfhelpers import FAKE_CLI, FAKE_PBS, FAKE_SLURM, profile, snakemake

TARGET = "results/recon/multislice_ptycho.h5"


def sbatch_calls(workdir, name, account="PRJ123"):
    (workdir / "results" / "data").mkdir(parents=True)
    (workdir / "results" / "data" / "multislice_ptycho.h5").write_bytes(b"fake")
    state = workdir.parent / "slurm-state"
    proc = snakemake(
        workdir,
        TARGET,
        "--workflow-profile",
        profile(name),
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--retries",  # the fake job never completes: one submission to inspect
        "0",
        env={"FAKE_SLURM_DIR": str(state), "XRAYFLOW_ACCOUNT": account},
        path_prefix=[FAKE_SLURM, FAKE_CLI],
        timeout=180,
    )
    log = state / "sbatch.jsonl"
    assert log.exists(), proc.stdout + proc.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == 1, calls
    return [a for a in calls[0] if not a.startswith("--wrap")]


def flag_values(args):
    """sbatch arguments as a dict of flag -> value ('-p debug' and '--ntasks=2' forms)."""
    out = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and "=" in arg:
            key, value = arg.split("=", 1)
            out[key] = value
        elif arg.startswith("-") and i + 1 < len(args) and not args[i + 1].startswith("-"):
            out[arg] = args[i + 1]
            i += 1
        else:
            out[arg] = True
        i += 1
    return out


def test_frontier_sbatch(workdir):
    flags = flag_values(sbatch_calls(workdir, "frontier", account="CSC999"))
    assert flags["-A"] == "CSC999"  # from $XRAYFLOW_ACCOUNT
    assert flags["-p"] == "batch"
    assert flags["--ntasks"] == "2"
    assert flags["--gpus"] == "2"  # one GCD per rank
    assert flags["--cpus-per-task"] == "7"
    assert "--ntasks-per-gpu" not in flags
    assert "--mem" not in flags
    assert flags["-t"] == "60"


def test_perlmutter_sbatch(workdir):
    flags = flag_values(sbatch_calls(workdir, "perlmutter", account="m9999_g"))
    assert flags["-A"] == "m9999_g"
    assert flags["-C"] == "gpu"
    assert flags["--qos"] == "regular"
    assert flags["--ntasks"] == "2"
    assert flags["--gpus"] == "2"
    assert flags["--cpus-per-task"] == "32"
    assert "--ntasks-per-gpu" not in flags


def test_local_slurm_sbatch(workdir):
    flags = flag_values(sbatch_calls(workdir, "local-slurm"))
    assert "-A" not in flags  # slurm-no-account
    assert flags["-p"] == "debug"
    assert flags["--ntasks"] == "2"
    assert "--gpus" not in flags
    assert flags["--mem"] == "500"


PBS_CONFIG = {
    # the Cray launcher options do not exist in the local mpich; keep each machine's wrapper
    "polaris": [
        "mpi_launcher=mpiexec",
        "mpi_wrapper=workflow/scripts/polaris/set_affinity_gpu.sh",
        "gpus_per_rank=1",
    ],
    "aurora": ["mpi_launcher=mpiexec", "gpus_per_rank=0"],
}


@pytest.mark.parametrize("name", ["polaris", "aurora"])
def test_pbs_round_trip(workdir, name):
    (workdir / "results" / "data").mkdir(parents=True)
    (workdir / "results" / "data" / "multislice_ptycho.h5").write_bytes(b"fake")
    state = workdir.parent / "pbs-state"
    calls = workdir.parent / "calls.jsonl"
    proc = snakemake(
        workdir,
        TARGET,
        "--workflow-profile",
        profile(name),
        "--latency-wait",
        "1",
        "--max-status-checks-per-second",
        "10",
        "--config",
        *PBS_CONFIG[name],
        env={
            "FAKE_PBS_DIR": str(state),
            "XRAYFLOW_ACCOUNT": "PRJ123",
            "FAKE_XRAYFLOW_LOG": str(calls),
        },
        path_prefix=[FAKE_PBS, FAKE_CLI],
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    qsubs = [json.loads(line) for line in (state / "qsub.jsonl").read_text().splitlines()]
    assert len(qsubs) == 1
    args = qsubs[0]
    text = shlex.join(args)
    assert args[args.index("-A") + 1] == "PRJ123"
    assert args[args.index("-q") + 1] == "debug"
    assert "place=scatter" in args
    assert "walltime=01:00:00" in args
    assert "-k" in args and args[args.index("-k") + 1] == "doe"
    if name == "polaris":
        assert "select=1:system=polaris" in args, text
        assert "filesystems=home:eagle" in args, text
    else:
        assert "select=1" in args, text
        assert "filesystems=flare:home" in args, text
    ranks = [json.loads(line) for line in calls.read_text().splitlines()]
    recon = [r for r in ranks if r["argv"][0] == "reconstruct"]
    assert sorted(r["rank"] for r in recon) == ["0", "1"]
    if name == "polaris":  # affinity wrapper: one GPU per local rank, reversed
        assert sorted(r["cuda"] for r in recon) == ["2", "3"]
    assert (workdir / TARGET).exists()
