"""What each cluster profile submits: a multi-rank reconstruction, a group job of beamtime scans
and the PBS pilot job, with one GPU per rank and per single-rank job.

Slurm profiles: a fake `sbatch` on PATH records its command line (the job never runs; the fake
`sacct`/`squeue` then report it failed, which is expected). For group jobs the recorded
`--wrap` command is then run as Slurm would run it inside the allocation, with a fake `srun`
that gives every task of a step its own GPU (as `--gpus-per-task` does). PBS profiles: a fake
`qsub` records its arguments and runs the jobscript at once, a fake `qstat -xf -F json`
reports the exit status, so the whole cluster-generic round trip (submit.py -> qsub ->
status.py) is exercised with the fake xrayflow CLI, which records each call's rank and
CUDA_VISIBLE_DEVICES.
"""

import json
import re
import shlex
import socket
import subprocess

import pytest
from wfhelpers import (
    FAKE_CLI,
    FAKE_PBS,
    FAKE_SLURM,
    REPO,
    VENV_BIN,
    profile,
    run_pilot,
    snakemake,
    snakemake_env,
)

TARGET = "results/recon/multislice_ptycho.h5"
BEAMTIME = ("--configfile", "config/beamtime.yaml")
# config/scans.tsv: scan001 and scan003 one rank, scan002 two ranks; scan003 not evaluated.
SCAN_RANKS = {"scan001": 1, "scan002": 2, "scan003": 1}
# sum over the scans of simulate (10) + reconstruct (20) + evaluate (10, not scan003) minutes
SERIAL_RUNTIME = str(3 * 10 + 3 * 20 + 2 * 10)


def sbatch_calls(workdir, name, *args, account="PRJ123"):
    state = workdir.parent / "slurm-state"
    proc = snakemake(
        workdir,
        *args,
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
    return [json.loads(line) for line in log.read_text().splitlines()]


def demo_sbatch(workdir, name, account="PRJ123"):
    (workdir / "results" / "data").mkdir(parents=True)
    (workdir / "results" / "data" / "multislice_ptycho.h5").write_bytes(b"fake")
    calls = sbatch_calls(workdir, name, TARGET, account=account)
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


def recorded(log):
    return [json.loads(line) for line in log.read_text().splitlines()]


def scan_of(call):
    return re.search(r"scan\d+", " ".join(call["argv"])).group()


def test_frontier_sbatch(workdir):
    flags = flag_values(demo_sbatch(workdir, "frontier", account="CSC999"))
    assert flags["-A"] == "CSC999"  # from $XRAYFLOW_ACCOUNT
    assert flags["-p"] == "batch"
    assert flags["--ntasks"] == "2"
    assert flags["--gpus"] == "2"  # one GCD per rank
    assert flags["--cpus-per-task"] == "7"
    assert "--ntasks-per-gpu" not in flags
    assert "--mem" not in flags
    assert flags["-t"] == "60"


def test_perlmutter_sbatch(workdir):
    flags = flag_values(demo_sbatch(workdir, "perlmutter", account="m9999_g"))
    assert flags["-A"] == "m9999_g"
    assert flags["-C"] == "gpu"
    assert flags["--qos"] == "regular"
    assert flags["--ntasks"] == "2"
    assert flags["--gpus"] == "2"
    assert flags["--cpus-per-task"] == "32"
    assert "--ntasks-per-gpu" not in flags


def test_local_slurm_sbatch(workdir):
    flags = flag_values(demo_sbatch(workdir, "local-slurm"))
    assert "-A" not in flags  # no account: the plugin's guess finds none
    assert flags["-p"] == "debug"
    assert flags["--ntasks"] == "2"
    assert "--gpus" not in flags
    assert flags["--mem"] == "500"


# The sbatch line of the one group job of the three beamtime scans. Its jobs run one after
# another (plugin 2.8.0), so it asks for the largest job (scan002: 2 ranks) and the summed
# runtime; GPU profiles ask for one task per GPU.
SLURM_GROUP = {
    "frontier": {
        "-p": "batch",
        "--gpus": "2",
        "--ntasks-per-gpu": "1",
        "--cpus-per-task": "7",
        "-t": SERIAL_RUNTIME,
    },
    "perlmutter": {
        "-C": "gpu",
        "--qos": "shared",
        "--gpus": "2",
        "--ntasks-per-gpu": "1",
        "--cpus-per-task": "32",
        "-t": SERIAL_RUNTIME,
    },
    "local-slurm": {
        "-p": "debug",
        "--ntasks": "2",
        "--cpus-per-task": "1",
        "--mem": "500",
        "-t": SERIAL_RUNTIME,
    },
}


def run_wrap(workdir, wrap, state, calls):
    """Run a group job's --wrap command as Slurm would, inside the (fake) allocation."""
    for tmp in re.findall(r"'([^']*/\.snakemake/tmp\.[^']*)'", wrap):
        open(tmp, "w").close()  # the files Snakemake waits for are made before submission
    env = snakemake_env(
        {"SLURM_JOB_ID": "1001", "FAKE_SLURM_DIR": str(state), "FAKE_XRAYFLOW_LOG": str(calls)},
        [FAKE_SLURM, FAKE_CLI],
    )
    return subprocess.run(
        wrap, shell=True, cwd=workdir, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("name", sorted(SLURM_GROUP))
def test_slurm_beamtime_group_job(workdir, name):
    calls = sbatch_calls(workdir, name, *BEAMTIME)
    assert len(calls) == 1, calls  # all three scans in one group job
    args = calls[0]
    flags = flag_values([a for a in args if not a.startswith("--wrap")])
    for flag, value in SLURM_GROUP[name].items():
        assert flags.get(flag) == value, (flag, flags)
    assert "--mem" in SLURM_GROUP[name] or "--mem" not in flags  # no summed 2000 MB cap
    if name != "local-slurm":
        assert "--ntasks" not in flags  # tasks come from the GPUs: 2 x 7 (32) cores in all
    wrap = next(a for a in args if a.startswith("--wrap="))[len("--wrap=") :]
    log = workdir.parent / "calls.jsonl"
    proc = run_wrap(workdir, wrap, workdir.parent / "slurm-state", log)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    recon = [c for c in recorded(log) if c["argv"][0] == "reconstruct"]
    ranks = {scan: sorted(c["rank"] for c in recon if scan_of(c) == scan) for scan in SCAN_RANKS}
    assert ranks == {s: [str(r) for r in range(n)] for s, n in SCAN_RANKS.items()}, recon
    for scan, n in SCAN_RANKS.items():
        gpus = [c["cuda"] for c in recon if scan_of(c) == scan]
        if name == "local-slurm":  # CPU only
            assert gpus == [None] * n
        else:  # every job through srun --gpus-per-task=1: one GPU per rank, distinct
            assert all(g is not None and "," not in g for g in gpus), gpus
            assert len(set(gpus)) == n, gpus
    assert (workdir / "results" / "beamtime" / "recon" / "scan003.h5").exists()


PBS_CONFIG = {
    # the Cray launcher options do not exist in the local mpich; keep each machine's wrapper
    "polaris": [
        "mpi_launcher=mpiexec",
        "mpi_wrapper=workflow/scripts/polaris/set_affinity_gpu.sh",
        "gpus_per_rank=1",
    ],
    "aurora": ["mpi_launcher=mpiexec", "gpus_per_rank=0"],
}


def pbs_run(workdir, name, *args, env=()):
    state = workdir.parent / "pbs-state"
    calls = workdir.parent / "calls.jsonl"
    proc = snakemake(
        workdir,
        *args,
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
            "XRAYFLOW_GPU_LOCKS": str(workdir.parent / "gpu-locks"),
            **dict(env),
        },
        path_prefix=[FAKE_PBS, FAKE_CLI],
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    qsubs = [json.loads(line) for line in (state / "qsub.jsonl").read_text().splitlines()]
    return qsubs, recorded(calls)


def opt(args, flag):
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


@pytest.mark.parametrize("name", ["polaris", "aurora"])
def test_pbs_round_trip(workdir, name):
    (workdir / "results" / "data").mkdir(parents=True)
    (workdir / "results" / "data" / "multislice_ptycho.h5").write_bytes(b"fake")
    qsubs, calls = pbs_run(workdir, name, TARGET)
    assert len(qsubs) == 1
    args = qsubs[0]
    text = shlex.join(args)
    assert opt(args, "-A") == ["PRJ123"]
    assert opt(args, "-q") == ["debug"]
    assert "place=scatter" in args
    assert "walltime=01:00:00" in args
    assert opt(args, "-k") == ["doe"]
    if name == "polaris":
        assert "select=1:system=polaris" in args, text
        assert "filesystems=home:eagle" in args, text
    else:
        assert "select=1" in args, text
        assert "filesystems=flare:home" in args, text
    recon = [r for r in calls if r["argv"][0] == "reconstruct"]
    assert sorted(r["rank"] for r in recon) == ["0", "1"]
    if name == "polaris":  # affinity wrapper: one GPU per local rank, reversed
        assert sorted(r["cuda"] for r in recon) == ["2", "3"]
    assert (workdir / TARGET).exists()


@pytest.mark.parametrize("name", ["polaris", "aurora"])
def test_pbs_beamtime_group_job(workdir, name):
    """One PBS job for the three scans, which run side by side in it (the sleep makes them
    overlap): on Polaris the four ranks of the three reconstructions hold four different GPUs."""
    qsubs, calls = pbs_run(workdir, name, *BEAMTIME, env={"FAKE_XRAYFLOW_SLEEP": "reconstruct:6"})
    assert len(qsubs) == 1, qsubs
    args = qsubs[0]
    assert opt(args, "-N") == ["smk-scans"]
    # 4 ranks, 4 GPUs (Polaris) and 3 x 8 cores fit one node; runtime 10 + 20 + 10 min
    select = "select=1:system=polaris" if name == "polaris" else "select=1"
    assert select in opt(args, "-l"), args
    assert "walltime=00:40:00" in opt(args, "-l")
    assert opt(args, "-q") == ["debug"]
    recon = [c for c in calls if c["argv"][0] == "reconstruct"]
    assert sorted(scan_of(c) for c in recon) == ["scan001", "scan002", "scan002", "scan003"]
    gpus = [c["cuda"] for c in recon]
    if name == "polaris":
        assert sorted(gpus) == ["0", "1", "2", "3"], recon
    else:
        assert gpus == [None] * 4


def test_pbs_pilot_gives_each_job_its_own_gpu(tmp_path, workdir):
    """pilot.sh inside a (fake) 1-node PBS job: the beamtime scans run side by side under the
    local executor, single-rank scans through the affinity wrapper, scan002 under mpiexec."""
    (workdir / "profiles").symlink_to(REPO / "profiles")
    nodefile = tmp_path / "nodefile"
    nodefile.write_text(f"{socket.gethostname()}\n")  # mpich's mpiexec reads it too
    log = tmp_path / "calls.jsonl"
    env = snakemake_env(
        {
            "FAKE_XRAYFLOW_LOG": str(log),
            "FAKE_XRAYFLOW_SLEEP": "reconstruct:6",
            "PBS_NODEFILE": str(nodefile),
            "PBS_O_WORKDIR": str(workdir),
            "PBS_JOBID": "77.fake-pbs",
            "XRAYFLOW_GPU_LOCKS": str(tmp_path / "gpu-locks"),
            "XRAYFLOW_PILOT_LAUNCHER": "mpiexec",  # the local mpich has no --depth/--cpu-bind
            "XRAYFLOW_CORES_PER_NODE": "8",
            "XRAYFLOW_SNAKEMAKE": str(VENV_BIN / "snakemake"),
            "XRAYFLOW_SNAKEMAKE_ARGS": f"-s {REPO / 'Snakefile'} --configfile config/beamtime.yaml",
        },
        [FAKE_CLI],
    )
    proc = run_pilot(REPO / "workflow" / "scripts" / "pbs" / "pilot.sh", tmp_path, env)
    assert "pilot: 1 nodes, 4 GPUs" in proc.stderr
    recon = [c for c in recorded(log) if c["argv"][0] == "reconstruct"]
    assert sorted(scan_of(c) for c in recon) == ["scan001", "scan002", "scan002", "scan003"]
    assert sorted(c["cuda"] for c in recon) == ["0", "1", "2", "3"], recon
