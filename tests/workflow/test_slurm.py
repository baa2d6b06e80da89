"""The workflow on a real single-node Slurm (workflow/scripts/local-slurm.sh start):
simulate -> reconstruct with `srun --mpi=pmi2 -n 2` through snakemake-executor-plugin-slurm;
the beamtime scans as group jobs on the node's fake GPUs (gres devices, so Slurm sets
CUDA_VISIBLE_DEVICES), each job and each rank on its own GPU; the Slurm pilot script under
sbatch.

Skipped with the reason when no local Slurm answers (`local-slurm.sh status` fails); CI starts
it before pytest (`sudo workflow/scripts/local-slurm.sh start`). The stand-in CLI variant runs
as soon as Slurm is up; the real-stage variant also needs the stage CLIs and configs.
"""

import datetime
import json
import re
import subprocess
import time

import h5py
import numpy as np
import pytest
import yaml
from wfhelpers import (
    FAKE_CLI,
    PARTS,
    RECON_RANKS,
    REPO,
    SCAN_RANKS,
    SRUN_2,
    VENV_BIN,
    assert_own_gpus,
    make_workdir,
    part_of,
    profile,
    recorded,
    scan_of,
    scan_runtime,
    snakemake,
    snakemake_env,
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


# ---------------------------------------------------------------------- fake GPUs
def node_gpus() -> int:
    """GPUs the local node advertises (local-slurm.sh: gres on fake character devices)."""
    out = subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True, text=True).stdout
    match = re.search(r"gpu:(\d+)", out)
    return int(match.group(1)) if match else 0


def gpu_profile(tmp_path, scans: int):
    """profiles/local-slurm as on a GPU machine: one GPU per rank (config gpus_per_rank), the
    launcher with Frontier's binding (`--gpus-per-task=1`, no wrapper, so grouped single-rank
    scans go through `srun -n 1` too: scan_launch_prefix), group jobs asking for one task per
    GPU (tasks_per_gpu 1, as the Frontier and Perlmutter profiles), `scans` scans per job."""
    prof = yaml.safe_load((REPO / "profiles" / "local-slurm" / "profile.yaml").read_text())
    prof["config"] = {
        "mpi_launcher": prof["config"]["mpi_launcher"] + " --gpus-per-task=1",
        "gpus_per_rank": 1,
    }
    prof["group-components"] = {"scans": scans}
    prof["set-resources"]["reconstruct_scan"]["tasks_per_gpu"] = 1
    folder = tmp_path / "local-slurm-gpu"
    folder.mkdir()
    (folder / "profile.yaml").write_text(yaml.safe_dump(prof))
    return folder


def slurm_time(text: str) -> float:
    return datetime.datetime.fromisoformat(text).timestamp()


SLEEP = 4  # seconds each stand-in reconstruction rank runs


def test_grouped_beamtime_jobs_each_see_their_own_gpus(tmp_path):
    """The beamtime demo (3 scans with their halves, stand-in CLI) as Slurm group jobs, one
    scan per job, on a node with 2 fake GPUs: the jobs of scan001 and scan003 (1 GPU each)
    run side by side, scan002's (2 GPUs) on its own. Every reconstruction rank sees one GPU
    (srun --gpus-per-task=1 inside the group job), jobs and ranks running at the same time see
    different ones, and each group job's allocation is what the submission tests predict:
    its largest job's GPUs as tasks (--gpus=N --ntasks-per-gpu=1), the summed runtime."""
    if node_gpus() < 2:
        pytest.skip("the local Slurm node advertises fewer than 2 GPUs (local-slurm.sh start)")
    workdir = make_workdir(tmp_path / "wd", placeholders=True)
    calls = tmp_path / "calls.jsonl"
    started = time.monotonic()
    proc = snakemake(
        workdir,
        "--configfile",
        "config/beamtime.yaml",
        "--workflow-profile",
        gpu_profile(tmp_path, scans=1),
        env={
            "FAKE_XRAYFLOW_LOG": str(calls),
            "FAKE_XRAYFLOW_SLEEP": f"reconstruct:{SLEEP}",
            "UCX_TLS": "self,sm",
        },
        path_prefix=[FAKE_CLI],
        timeout=300,
        check=True,
    )
    out = proc.stdout + proc.stderr
    assert time.monotonic() - started < 300
    jobids = sorted(set(JOBID.findall(out)), key=int)
    jobs = {j: scontrol_job(j) for j in jobids}
    assert all(f["JobState"] == "COMPLETED" for f in jobs.values()), jobs
    recon = [c for c in recorded(calls) if c["argv"][0] == "reconstruct"]
    assert sorted((scan_of(c), part_of(c)) for c in recon) == RECON_RANKS
    # every rank on one GPU of the node; ranks running at the same time on different ones
    assert_own_gpus(recon, seconds=SLEEP, gpus=2)
    for scan, n in SCAN_RANKS.items():
        for part in PARTS:
            gpus = [c["cuda"] for c in recon if scan_of(c) == scan and part_of(c) == part]
            assert len(gpus) == n and len(set(gpus)) == n, (scan, part, gpus)
    # one group job per scan, with the resources the submission tests predict
    by_job = {}
    for c in recon:
        by_job.setdefault(c["job"], set()).add(scan_of(c))
    assert set(by_job) <= set(jobs) and all(len(s) == 1 for s in by_job.values()), by_job
    assert sorted(s for scans in by_job.values() for s in scans) == sorted(SCAN_RANKS)
    for job, (scan,) in by_job.items():
        fields, n = jobs[job], SCAN_RANKS[scan]
        assert fields["TresPerJob"] == f"gres:gpu:{n}", (scan, fields)
        assert fields["NumTasks"] == str(n) and fields["NumCPUs"] == str(n), (scan, fields)
        assert fields.get("NtasksPerTRES") == "1", (scan, fields)
        assert fields["MinMemoryNode"] == "500M", (scan, fields)
        minutes = scan_runtime(scan)
        assert fields["TimeLimit"] == f"{minutes // 60:02d}:{minutes % 60:02d}:00", fields
    # every rank's GPU is the one Slurm allocated to its srun step (SLURM_STEP_GPUS) out of its
    # group job's; group jobs that run at the same time (whether they do depends on the
    # machine's load) therefore never share one: Slurm hands out disjoint GPUs
    for c in recon:
        assert c["step_gpus"] is not None and c["cuda"] == c["step_gpus"], c
    span = {j: (slurm_time(jobs[j]["StartTime"]), slurm_time(jobs[j]["EndTime"])) for j in by_job}
    seen = {j: {c["cuda"] for c in recon if c["job"] == j} for j in by_job}
    together = [
        (a, b)
        for a in by_job
        for b in by_job
        if a < b and span[a][0] < span[b][1] and span[b][0] < span[a][1]
    ]
    for a, b in together:
        assert not seen[a] & seen[b], (by_job[a], seen[a], by_job[b], seen[b])
    assert (workdir / "results" / "beamtime" / "summary.tsv").exists()


def wait_for_job(jobid: str, timeout: float) -> dict[str, str]:
    """scontrol fields of `jobid` once it has ended (AssertionError after `timeout` s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fields = scontrol_job(jobid)
        if fields["JobState"] not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
            return fields
        time.sleep(2)
    subprocess.run(["scancel", jobid], check=False)
    raise AssertionError(f"pilot job {jobid} still {fields['JobState']} after {timeout} s")


def test_slurm_pilot_runs_the_beamtime_scans_on_their_own_gpus(tmp_path):
    """`sbatch workflow/scripts/slurm/pilot.sh` for real: one 2-GPU allocation runs the whole
    beamtime demo (stand-in CLI) with the local executor; every reconstruction is an srun step
    with one GPU per rank (`--exact --mem=0`, so two steps run side by side), and ranks running
    at the same time see different GPUs."""
    if node_gpus() < 2:
        pytest.skip("the local Slurm node advertises fewer than 2 GPUs (local-slurm.sh start)")
    workdir = make_workdir(tmp_path / "wd", placeholders=True)
    (workdir / "profiles").symlink_to(REPO / "profiles")
    calls = tmp_path / "calls.jsonl"
    args = [f"-s {REPO / 'Snakefile'}", "--configfile config/beamtime.yaml"]
    env = snakemake_env(
        {
            "FAKE_XRAYFLOW_LOG": str(calls),
            "FAKE_XRAYFLOW_SLEEP": f"reconstruct:{SLEEP}",
            "XRAYFLOW_PILOT_SYSTEM": "generic",  # GPUs and cores from the allocation
            "XRAYFLOW_SNAKEMAKE": str(VENV_BIN / "snakemake"),
            # one core per scan rank, so that two single-rank scans fit the 2-core node
            "XRAYFLOW_SNAKEMAKE_ARGS": " ".join([*args, "--set-threads reconstruct_scan=1"]),
        },
        [FAKE_CLI],
    )
    script = REPO / "workflow" / "scripts" / "slurm" / "pilot.sh"
    log = tmp_path / "pilot.out"
    submit = ["sbatch", "--parsable", "-p", "debug", "-N", "1", "-n", "2", "-c", "1"]
    submit += ["--gpus=2", "--mem=1000", "-t", "5", "-o", str(log), str(script)]
    jobid = subprocess.run(
        submit, cwd=workdir, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    fields = wait_for_job(jobid, timeout=240)
    text = log.read_text() if log.exists() else ""
    assert fields["JobState"] == "COMPLETED", (fields, text[-4000:])
    assert "pilot: 1 nodes, 2 GPUs" in text, text[-4000:]
    recon = [c for c in recorded(calls) if c["argv"][0] == "reconstruct"]
    assert sorted((scan_of(c), part_of(c)) for c in recon) == RECON_RANKS
    assert {c["job"] for c in recon} == {jobid}  # all inside the one allocation
    assert_own_gpus(recon, seconds=SLEEP, gpus=2)
    for scan, n in SCAN_RANKS.items():
        for part in PARTS:
            gpus = [c["cuda"] for c in recon if scan_of(c) == scan and part_of(c) == part]
            assert len(gpus) == n and len(set(gpus)) == n, (scan, part, gpus)
    assert (workdir / "results" / "beamtime" / "summary.tsv").exists()
