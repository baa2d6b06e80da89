"""Faults in the workflow: a failing job is named with its log, a killed run resumes with
--rerun-incomplete without redoing finished work, and the PBS pilot script runs the demo
locally when it is not inside a PBS job."""

import os
import signal

from wfhelpers import (
    FAKE_CLI,
    REPO,
    VENV_BIN,
    fake_calls,
    make_workdir,
    profile,
    run_pilot,
    snakemake,
    snakemake_env,
    start_until,
)

LOCAL = ("--workflow-profile", profile("local"), "--cores", "2")


def test_failing_job_names_rule_and_log(workdir, tmp_path):
    proc = snakemake(
        workdir,
        *LOCAL,
        env={"FAKE_XRAYFLOW_FAIL": "reconstruct"},
        path_prefix=[FAKE_CLI],
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Error in rule reconstruct" in out
    assert "logs/reconstruct/" in out and "injected failure" in out  # the log, shown
    assert not (workdir / "results" / "summary.tsv").exists()


def test_killed_run_resumes_without_redoing_finished_work(workdir, tmp_path):
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    env = snakemake_env(
        {"FAKE_XRAYFLOW_LOG": str(first), "FAKE_XRAYFLOW_SLEEP": "reconstruct:120"}, [FAKE_CLI]
    )
    run = start_until(workdir, LOCAL, env, first, "reconstruct")
    os.killpg(run.pid, signal.SIGKILL)  # Snakemake and its jobs, mid-reconstruction
    run.wait(timeout=30)
    simulated = [a for a in fake_calls(first) if a[0] == "simulate"]
    assert len(simulated) == 2
    snakemake(workdir, *LOCAL, "--unlock", timeout=120, check=True)  # the killed run's lock
    proc = snakemake(
        workdir,
        *LOCAL,
        "--rerun-incomplete",
        env={"FAKE_XRAYFLOW_LOG": str(second)},
        path_prefix=[FAKE_CLI],
        timeout=300,
        check=True,
    )
    stages = [a[0] for a in fake_calls(second)]
    assert "simulate" not in stages, stages  # finished before the kill: not redone
    assert "reconstruct" in stages and "evaluate" in stages
    assert (workdir / "results" / "summary.tsv").exists(), proc.stdout


def test_pilot_script_runs_the_demo_locally(tmp_path):
    workdir = make_workdir(tmp_path / "wd", placeholders=True)
    (workdir / "profiles").symlink_to(REPO / "profiles")
    log = tmp_path / "calls.jsonl"
    env = snakemake_env({"FAKE_XRAYFLOW_LOG": str(log)}, [FAKE_CLI])
    for var in ("PBS_NODEFILE", "PBS_O_WORKDIR"):
        env.pop(var, None)
    env["XRAYFLOW_SNAKEMAKE"] = str(VENV_BIN / "snakemake")
    env["XRAYFLOW_SNAKEMAKE_ARGS"] = f"-s {REPO / 'Snakefile'} --cores 2"
    proc = run_pilot(workdir / "workflow" / "scripts" / "pbs" / "pilot.sh", tmp_path, env)
    assert "not inside a PBS job; running locally" in proc.stderr
    assert (workdir / "results" / "summary.tsv").exists()
    stages = {a[0] for a in fake_calls(log)}
    assert {"simulate", "reconstruct", "train", "evaluate"} <= stages
