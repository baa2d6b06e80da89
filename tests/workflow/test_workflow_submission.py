"""What each cluster profile submits: a multi-rank reconstruction, a group job of beamtime scans,
a training job and the PBS and Slurm pilot jobs, with one GPU per rank and per single-rank job.

Slurm profiles: a fake `sbatch` on PATH records its command line (the job never runs; the fake
`sacct`/`squeue` then report it failed, which is expected). For group jobs the recorded
`--wrap` command is then run as Slurm would run it inside the allocation, with a fake `srun`
that gives every task of a step its own GPU (as `--gpus-per-task` does). PBS profiles: a fake
`qsub` records its arguments and runs the jobscript at once, a fake `qstat -xf -F json`
reports the exit status, so the whole cluster-generic round trip (submit.py -> qsub ->
status.py) is exercised with the fake xrayflow CLI, which records each call's rank and
CUDA_VISIBLE_DEVICES. The Slurm pilot (workflow/scripts/slurm/pilot.sh) runs in a fake
allocation whose `srun` gives each step GPUs that no running step holds.
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
    PARTS,
    RECON_RANKS,
    REPO,
    SCAN_RANKS,
    VENV_BIN,
    assert_own_gpus,
    part_of,
    profile,
    recorded,
    run_pilot,
    scan_of,
    scan_runtime,
    snakemake,
    snakemake_env,
    use_cxi_dir,
)

TARGET = "results/recon/multislice_ptycho.h5"
BEAMTIME = ("--configfile", "config/beamtime.yaml")
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


# ---------------------------------------------------------------------- training's GPU
DIFFUSE = ("--configfile", "config/diffuse.yaml")  # networks mode: rule network_train
TARGET_TRAIN = "results/train/model.pt"
TRAIN_CLI = re.compile(r"Shell command: (.*?)xrayflow train --config ")
# What comes before `xrayflow train` (the fit, not --generate/--infer): Polaris binds it with
# the GPU wrapper (a GPU of the node that no other job holds); on Slurm a training job is its
# own sbatch job with --gpus=1, which the jobstep's srun binds, so nothing goes in front; in
# the Slurm pilot (config launch_single_rank, see below) it is srun -n 1 with one GPU per task.
PILOT_CONFIG = [
    "--set-resources",
    "train:gpu=1",
    "network_train:gpu=1",
    "--config",
    "mpi_launcher=srun --exact --mem=0 -c 7 --gpus-per-task=1",
    "gpus_per_rank=1",
    "launch_single_rank=True",
]


@pytest.mark.parametrize(
    "name,extra,prefix",
    [
        ("polaris", [], "workflow/scripts/polaris/set_affinity_gpu.sh "),
        ("frontier", [], ""),
        ("perlmutter", [], ""),
        ("local", [], ""),
        ("local", PILOT_CONFIG, "srun --exact --mem=0 -c 7 --gpus-per-task=1 -n 1 "),
    ],
    ids=["polaris", "frontier", "perlmutter", "local", "slurm-pilot"],
)
def test_training_goes_through_the_gpu_binding(workdir, name, extra, prefix):
    """Rules train (demo) and network_train (networks mode) run their GPU training through the
    same binding as a single-rank reconstruction (rules/common.smk launch_prefix)."""
    for mode in ((TARGET_TRAIN,), DIFFUSE):
        proc = snakemake(
            workdir, "-n", "-p", "--forceall", *mode, "--workflow-profile", profile(name), *extra
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        prefixes = TRAIN_CLI.findall(proc.stdout)
        assert prefixes and {p.strip() for p in prefixes} == {prefix.strip()}, (mode, prefixes)


@pytest.mark.parametrize(
    "name,flags",
    [
        ("frontier", {"--gpus": "1", "--cpus-per-task": "7", "-p": "batch", "-t": "60"}),
        ("perlmutter", {"--gpus": "1", "--cpus-per-task": "32", "--qos": "shared"}),
    ],
)
def test_slurm_training_job_asks_for_one_gpu(workdir, name, flags):
    (workdir / "results" / "train" / "shards").mkdir(parents=True)
    calls = sbatch_calls(workdir, name, TARGET_TRAIN)
    assert len(calls) == 1, calls
    got = flag_values([a for a in calls[0] if not a.startswith("--wrap")])
    for flag, value in flags.items():
        assert got.get(flag) == value, (flag, got)
    assert "--ntasks-per-gpu" not in got and got.get("--ntasks", "1") == "1", got


# ---------------------------------------------------------------------- Slurm pilot
# workflow/scripts/slurm/pilot.sh inside a (fake) 1-node allocation: GPUs per node and the
# launcher of each system's defaults. The fake srun gives a step GPUs no running step holds.
SLURM_PILOT = {
    "frontier": (
        8,
        "--exact --mem=0 --kill-on-bad-exit=1 -c 7 --gpus-per-task=1 --gpu-bind=closest",
    ),
    "perlmutter": (
        4,
        "--exact --mem=0 --kill-on-bad-exit=1 -c 32 --cpu-bind=cores --gpus-per-task=1",
    ),
}
# SLURM_* variables a step may inherit from the pilot: the job's identity, never a request
PILOT_KEEP = {"SLURM_JOBID", "SLURM_CLUSTER_NAME", "SLURM_SUBMIT_DIR", "SLURM_SUBMIT_HOST"}


def slurm_pilot(tmp_path, workdir, system, *args, sleep=""):
    (workdir / "profiles").symlink_to(REPO / "profiles")
    state = tmp_path / "slurm-state"
    log = tmp_path / "calls.jsonl"
    gpus = SLURM_PILOT[system][0]
    env = snakemake_env(
        {
            "FAKE_XRAYFLOW_LOG": str(log),
            "FAKE_XRAYFLOW_SLEEP": sleep,
            "FAKE_SLURM_DIR": str(state),
            "FAKE_SLURM_GPUS": str(gpus),
            # what sbatch -N 1 --gpus-per-node=G puts into the batch script's environment
            "SLURM_JOB_ID": "4242",
            "SLURM_JOB_NUM_NODES": "1",
            "SLURM_SUBMIT_DIR": str(workdir),
            "SLURM_GPUS_PER_NODE": str(gpus),
            "SLURM_GPUS_ON_NODE": str(gpus),
            "SLURM_NTASKS": "1",
            "SLURM_CPUS_ON_NODE": "56",
            "XRAYFLOW_PILOT_SYSTEM": system,
            "XRAYFLOW_SNAKEMAKE": str(VENV_BIN / "snakemake"),
            "XRAYFLOW_SNAKEMAKE_ARGS": " ".join([f"-s {REPO / 'Snakefile'}", *args]),
        },
        [FAKE_SLURM, FAKE_CLI],
    )
    proc = run_pilot(REPO / "workflow" / "scripts" / "slurm" / "pilot.sh", tmp_path, env)
    assert f"pilot: 1 nodes, {gpus} GPUs" in proc.stderr, proc.stderr[-2000:]
    sruns = [json.loads(line) for line in (state / "srun.jsonl").read_text().splitlines()]
    for step in sruns:
        assert set(step["slurm_env"]) <= PILOT_KEEP, step  # no SLURM_GPUS_PER_NODE etc.
        launcher = SLURM_PILOT[system][1].split()
        assert step["args"][: len(launcher)] == launcher, step  # the system's srun options
    return recorded(log), sruns


@pytest.mark.parametrize("system", sorted(SLURM_PILOT))
def test_slurm_pilot_gives_each_job_its_own_gpu(tmp_path, workdir, system):
    """The beamtime scans side by side in one allocation: every reconstruction (single-rank
    ones too) is an srun step with one GPU per rank, and no two ranks running at the same
    time share a GPU; scan002's ranks each have their own."""
    calls, sruns = slurm_pilot(tmp_path, workdir, system, *BEAMTIME, sleep="reconstruct:6")
    recon = [c for c in calls if c["argv"][0] == "reconstruct"]
    assert sorted((scan_of(c), part_of(c)) for c in recon) == RECON_RANKS
    assert_own_gpus(recon, gpus=SLURM_PILOT[system][0])
    steps = [s for s in sruns if "reconstruct" in s["args"]]
    assert len(steps) == len(PARTS) * len(SCAN_RANKS)  # every reconstruction is a step
    for step in steps:
        n = int(step["args"][step["args"].index("-n") + 1])
        assert n == SCAN_RANKS[re.search(r"scan\d+", " ".join(step["args"])).group()], step
        assert len(set(step["gpus"])) == n, step
    for scan, n in SCAN_RANKS.items():
        for part in PARTS:
            gpus = [c["cuda"] for c in recon if scan_of(c) == scan and part_of(c) == part]
            assert len(gpus) == n and len(set(gpus)) == n, (scan, part, gpus)


def test_slurm_pilot_trains_on_a_gpu_of_its_own(tmp_path, workdir):
    """The demo in the pilot: training is an srun step with one GPU, as is the single-rank
    reconstruction; the 2-rank one gets two; jobs without GPUs run outside srun."""
    calls, sruns = slurm_pilot(tmp_path, workdir, "frontier", sleep="train:3")
    fit = [
        c
        for c in calls
        if c["argv"][0] == "train" and not {"--generate", "--infer"} & set(c["argv"])
    ]
    assert len(fit) == 1 and fit[0]["cuda"] in {str(g) for g in range(8)}, fit
    step = [s for s in sruns if "train" in s["args"]]
    assert len(step) == 1 and step[0]["args"][step[0]["args"].index("-n") + 1] == "1", step
    recon = [c for c in calls if c["argv"][0] == "reconstruct"]
    by_out = {}
    for c in recon:
        by_out.setdefault(c["argv"][c["argv"].index("--out") + 1], []).append(c["cuda"])
    assert sorted(len(g) for g in by_out.values()) == [1, 2], by_out  # bragg_cdi, multislice
    assert all(None not in g and len(set(g)) == len(g) for g in by_out.values()), by_out
    others = [c for c in calls if c["argv"][0] in ("simulate", "evaluate")]
    assert others and all(c["cuda"] is None for c in others), others
    # a reconstruction that starts while the training runs (3 s) is on another GPU
    during = [c for c in recon if 0 <= c["t"] - fit[0]["t"] < 2.8]
    assert all(c["cuda"] != fit[0]["cuda"] for c in during), (fit, during)
