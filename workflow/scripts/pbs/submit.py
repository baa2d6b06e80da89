#!/usr/bin/env python3
"""PBS Pro submit command for snakemake-executor-plugin-cluster-generic (Polaris, Aurora).

Snakemake calls `submit.py [options] JOBSCRIPT`; this reads the job's properties from the
jobscript (snakemake.utils.read_job_properties), builds a `qsub` call and prints the PBS job
id. The project account comes from an environment variable (default XRAYFLOW_ACCOUNT), never
from the workflow files.

Resources read (all optional): nodes, tasks, gpu, runtime (minutes), pbs_queue,
pbs_filesystems, pbs_place, pbs_select (extra select terms, e.g. "ngpus=4").
Queue `auto` picks debug / debug-scaling / prod / (preemptable|capacity) from nodes and runtime.
"""

import argparse
import math
import os
import shlex
import subprocess
import sys

from snakemake.utils import read_job_properties

# (queue, max nodes, max minutes, min nodes) in the order tried by --queue auto.
QUEUES = {
    "polaris": [
        ("debug", 2, 60, 1),
        ("debug-scaling", 10, 60, 1),
        ("prod", 496, 24 * 60, 10),
        ("preemptable", 10, 72 * 60, 1),
    ],
    "aurora": [
        ("debug", 2, 60, 1),
        ("debug-scaling", 256, 60, 2),
        ("prod", 10624, 24 * 60, 256),
        ("capacity", 16, 24 * 60, 1),
    ],
}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--system", default="polaris", help="polaris | aurora | none")
    p.add_argument("--queue", default="auto", help="default queue (resource pbs_queue wins)")
    p.add_argument("--filesystems", default="home:eagle", help="-l filesystems=...")
    p.add_argument(
        "--ppn", type=int, default=4, help="MPI ranks per node (nodes = ceil(tasks/ppn))"
    )
    p.add_argument("--account-env", default="XRAYFLOW_ACCOUNT", help="env var holding the project")
    p.add_argument("--logdir", default="logs/pbs", help="directory of the PBS stdout/stderr files")
    p.add_argument("--qsub", default="qsub", help="qsub executable")
    p.add_argument("--dry-run", action="store_true", help="print the qsub command, do not submit")
    p.add_argument("jobscript")
    return p.parse_args(argv)


def walltime(minutes):
    minutes = max(1, int(math.ceil(float(minutes))))
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def pick_queue(system, nodes, minutes):
    for name, max_nodes, max_minutes, min_nodes in QUEUES.get(system, []):
        if min_nodes <= nodes <= max_nodes and minutes <= max_minutes:
            return name
    raise SystemExit(
        f"submit.py: no {system} queue fits {nodes} nodes for {minutes} min; set pbs_queue"
    )


def job_name(props):
    if props.get("type") == "group":
        name = f"smk-{props.get('groupid', 'group')}"
    else:
        name = f"smk-{props.get('rule', 'job')}"
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:60]


def build_qsub(props, args, env):
    res = props.get("resources", {}) or {}
    account = env.get(args.account_env, "")
    if not account:
        raise SystemExit(
            f"submit.py: set {args.account_env} to your project (qsub -A) before running Snakemake"
        )
    tasks = int(res.get("tasks") or 1)
    nodes = max(int(res.get("nodes") or 1), math.ceil(tasks / max(1, args.ppn)))
    minutes = int(res.get("runtime") or 60)
    queue = res.get("pbs_queue") or args.queue
    if queue == "auto":
        queue = pick_queue(args.system, nodes, minutes)
    select = f"select={nodes}"
    if args.system not in ("", "none", "aurora"):
        select += f":system={args.system}"
    if res.get("pbs_select"):
        select += f":{res['pbs_select']}"
    filesystems = res.get("pbs_filesystems") or args.filesystems
    place = res.get("pbs_place") or "scatter"
    os.makedirs(args.logdir, exist_ok=True)
    return [
        args.qsub,
        "-A", account,
        "-q", queue,
        "-l", select,
        "-l", f"place={place}",
        "-l", f"walltime={walltime(minutes)}",
        "-l", f"filesystems={filesystems}",
        "-k", "doe",
        "-j", "oe",
        "-o", os.path.abspath(args.logdir),
        "-N", job_name(props),
        "-V",
        args.jobscript,
    ]  # fmt: skip


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    props = read_job_properties(args.jobscript)
    cmd = build_qsub(props, args, os.environ)
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stderr or out.stdout)
        return out.returncode
    print(out.stdout.strip().splitlines()[-1])  # the job id, e.g. 123456.polaris-pbs-01
    return 0


if __name__ == "__main__":
    sys.exit(main())
