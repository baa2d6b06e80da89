#!/usr/bin/env python3
"""PBS Pro submit command for snakemake-executor-plugin-cluster-generic (Polaris, Aurora).

Snakemake calls `submit.py [options] JOBSCRIPT`; this reads the job's properties from the
jobscript (snakemake.utils.read_job_properties), builds a `qsub` call and prints the PBS job
id. The project account comes from an environment variable (default XRAYFLOW_ACCOUNT), never
from the workflow files.

Both machines allocate whole nodes, so every resource becomes a node count: nodes =
max(nodes, ceil(tasks / ranks per node), ceil(gpu / GPUs per node), ceil(threads / cores per
node), ceil(mem_mb / memory per node)); a single-process job (tasks <= 1) that does not fit one
node is refused. Resources read: nodes, tasks, gpu, mem_mb, runtime (minutes), the job's
threads, pbs_queue, pbs_filesystems, pbs_place, pbs_select (extra select terms). Snakemake's
own derived keys (mem, mem_mib, disk*, tmpdir, _cores, _nodes) and the workflow's launcher
string (mpi) are not scheduler requests; any other resource is refused with its name.

Queue `auto` tries the machine's queues in the order of QUEUES (ALCF's tables) and takes the
first that admits the node count and walltime and whose per-user job limit is not reached
(counted with qselect); preemptable or by-request queues are used only when pbs_queue names
them. When the fitting queues are all at their per-user limits, submission waits for a free
place (XRAYFLOW_PBS_WAIT seconds, default 3600), as it does for a named queue at its limit.
Every submitted job id is appended to LOGDIR/jobids (to cancel a run whose Snakemake died).
"""

import argparse
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass

from snakemake.utils import read_job_properties


@dataclass(frozen=True)
class Queue:
    name: str
    min_nodes: int
    max_nodes: int
    # (largest node count, walltime limit in minutes) tiers, by increasing node count
    walltime: tuple[tuple[int, int], ...]
    per_user: int | None = None  # jobs queued or running per user
    auto: bool = True  # False: only when pbs_queue names it (preemptable, by request)

    def max_minutes(self, nodes):
        return next(minutes for upto, minutes in self.walltime if nodes <= upto)

    def admits(self, nodes, minutes):
        return self.min_nodes <= nodes <= self.max_nodes and minutes <= self.max_minutes(nodes)


@dataclass(frozen=True)
class System:
    ppn: int  # MPI ranks per node (one per GPU or tile)
    gpus: int  # GPUs (Aurora: GPU tiles) per node
    cores: int  # usable cores per node
    mem_mb: int  # usable memory per node
    select: str  # extra select term of every chunk
    filesystems: str
    queues: tuple[Queue, ...]


H = 60
SYSTEMS = {
    # docs/polaris/running-jobs (argonne-lcf/user-guides): debug 1-2 nodes 1 h; debug-scaling
    # 1-10 nodes 1 h, 1 job per user; capacity 1-4 nodes 168 h, 2 jobs per user; prod routes
    # 10-24 nodes (3 h), 25-99 (6 h), 100-496 (24 h); preemptable 1-10 nodes 72 h, killed
    # without warning by demand jobs; demand by request only.
    "polaris": System(
        ppn=4,
        gpus=4,
        cores=32,
        mem_mb=512_000,
        select="system=polaris",
        filesystems="home:eagle",
        queues=(
            Queue("debug", 1, 2, ((2, H),)),
            Queue("debug-scaling", 1, 10, ((10, H),), per_user=1),
            Queue("capacity", 1, 4, ((4, 168 * H),), per_user=2),
            Queue("prod", 10, 496, ((24, 3 * H), (99, 6 * H), (496, 24 * H))),
            Queue("preemptable", 1, 10, ((10, 72 * H),), auto=False),
            Queue("demand", 1, 56, ((56, H),), auto=False),
        ),
    ),
    # docs/aurora/running-jobs-aurora.md: debug 1-2 nodes 1 h, debug-scaling 2-31 nodes 1 h,
    # 1 job per user each; prod routes to tiny (1-512 nodes, 6 h), small (513-1024, 12 h),
    # medium (1025-1919, 18 h), large (1920+, 24 h); prod-large is the legacy route for large.
    "aurora": System(
        ppn=12,
        gpus=12,
        cores=102,
        mem_mb=1_000_000,
        select="",
        filesystems="flare:home",
        queues=(
            Queue("debug", 1, 2, ((2, H),), per_user=1),
            Queue("debug-scaling", 2, 31, ((31, H),), per_user=1),
            Queue("prod", 1, 7300, ((512, 6 * H), (1024, 12 * H), (1919, 18 * H), (7300, 24 * H))),
            Queue("prod-large", 1920, 7300, ((7300, 24 * H),), auto=False),
        ),
    ),
}

# Read by this script.
REQUESTS = {"nodes", "tasks", "gpu", "mem_mb", "runtime"}
OPTIONS = {"pbs_queue", "pbs_filesystems", "pbs_place", "pbs_select"}
# Not scheduler requests: Snakemake derives these from mem_mb/disk_mb or sets them on every job
# (node-local disk is not a PBS resource on these machines), and `mpi` is the workflow's
# launcher string.
NOT_REQUESTS = {"mem", "mem_mib", "disk", "disk_mb", "disk_mib", "tmpdir", "_cores", "_nodes"}
NOT_REQUESTS |= {"mpi"}


class SubmitError(SystemExit):
    def __init__(self, message):
        super().__init__(f"submit.py: {message}")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--system", default="polaris", choices=sorted(SYSTEMS))
    p.add_argument("--queue", default="auto", help="default queue (resource pbs_queue wins)")
    p.add_argument("--filesystems", help="-l filesystems=... (default: the system's)")
    p.add_argument("--ppn", type=int, help="MPI ranks per node (default: the system's)")
    p.add_argument("--account-env", default="XRAYFLOW_ACCOUNT", help="env var holding the project")
    p.add_argument("--logdir", default="logs/pbs", help="directory of the PBS stdout/stderr files")
    p.add_argument("--qsub", default="qsub", help="qsub executable")
    p.add_argument("--qselect", default="qselect", help="qselect executable (job counts)")
    p.add_argument("--dry-run", action="store_true", help="print the qsub command, do not submit")
    p.add_argument("jobscript")
    return p.parse_args(argv)


def walltime(minutes):
    minutes = max(1, int(math.ceil(float(minutes))))
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def int_resource(res, key, default):
    value = res.get(key)
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise SubmitError(f"resource {key} must be an integer, got {value!r}") from None


def check_keys(res):
    unknown = sorted(set(res) - REQUESTS - OPTIONS - NOT_REQUESTS)
    if unknown:
        raise SubmitError(
            f"resource(s) {', '.join(unknown)} cannot be requested from PBS here (known: "
            f"{', '.join(sorted(REQUESTS | OPTIONS))}); remove them from the profile or rule"
        )


def node_count(res, threads, system, ppn):
    """Whole nodes that hold the job's ranks, GPUs, threads and memory."""
    tasks = max(1, int_resource(res, "tasks", 1))
    gpu = int_resource(res, "gpu", 0)
    mem_mb = int_resource(res, "mem_mb", 0)
    need = {
        "nodes": int_resource(res, "nodes", 1),
        "tasks": math.ceil(tasks / ppn),
        "gpu": math.ceil(gpu / system.gpus),
        "threads": math.ceil(threads / system.cores),
        "mem_mb": math.ceil(mem_mb / system.mem_mb),
    }
    if tasks == 1:  # one process runs on one node
        asked = {"gpu": (gpu, system.gpus), "threads": (threads, system.cores)}
        asked["mem_mb"] = (mem_mb, system.mem_mb)
        for key, (value, per_node) in asked.items():
            if value > per_node:
                raise SubmitError(
                    f"{key} {value} is more than one node has ({per_node}), and a "
                    "single-process job (tasks <= 1) runs on one node"
                )
    return max(1, *need.values())


def queued_jobs(args, queue, user):
    """Jobs of `user` in `queue` that PBS has not finished (qselect lists their ids)."""
    out = subprocess.run(
        [args.qselect, "-u", user, "-q", queue], capture_output=True, text=True, check=False
    )
    return len(out.stdout.split()) if out.returncode == 0 else 0


def has_room(args, queue, user):
    return queue.per_user is None or queued_jobs(args, queue.name, user) < queue.per_user


def pick_queue(system_name, system, name, nodes, minutes, args, env, sleep=time.sleep):
    """The queue to submit to (see the module docstring); waits while limits are reached."""
    by_name = {q.name: q for q in system.queues}
    if name == "auto":
        candidates = [q for q in system.queues if q.auto and q.admits(nodes, minutes)]
        if not candidates:
            raise SubmitError(
                f"no {system_name} queue takes {nodes} nodes for {minutes} min "
                f"({', '.join(q.name for q in system.queues if q.auto)}); change the runtime "
                "or node count, or set resource pbs_queue (e.g. preemptable) explicitly"
            )
    elif name in by_name:
        if not by_name[name].admits(nodes, minutes):
            q = by_name[name]
            raise SubmitError(
                f"pbs_queue {name} takes {q.min_nodes}-{q.max_nodes} nodes and at most "
                f"{q.max_minutes(min(max(nodes, q.min_nodes), q.max_nodes))} min, not "
                f"{nodes} nodes for {minutes} min"
            )
        candidates = [by_name[name]]
    else:
        raise SubmitError(
            f"pbs_queue {name!r} is not a {system_name} queue ({', '.join(by_name)} or auto)"
        )
    user = env.get("USER", "")
    deadline = time.monotonic() + float(env.get("XRAYFLOW_PBS_WAIT", 3600))
    while True:
        for queue in candidates:
            if has_room(args, queue, user):
                return queue.name
        if time.monotonic() >= deadline:
            raise SubmitError(
                f"queue(s) {', '.join(q.name for q in candidates)} still at their per-user job "
                "limit; lower `jobs`, or set resource pbs_queue to another queue"
            )
        sleep(30)


def job_name(props):
    if props.get("type") == "group":
        name = f"smk-{props.get('groupid', 'group')}"
    else:
        name = f"smk-{props.get('rule', 'job')}"
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:60]


def build_qsub(props, args, env, sleep=time.sleep):
    res = props.get("resources", {}) or {}
    check_keys(res)
    account = env.get(args.account_env, "")
    if not account:
        raise SubmitError(
            f"set {args.account_env} to your project (qsub -A) before running Snakemake"
        )
    system = SYSTEMS[args.system]
    threads = int(props.get("threads") or 1)
    nodes = node_count(res, threads, system, args.ppn or system.ppn)
    minutes = int_resource(res, "runtime", 60)
    queue = pick_queue(
        args.system, system, res.get("pbs_queue") or args.queue, nodes, minutes, args, env, sleep
    )
    select = ":".join(
        part for part in (f"select={nodes}", system.select, res.get("pbs_select", "")) if part
    )
    filesystems = res.get("pbs_filesystems") or args.filesystems or system.filesystems
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
    jobid = out.stdout.strip().splitlines()[-1]  # e.g. 123456.polaris-pbs-01
    with open(os.path.join(args.logdir, "jobids"), "a") as handle:
        handle.write(jobid + "\n")
    print(jobid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
