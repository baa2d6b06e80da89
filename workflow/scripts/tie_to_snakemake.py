#!/usr/bin/env python3
"""Tie a job to the Snakemake that started it: jobs die with the workflow.

The workflow's shell prefix (Snakefile: ``shell.prefix``) starts this watchdog in the
background of every job shell::

    python3 tie_to_snakemake.py JOB_SHELL_PID &

It polls once a second (``XRAYFLOW_TIE_INTERVAL`` seconds) and ends with the job. It
terminates the job's whole process tree (SIGTERM, then SIGKILL after
``XRAYFLOW_TIE_GRACE`` seconds, default 10) when

- a Snakemake process among the job's ancestors is gone (``kill -9`` of snakemake, a lost
  login session): without this, the job would go on writing its outputs as an orphan;
- the job shell ended but processes it started are still running (Snakemake cancelled the
  job by terminating its shell only, e.g. after Ctrl-C).

Processes are told apart by pid and start time (no pid-reuse mistakes). Linux only (/proc);
elsewhere, or with ``XRAYFLOW_TIE=0``, it exits at once and does nothing. Standard library
only.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

Proc = tuple[int, int]  # (pid, start time in clock ticks since boot)


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of a process, or None when it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2 :].split()
    return rest[0], int(rest[1]), int(rest[19])


def _alive(proc: Proc) -> bool:
    st = _stat(proc[0])
    return st is not None and st[2] == proc[1] and st[0] not in ("Z", "X")


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def watched(job: int) -> list[Proc]:
    """The Snakemake processes among ``job``'s ancestors (else its parent)."""
    out: list[Proc] = []
    st = _stat(job)
    first = None
    pid = st[1] if st else 0
    while pid > 1:
        pst = _stat(pid)
        if pst is None:
            break
        if first is None:
            first = (pid, pst[2])
        if "snakemake" in _cmdline(pid):
            out.append((pid, pst[2]))
        pid = pst[1]
    return out or ([first] if first else [])


def _children(pid: int) -> list[int] | None:
    """Child pids from /proc/PID/task/*/children (None when the kernel lacks that file)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    out: list[int] = []
    for tid in tasks:
        try:
            out += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except FileNotFoundError:
            if not Path(f"/proc/{pid}/task/{tid}").exists():
                continue
            return None
        except OSError:
            continue
    return out


def descendants(root: int) -> set[Proc]:
    """Every process below ``root`` (not this watchdog)."""
    me = os.getpid()
    fast: set[Proc] = set()
    todo = [root]
    while todo:
        kids = _children(todo.pop())
        if kids is None:
            break
        for pid in kids:
            st = _stat(pid)
            if pid != me and st is not None and (pid, st[2]) not in fast:
                fast.add((pid, st[2]))
                todo.append(pid)
    else:
        return fast
    children: dict[int, list[Proc]] = {}  # no children files: scan every process
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        st = _stat(int(entry.name))
        if st is not None:
            children.setdefault(st[1], []).append((int(entry.name), st[2]))
    out: set[Proc] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child[0] != me and child not in out:
                out.add(child)
                todo.append(child[0])
    return out


def terminate(procs: set[Proc], grace: float) -> None:
    """SIGTERM ``procs`` (and what they start meanwhile), SIGKILL what is left after grace."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in list(procs):
            procs |= descendants(proc[0]) if _alive(proc) else set()
        for pid, start in sorted(procs, reverse=True):
            if _alive((pid, start)):
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 0)
        while time.monotonic() < deadline and any(_alive(p) for p in procs):
            time.sleep(0.2)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit() or not Path("/proc/self/stat").exists():
        return 0
    if os.environ.get("XRAYFLOW_TIE", "1") == "0":  # switched off
        return 0
    interval = float(os.environ.get("XRAYFLOW_TIE_INTERVAL", "1"))
    grace = float(os.environ.get("XRAYFLOW_TIE_GRACE", "10"))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    st = _stat(int(argv[1]))
    if st is None:
        return 0
    job = (int(argv[1]), st[2])
    owners = watched(job[0])
    tree: set[Proc] = set()
    while True:
        if not _alive(job):
            left = {p for p in tree if _alive(p)}
            if left:  # the shell was terminated; what it started must not run on
                terminate(left, grace)
            return 0
        if any(not _alive(p) for p in owners):
            print(
                f"tie_to_snakemake: snakemake is gone; terminating job {job[0]}",
                file=sys.stderr,
            )
            terminate({job} | descendants(job[0]), grace)
            return 0
        tree = {p for p in tree if _alive(p)} | descendants(job[0])
        time.sleep(interval)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
