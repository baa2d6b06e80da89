"""Workflow reliability (issue 12): config values never run as shell commands, a changed
upstream file changes the results (no stale checkpoint is resumed), and jobs die with the
Snakemake that started them."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from tiny_ptycho import TINY_RECON, TINY_SIM
from wfhelpers import (
    FAKE_CLI,
    REPO,
    make_workdir,
    profile,
    snakemake,
    snakemake_env,
    stages_available,
    start_until,
)

LOCAL = ("--workflow-profile", profile("local"), "--cores", "2")

# Payloads that create MARKER if any shell ever runs them.
PAYLOADS = {
    "dollar-paren": "mpiexec $(touch {m})",
    "backticks": "mpiexec `touch {m}`",
    "semicolon": "mpiexec; touch {m}",
    "and": "mpiexec && touch {m}",
    "pipe": "mpiexec | touch {m}",
    "newline": "mpiexec\ntouch {m}",
    "redirect": "mpiexec >{m}",
}


def _write_config(workdir, **changes):
    path = workdir / "config" / "config.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg.update(changes)
    path.write_text(yaml.safe_dump(cfg))
    return cfg


@pytest.mark.parametrize(
    ("key", "payload"),
    [(("mpi_launcher", "mpi_wrapper")[i % 2], name) for i, name in enumerate(PAYLOADS)],
    ids=[f"{('mpi_launcher', 'mpi_wrapper')[i % 2]}-{name}" for i, name in enumerate(PAYLOADS)],
)
def test_launcher_injection_is_refused_before_any_job(workdir, tmp_path, key, payload):
    """The payload in the workflow config file (no profile: a profile's `config:` would
    replace it): refused at load time, naming the key; no job runs, no file appears."""
    marker = tmp_path / "PWNED"
    _write_config(workdir, **{key: PAYLOADS[payload].format(m=marker)})
    proc = snakemake(
        workdir,
        "--workflow-profile",
        "none",
        "--cores",
        "2",
        path_prefix=[FAKE_CLI],
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert f"config key {key}" in out and "refused" in out, out
    assert not marker.exists()
    assert not (workdir / "results" / "data").exists(), "a job ran"


def test_launcher_injection_on_the_command_line(workdir, tmp_path):
    marker = tmp_path / "PWNED"
    proc = snakemake(
        workdir,
        *LOCAL,
        "--config",
        f"mpi_launcher=mpiexec $(touch {marker})",
        path_prefix=[FAKE_CLI],
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "config key mpi_launcher" in out, out
    assert not marker.exists()


def test_launcher_resource_from_set_resources_is_checked(workdir, tmp_path):
    """`mpi` set per rule (a profile's set-resources) obeys the same rule."""
    marker = tmp_path / "PWNED"
    proc = snakemake(
        workdir,
        *LOCAL,
        "--set-resources",
        f"reconstruct:mpi=mpiexec;touch {marker}",
        path_prefix=[FAKE_CLI],
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "mpi (resource)" in out and "refused" in out, out
    assert not marker.exists()
    assert not (workdir / "results" / "recon").exists()


def test_plain_launchers_of_all_profiles_pass():
    """Every shipped profile's launcher and wrapper match the schema's pattern (the dry runs
    of test_workflow_dryrun.py load them through the workflow's own check)."""
    import re

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    for name in ("local", "local-slurm", "polaris", "aurora", "frontier", "perlmutter"):
        cfg = yaml.safe_load(Path(profile(name), "profile.yaml").read_text()).get("config") or {}
        for key in ("mpi_launcher", "mpi_wrapper"):
            value = cfg.get(key, schema["properties"][key]["default"])
            assert re.fullmatch(schema["properties"][key]["pattern"], value), (name, key, value)
    for bad in PAYLOADS.values():
        assert not re.fullmatch(schema["properties"]["mpi_launcher"]["pattern"], bad)


def test_other_config_strings_reach_the_cli_verbatim(workdir, tmp_path):
    """Overrides, result folders and scan-sheet overrides are quoted: the payload arrives
    as text at the CLI, no shell runs it."""
    marker = tmp_path / "PWNED"
    cfg = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    cfg["datasets"]["bragg_cdi"]["simulate_set"] = [f"seed=$(touch {marker})"]
    cfg["datasets"]["bragg_cdi"]["reconstruct_set"] = [f"run.note=`touch {marker}`; touch {marker}"]
    cfg["results"] = "res $(touch PWNED-results)"
    cfg["train"]["set"] = [f"seed=1 && touch {marker}"]
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    calls = tmp_path / "calls.jsonl"
    snakemake(
        workdir,
        *LOCAL,
        env={"FAKE_XRAYFLOW_LOG": str(calls)},
        path_prefix=[FAKE_CLI],
        timeout=300,
        check=True,
    )
    assert not marker.exists()
    assert not list(workdir.rglob("PWNED*"))
    argvs = [json.loads(line)["argv"] for line in calls.read_text().splitlines()]
    assert any(f"seed=$(touch {marker})" in a for a in argvs)
    assert (workdir / "res $(touch PWNED-results)" / "summary.tsv").exists()


def test_scan_sheet_overrides_are_quoted(workdir, tmp_path):
    marker = tmp_path / "PWNED"
    sheet = workdir / "config" / "scans.tsv"
    sheet.write_text(
        "scan\tdata\tranks\tsimulate_set\treconstruct_set\tevaluate\tcomment\n"
        f"scan001\t\t1\tseed=$(touch {marker})\ta=`touch {marker}`; b=2\tfalse\tx\n"
    )
    proc = snakemake(
        workdir,
        *LOCAL,
        "--configfile",
        "config/beamtime.yaml",
        path_prefix=[FAKE_CLI],
        timeout=300,
        check=True,
    )
    assert not marker.exists(), proc.stdout


# ---------------------------------------------------------------------- stale checkpoints
@pytest.mark.slow
def test_changed_upstream_changes_results(tmp_path):
    """Real stages, tiny sizes: run, change `simulate_set` (far fewer photons), rerun:
    simulate, reconstruct and evaluate run again and the summary changes; no checkpoint
    is left behind."""
    ok, reason = stages_available()
    if not ok:
        pytest.skip(reason)
    workdir = make_workdir(tmp_path / "wd", placeholders=False)
    cfgdir = workdir / "config"
    for rel, content in (
        ("simulate/tiny.yaml", TINY_SIM),
        ("reconstruct/tiny.yaml", TINY_RECON),
        ("evaluate/tiny.yaml", {"illuminated_fraction": 0}),
    ):
        (cfgdir / rel).parent.mkdir(parents=True, exist_ok=True)
        (cfgdir / rel).write_text(yaml.safe_dump(content))

    def configure(photons):
        cfg = {
            "mode": "demo",
            "datasets": {
                "tiny": {
                    "simulate": "config/simulate/tiny.yaml",
                    "reconstruct": "config/reconstruct/tiny.yaml",
                    "evaluate": "config/evaluate/tiny.yaml",
                    "ranks": 1,
                    "simulate_set": [f"noise.photons_per_probe={photons}"],
                }
            },
            "train": {"enabled": False},
        }
        (cfgdir / "config.yaml").write_text(yaml.safe_dump(cfg))

    res = workdir / "results"
    configure(1e6)
    snakemake(workdir, *LOCAL, timeout=600, check=True)
    first = pd.read_csv(res / "summary.tsv", sep="\t")
    first_metrics = (res / "metrics" / "tiny.json").read_text()
    assert not list(res.rglob("*.ckpt*")), "checkpoints left after a successful run"
    configure(300)
    proc = snakemake(workdir, *LOCAL, timeout=600, check=True)
    out = proc.stdout + proc.stderr
    for rule in ("simulate", "reconstruct", "evaluate", "summary"):
        assert f"rule {rule}:" in out or f"localrule {rule}:" in out, (rule, out[-3000:])
    second = pd.read_csv(res / "summary.tsv", sep="\t")
    assert (res / "metrics" / "tiny.json").read_text() != first_metrics
    assert first.loc[0, "nrmse"] != second.loc[0, "nrmse"], (first, second)
    assert not list(res.rglob("*.ckpt*"))


# ---------------------------------------------------------------------- process hygiene
def _procs_with_env(marker: str) -> list[int]:
    """Pids of processes whose environment holds ``marker`` (this test's jobs)."""
    pids = []
    needle = marker.encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = Path(f"/proc/{entry.name}/environ").read_bytes()
            state = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in env and state != "Z":
            pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")
def test_jobs_die_with_a_killed_snakemake(workdir, tmp_path):
    """kill -9 of snakemake (its process only, not its group) mid-reconstruction: the running
    jobs (mpiexec, ranks, shells) are terminated within seconds, not left writing."""
    log = tmp_path / "calls.jsonl"
    env = snakemake_env(
        {
            "FAKE_XRAYFLOW_LOG": str(log),
            "FAKE_XRAYFLOW_SLEEP": "reconstruct:300",
            "XRAYFLOW_TIE_GRACE": "3",
        },
        [FAKE_CLI],
    )
    run = start_until(workdir, LOCAL, env, log, "reconstruct")
    try:
        time.sleep(1.5)  # the watchdogs are up
        jobs = [p for p in _procs_with_env(str(log)) if p != run.pid]
        assert jobs, "no job processes found"
        os.kill(run.pid, signal.SIGKILL)  # snakemake only: its jobs are now orphans
        run.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _procs_with_env(str(log)):
            time.sleep(0.5)
        left = _procs_with_env(str(log))
        assert not left, f"jobs still running after snakemake was killed: {left}"
    finally:
        for pid in _procs_with_env(str(log)):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if run.poll() is None:
            run.kill()
            run.wait(timeout=30)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")
def test_terminated_job_shell_takes_its_children_along():
    """Snakemake cancels a job by terminating its shell only: the watchdog ends what the
    shell started (here a `sleep` that would otherwise run on as an orphan)."""
    script = REPO / "workflow" / "scripts" / "tie_to_snakemake.py"
    shell = subprocess.Popen(
        ["bash", "-c", f"{sys.executable} {script} $$ </dev/null & sleep 120; true"],
        env={**os.environ, "XRAYFLOW_TIE_INTERVAL": "0.2", "XRAYFLOW_TIE_GRACE": "2"},
    )
    sleeper = None
    try:
        deadline = time.monotonic() + 20
        while sleeper is None and time.monotonic() < deadline:
            time.sleep(0.2)
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    try:
                        cmd = Path(f"/proc/{entry.name}/cmdline").read_bytes()
                        ppid = int(
                            Path(f"/proc/{entry.name}/stat").read_text().rsplit(")")[1].split()[1]
                        )
                    except OSError:
                        continue
                    if cmd.startswith(b"sleep\x00120") and ppid == shell.pid:
                        sleeper = int(entry.name)
        assert sleeper is not None, "the job's child never started"
        time.sleep(1.0)  # the watchdog has seen the child
        shell.terminate()
        shell.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and Path(f"/proc/{sleeper}").exists():
            state = Path(f"/proc/{sleeper}/stat").read_text().rsplit(")")[1].split()[0]
            if state == "Z":
                break
            time.sleep(0.2)
        else:
            if Path(f"/proc/{sleeper}").exists():
                raise AssertionError("the orphaned child of the terminated job shell still runs")
    finally:
        if shell.poll() is None:
            shell.kill()
        if sleeper is not None:
            try:
                os.kill(sleeper, signal.SIGKILL)
            except OSError:
                pass
