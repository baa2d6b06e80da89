#!/usr/bin/env python3
"""PBS Pro status command for snakemake-executor-plugin-cluster-generic.

`status.py JOBID` prints running, success or failed from `qstat -xf -F json JOBID`:
job_state Q/H/W/R/E/B/S/T/X... → running unless finished; F (finished) → success when
Exit_status is 0, failed otherwise. A job qstat no longer knows counts as failed
(PBS keeps finished jobs in history, so that only happens after long delays).
"""

import json
import os
import subprocess
import sys

RUNNING = {"Q", "H", "W", "R", "E", "B", "S", "T", "U", "M"}


def classify(qstat_json, jobid):
    jobs = qstat_json.get("Jobs", {}) or {}
    info = jobs.get(jobid)
    if info is None and jobs:
        # qstat may expand the id (123 -> 123.server); match on the numeric prefix
        prefix = jobid.split(".")[0]
        for key, value in jobs.items():
            if key.split(".")[0] == prefix:
                info = value
                break
    if info is None:
        return "failed"
    state = info.get("job_state", "")
    if state in ("F", "X"):
        exit_status = info.get("Exit_status", info.get("exit_status"))
        try:
            return "success" if int(exit_status) == 0 else "failed"
        except (TypeError, ValueError):
            return "failed"
    if state in RUNNING:
        return "running"
    return "failed"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: status.py JOBID", file=sys.stderr)
        return 2
    jobid = argv[0]
    qstat = os.environ.get("XRAYFLOW_QSTAT", "qstat")
    out = subprocess.run([qstat, "-xf", "-F", "json", jobid], capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.strip():
        # transient server errors: report running so that Snakemake asks again
        unknown = "Unknown Job Id" in out.stderr or "unknown job id" in out.stderr.lower()
        print("failed" if unknown else "running")
        return 0
    try:
        data = json.loads(out.stdout)
    except json.JSONDecodeError:
        print("running")
        return 0
    print(classify(data, jobid))
    return 0


if __name__ == "__main__":
    sys.exit(main())
