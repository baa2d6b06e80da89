"""Provenance of a workflow run: resolved config, software versions, git commit.

Used two ways: as the `script:` of rule provenance (writes results/provenance/workflow.yaml)
and from the Snakefile's onstart hook (`python provenance.py OUT.yaml < config.json`,
one time-stamped file per run).
"""

import datetime
import importlib.metadata
import json
import platform
import subprocess
import sys
from pathlib import Path

import yaml

DISTS = ("xrayflow", "snakemake", "numpy", "scipy", "h5py", "torch", "cupy", "mpi4py", "mpich")


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit(cwd="."):
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=cwd
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=cwd,
        ).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def record(config, command=None, repo="."):
    return {
        "time_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": command if command is not None else sys.argv,
        "hostname": platform.node(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git_commit": git_commit(repo),
        "versions": {d: v for d in DISTS if (v := _version(d))},
        "config": json.loads(json.dumps(config)),  # plain dicts/lists for YAML
    }


def write(config, out, command=None, repo="."):
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as handle:
        yaml.safe_dump(record(config, command, repo), handle, sort_keys=False)


if "snakemake" in globals():
    smk = globals()["snakemake"]
    write(dict(smk.params.config), smk.output[0], command="rule provenance", repo=smk.scriptdir)
    with open(smk.log[0], "w") as log:
        print(f"wrote {smk.output[0]}", file=log)
elif __name__ == "__main__":
    payload = json.load(sys.stdin)
    here = Path(__file__).resolve().parent
    write(payload["config"], sys.argv[1], command=payload.get("command"), repo=here)
