"""Helpers of the workflow tests (tests/workflow/test_workflow_*.py).

A scratch work directory per test and a Snakemake runner.

Every test runs Snakemake on the repository's Snakefile with `-d WORKDIR`, where WORKDIR holds a
copy of config/ and a link to workflow/ (profiles name scripts relative to the working
directory). Stage config files that the workflow config names but that do not exist yet are
replaced by empty placeholders, so that DAG, profile and submission tests do not depend on
the stage helpers' files; the end-to-end tests use the real ones.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
FAKE_CLI = HERE / "fake_bin"
FAKE_PBS = HERE / "fakes" / "pbs"
FAKE_SLURM = HERE / "fakes" / "slurm"
VENV_BIN = Path(sys.executable).parent
PROFILES = ["local", "local-slurm", "polaris", "aurora", "frontier", "perlmutter"]
# The 2-rank reconstruction as profiles/local-slurm launches it.
SRUN_2 = "srun --mpi=pmi2 --kill-on-bad-exit=1 -n 2 env UCX_TLS=self,sm xrayflow reconstruct"
MODES = {"demo": None, "beamtime": "config/beamtime.yaml", "scaling": "config/scaling.yaml"}


def stage_configs(config_dir: Path, files=("config.yaml", "beamtime.yaml", "scaling.yaml")):
    """Stage config paths named by the given workflow config files (default: all three)."""
    paths: set[str] = set()
    for name in files:
        file = config_dir / name
        if not file.exists():
            continue
        cfg = yaml.safe_load(file.read_text()) or {}
        for ds in (cfg.get("datasets") or {}).values():
            paths.update(ds.get(k) for k in ("simulate", "reconstruct", "evaluate"))
        paths.add((cfg.get("train") or {}).get("config"))
        for section in ("beamtime", "scaling"):
            sec = cfg.get(section) or {}
            paths.update(sec.get(k) for k in ("simulate", "reconstruct", "evaluate"))
        paths.update(study.get("config") for study in (cfg.get("networks") or {}).values())
    return {p for p in paths if p}


def missing_stage_configs(files=("config.yaml",)) -> list[str]:
    """Stage configs named by the demo config (or `files`) that do not exist yet."""
    return sorted(p for p in stage_configs(REPO / "config", files) if not (REPO / p).exists())


def make_workdir(path: Path, placeholders: bool = True) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "config", path / "config", dirs_exist_ok=True)
    (path / "workflow").symlink_to(REPO / "workflow")
    if placeholders:
        for rel in stage_configs(path / "config"):
            target = path / rel
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text("{}\n")
    return path


def snakemake_env(env=None, path_prefix=()) -> dict:
    """Environment of a test's Snakemake run: PATH with the stand-ins and the venv first."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env["PATH"] = os.pathsep.join(
        [*(str(p) for p in path_prefix), str(VENV_BIN), full_env.get("PATH", "")]
    )
    full_env.setdefault("XRAYFLOW_ACCOUNT", "PRJ123")
    return full_env


def snakemake_cmd(workdir, *args) -> list[str]:
    """Command line running Snakemake on the repository Snakefile in `workdir`."""
    snakefile = str(REPO / "Snakefile")
    return [sys.executable, "-m", "snakemake", "-s", snakefile, "-d", str(workdir), *map(str, args)]


def snakemake(workdir, *args, env=None, path_prefix=(), timeout=300, check=False):
    """Run Snakemake on the repository Snakefile in `workdir`; returns CompletedProcess."""
    full_env = snakemake_env(env, path_prefix)
    cmd = snakemake_cmd(workdir, *args)
    proc = subprocess.run(
        cmd, cwd=workdir, env=full_env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({proc.returncode}): {' '.join(cmd)}\n"
            f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc


def use_cxi_dir(workdir, absolute: bool = False) -> Path:
    """Point the beamtime config at a directory ``cxi`` of two stand-in CXI files (no scan
    sheet), named by its absolute path or relative to the workdir; returns the directory."""
    cxi = workdir / "cxi"
    cxi.mkdir()
    for name in ("run_a", "run_b"):
        (cxi / f"{name}.cxi").write_bytes(b"fake")
    cfg = workdir / "config" / "beamtime.yaml"
    text = cfg.read_text().replace("scans: config/scans.tsv", "scans: null")
    cfg.write_text(text.replace("cxi_dir: null", f"cxi_dir: {cxi if absolute else 'cxi'}"))
    return cxi


def run_local(workdir, *args, calls=None, env=None, timeout=300):
    """A real run with the local profile on 2 cores (``check``); with ``calls`` (a path) the
    stand-in CLI runs in place of xrayflow and records its argument lists there."""
    env = dict(env or {})
    prefix = []
    if calls is not None:
        env["FAKE_XRAYFLOW_LOG"] = str(calls)
        prefix = [FAKE_CLI]
    return snakemake(
        workdir,
        "--workflow-profile",
        profile("local"),
        "--cores",
        "2",
        *args,
        env=env,
        path_prefix=prefix,
        timeout=timeout,
        check=True,
    )


def run_pilot(script: Path, cwd: Path, env: dict, timeout: float = 300):
    """Run the PBS pilot script ``script`` (the job's whole run) in ``cwd``; asserts success
    (the end of its output in the message) and returns the completed process."""
    proc = subprocess.run(
        [str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def profile(name: str) -> str:
    return str(REPO / "profiles" / name)


def stages_available(files=("config.yaml",)) -> tuple[bool, str]:
    """Whether the real stage CLIs and the stage configs of `files` exist (end-to-end tests)."""
    exe = shutil.which("xrayflow", path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if exe is None:
        return False, "xrayflow CLI not installed"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True)
    missing = [s for s in ("simulate", "reconstruct", "train", "evaluate") if s not in out.stdout]
    if out.returncode != 0 or missing:
        return False, f"xrayflow stages not available yet: {missing or out.stderr.strip()}"
    cfgs = missing_stage_configs(files)
    if cfgs:
        return False, f"stage config files missing: {cfgs}"
    return True, ""


def fake_calls(log: Path) -> list[list[str]]:
    """The argument lists the fake CLI (``FAKE_XRAYFLOW_LOG``) was called with, in order."""
    return [json.loads(line)["argv"] for line in log.read_text().splitlines()]


def start_until(workdir, args, env: dict, log: Path, stage: str, timeout: float = 120):
    """Start Snakemake in its own session and return its Popen once the fake CLI's ``log``
    shows a call of ``stage``; AssertionError (the run killed) if none comes in time."""
    run = subprocess.Popen(
        snakemake_cmd(workdir, *args),
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and any(a[0] == stage for a in fake_calls(log)):
            return run
        time.sleep(0.5)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(timeout=30)
    raise AssertionError(f"the {stage} job never started")


# ---------------------------------------------------------------------- beamtime demo runs
# config/scans.tsv: scan001 and scan003 one rank, scan002 two ranks; scan003 not evaluated.
SCAN_RANKS = {"scan001": 1, "scan002": 2, "scan003": 1}
# Reconstructions of every scan (beamtime.halves is on by default): the whole scan and its
# even/odd halves, each with the scan's ranks.
PARTS = {"recon": None, "recon_even": "even", "recon_odd": "odd"}
# (scan, reconstruction) of every rank: each scan and its two halves with the scan's ranks
RECON_RANKS = sorted((s, part) for s, n in SCAN_RANKS.items() for part in PARTS for _ in range(n))


def scan_runtime(scan):
    """Minutes of one scan's jobs (config/config.yaml resources): simulate 10, reconstruct 20
    for the scan and for each half, evaluate 10 (not scan003), quick-look + halves' FRC 10."""
    return 10 + len(PARTS) * 20 + (10 if scan != "scan003" else 0) + 10


def recorded(log):
    """The stand-in CLI's records (FAKE_XRAYFLOW_LOG): argv, rank, cuda, t, job."""
    return [json.loads(line) for line in log.read_text().splitlines()]


def scan_of(call):
    return re.search(r"scan\d+", " ".join(call["argv"])).group()


def part_of(call):
    """recon, recon_even or recon_odd: the folder of a reconstruction's --out."""
    return call["argv"][call["argv"].index("--out") + 1].split("/")[-2]


def assert_own_gpus(recon, seconds=6.0, gpus=4):
    """Every rank on one GPU of the node's `gpus`, and ranks that run at the same time (one
    starts less than the fake's `seconds` of sleep after another) on different ones; some of
    them do run at the same time."""
    assert {c["cuda"] for c in recon} <= {str(g) for g in range(gpus)}, recon
    pairs = [(a, b) for i, a in enumerate(recon) for b in recon[i + 1 :]]
    overlapping = [(a, b) for a, b in pairs if abs(a["t"] - b["t"]) < seconds - 0.2]
    assert overlapping, "no two reconstructions ran side by side"
    shared = [(a, b) for a, b in overlapping if a["cuda"] == b["cuda"]]
    assert not shared, shared
