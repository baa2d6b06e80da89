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
    use_cxi_dir,
)

TARGET = "results/recon/multislice_ptycho.h5"
BEAMTIME = ("--configfile", "config/beamtime.yaml")
# config/scans.tsv: scan001 and scan003 one rank, scan002 two ranks; scan003 not evaluated.
SCAN_RANKS = {"scan001": 1, "scan002": 2, "scan003": 1}
# Reconstructions of every scan (beamtime.halves is on by default): the whole scan and its
# even/odd halves, each with the scan's ranks.
PARTS = {"recon": None, "recon_even": "even", "recon_odd": "odd"}


def scan_runtime(scan):
    """Minutes of one scan's jobs (config/config.yaml resources): simulate 10, reconstruct 20
    for the scan and for each half, evaluate 10 (not scan003), quick-look + halves' FRC 10."""
    return 10 + len(PARTS) * 20 + (10 if scan != "scan003" else 0) + 10


SERIAL_RUNTIME = str(sum(scan_runtime(s) for s in SCAN_RANKS))  # 260: all in one job


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


def part_of(call):
    """recon, recon_even or recon_odd: the folder of a reconstruction's --out."""
    return call["argv"][call["argv"].index("--out") + 1].split("/")[-2]


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


# The sbatch lines of the group jobs of the three beamtime scans. Their jobs run one after
# another (plugin 2.8.0), so a group asks for its largest job (2 ranks when it holds scan002)
# and the summed runtime of its scans; GPU profiles ask for one task per GPU. Frontier packs
# one scan per job (a scan with its halves is 90 min; batch allows 2 h), the others all three.
SCANS_PER_JOB = {"frontier": 1, "perlmutter": 3, "local-slurm": 3}
SLURM_GROUP = {
    "frontier": {"-p": "batch", "--ntasks-per-gpu": "1", "--cpus-per-task": "7"},
    "perlmutter": {
        "-C": "gpu",
        "--qos": "shared",
        "--ntasks-per-gpu": "1",
        "--cpus-per-task": "32",
    },
    "local-slurm": {"-p": "debug", "--cpus-per-task": "1", "--mem": "500"},
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
    assert len(calls) == len(SCAN_RANKS) // SCANS_PER_JOB[name], calls
    log = workdir.parent / "calls.jsonl"
    jobs = {}
    for args in calls:
        wrap = next(a for a in args if a.startswith("--wrap="))[len("--wrap=") :]
        scans = tuple(sorted(set(re.findall(r"scan\d+", wrap))))
        jobs[scans] = flags = flag_values([a for a in args if not a.startswith("--wrap")])
        for flag, value in SLURM_GROUP[name].items():
            assert flags.get(flag) == value, (flag, flags)
        # the largest job of the group (its scans' most ranks), the runtimes summed
        most = str(max(SCAN_RANKS[s] for s in scans))
        assert flags.get("--ntasks" if name == "local-slurm" else "--gpus") == most, flags
        assert flags["-t"] == str(sum(scan_runtime(s) for s in scans)), (scans, flags)
        assert "--mem" in SLURM_GROUP[name] or "--mem" not in flags  # no summed 2000 MB cap
        if name != "local-slurm":
            assert "--ntasks" not in flags  # tasks come from the GPUs: 2 x 7 (32) cores in all
        proc = run_wrap(workdir, wrap, workdir.parent / "slurm-state", log)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(s for scans in jobs for s in scans) == sorted(SCAN_RANKS)  # each scan once
    assert (
        len({len(scans) for scans in jobs}) == 1 and len(next(iter(jobs))) == (SCANS_PER_JOB[name])
    )
    if name == "local-slurm":
        assert jobs[tuple(SCAN_RANKS)]["-t"] == SERIAL_RUNTIME
    recon = [c for c in recorded(log) if c["argv"][0] == "reconstruct"]
    for scan, n in SCAN_RANKS.items():
        for part, subset in PARTS.items():
            runs = [c for c in recon if scan_of(c) == scan and part_of(c) == part]
            assert sorted(c["rank"] for c in runs) == [str(r) for r in range(n)], (scan, part)
            sets = [c["argv"][i + 1] for c in runs for i, a in enumerate(c["argv"]) if a == "--set"]
            assert sets == ([f"data.subset={subset}"] * n if subset else []), (scan, part)
            gpus = [c["cuda"] for c in runs]
            if name == "local-slurm":  # CPU only
                assert gpus == [None] * n
            else:  # every job through srun --gpus-per-task=1: one GPU per rank, distinct
                assert all(g is not None and "," not in g for g in gpus), gpus
                assert len(set(gpus)) == n, gpus
    assert len(recon) == len(PARTS) * sum(SCAN_RANKS.values())
    assert (workdir / "results" / "beamtime" / "recon" / "scan003.h5").exists()
    assert (workdir / "results" / "beamtime" / "frc" / "scan003.json").exists()


def test_slurm_halves_share_their_scans_group_job(workdir):
    """Measured scans (a CXI directory: no simulate job ties a scan's jobs together) are still
    packed whole: Frontier's `scans: 1` gives one job per scan holding its reconstruction, both
    halves and the quick-look that compares them, with the scan's summed runtime."""
    use_cxi_dir(workdir)
    calls = sbatch_calls(workdir, "frontier", *BEAMTIME)
    assert len(calls) == 2, calls
    for args in calls:
        wrap = next(a for a in args if a.startswith("--wrap="))
        scans = set(re.findall(r"run_[ab]", wrap))
        assert len(scans) == 1, wrap
        scan = scans.pop()
        for part in ("recon", "recon_even", "recon_odd"):
            assert f"part={part},scan={scan}" in wrap.replace("'", ""), (part, wrap)
        assert f"quicklook_scan:scan={scan}" in wrap.replace("'", ""), wrap
        # 3 reconstructions x 20 min + the quick-look and FRC 10 min, one after another
        assert flag_values([a for a in args if not a.startswith("--wrap")])["-t"] == "70"


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


# (scan, reconstruction) of every rank: each scan and its two halves with the scan's ranks
RECON_RANKS = sorted((s, part) for s, n in SCAN_RANKS.items() for part in PARTS for _ in range(n))
# select, walltime and queue of the group job of the three scans. Polaris: 8 cores per scan
# job, so its 9 reconstructions run 4 at a time (cores: 32) in 3 layers of 20 min, up to 5
# ranks (GPUs) in a layer -> 2 nodes, 10 + 3 x 20 + 10 min -> the capacity queue. Aurora:
# 8-core CPU ranks, the 9 reconstructions (12 ranks) fit one layer of a node.
PBS_GROUP = {
    "polaris": ("select=2:system=polaris", "01:20:00", "capacity"),
    "aurora": ("select=1", "00:40:00", "debug"),
}


@pytest.mark.parametrize("name", ["polaris", "aurora"])
def test_pbs_beamtime_group_job(workdir, name):
    """One PBS job for the three scans, whose jobs run side by side in it (the sleep makes them
    overlap): on Polaris no two reconstructions that overlap in time hold the same GPU."""
    qsubs, calls = pbs_run(workdir, name, *BEAMTIME, env={"FAKE_XRAYFLOW_SLEEP": "reconstruct:6"})
    assert len(qsubs) == 1, qsubs
    args = qsubs[0]
    assert opt(args, "-N") == ["smk-scans"]
    select, walltime, queue = PBS_GROUP[name]
    assert select in opt(args, "-l"), args
    assert f"walltime={walltime}" in opt(args, "-l"), args
    assert opt(args, "-q") == [queue]
    recon = [c for c in calls if c["argv"][0] == "reconstruct"]
    assert sorted((scan_of(c), part_of(c)) for c in recon) == RECON_RANKS
    if name == "polaris":
        assert_own_gpus(recon)
    else:
        assert [c["cuda"] for c in recon] == [None] * len(RECON_RANKS)


def assert_own_gpus(recon, seconds=6.0):
    """Every rank on one of the node's 4 GPUs, and reconstructions that run at the same time
    (a rank starts less than the fake's `seconds` of sleep after another) on different ones;
    some of them do run at the same time."""
    assert {c["cuda"] for c in recon} <= {"0", "1", "2", "3"}, recon
    pairs = [(a, b) for i, a in enumerate(recon) for b in recon[i + 1 :]]
    overlapping = [(a, b) for a, b in pairs if abs(a["t"] - b["t"]) < seconds - 0.2]
    assert overlapping, "no two reconstructions ran side by side"
    shared = [(a, b) for a, b in overlapping if a["cuda"] == b["cuda"]]
    assert not shared, shared


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
    assert sorted((scan_of(c), part_of(c)) for c in recon) == RECON_RANKS
    assert_own_gpus(recon)
