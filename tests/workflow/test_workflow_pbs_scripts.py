"""Unit tests of the PBS submit/status wrappers (workflow/scripts/pbs)."""

import importlib.util
import json
import os
import stat
import time

import pytest
from wfhelpers import REPO

PBS = REPO / "workflow" / "scripts" / "pbs"


def load(name):
    spec = importlib.util.spec_from_file_location(f"pbs_{name}", PBS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


submit = load("submit")
status = load("status")


def fake_qselect(tmp_path, queued=None):
    """A qselect that lists `queued[queue]` job ids for a queue (none by default)."""
    script = tmp_path / "qselect"
    table = json.dumps(queued or {})
    script.write_text(
        "#!/usr/bin/env python3\nimport json, sys\n"
        f"ids = json.loads({table!r}).get(sys.argv[sys.argv.index('-q') + 1], 0)\n"
        "print('\\n'.join(f'{i}.pbs' for i in range(ids)))\n"
    )
    script.chmod(0o755)
    return str(script)


def args(tmp_path, *extra, queued=None):
    return submit.parse_args(
        [*extra, "--logdir", str(tmp_path / "pbs"), "--qselect", fake_qselect(tmp_path, queued)]
        + ["jobscript.sh"]
    )


def props(rule="reconstruct", threads=1, **resources):
    return {"type": "single", "rule": rule, "threads": threads, "resources": resources}


def opt(cmd, flag):
    return [cmd[i + 1] for i, a in enumerate(cmd) if a == flag]


def qsub(tmp_path, p, *extra, queued=None, env=None, sleep=None):
    env = {"XRAYFLOW_ACCOUNT": "PRJ", "USER": "me", **(env or {})}
    return submit.build_qsub(p, args(tmp_path, *extra, queued=queued), env, sleep or time.sleep)


def test_qsub_polaris_small_job(tmp_path):
    cmd = qsub(tmp_path, props(tasks=2, runtime=30))
    assert cmd[0] == "qsub" and cmd[-1] == "jobscript.sh"
    assert opt(cmd, "-A") == ["PRJ"]
    assert opt(cmd, "-q") == ["debug"]
    assert set(opt(cmd, "-l")) == {
        "select=1:system=polaris",
        "place=scatter",
        "walltime=00:30:00",
        "filesystems=home:eagle",
    }
    assert opt(cmd, "-N") == ["smk-reconstruct"]


@pytest.mark.parametrize(
    ("tasks", "runtime", "nodes", "queue"),
    [
        (8, 60, 2, "debug"),
        (16, 60, 4, "debug-scaling"),
        (64, 120, 16, "prod"),
        (400, 600, 100, "prod"),
        (8, 300, 2, "capacity"),  # not preemptable: never chosen unless asked for
        (1, 24 * 60, 1, "capacity"),
    ],
)
def test_qsub_polaris_queue_and_nodes(tmp_path, tasks, runtime, nodes, queue):
    cmd = qsub(tmp_path, props(tasks=tasks, runtime=runtime))
    assert opt(cmd, "-q") == [queue]
    assert f"select={nodes}:system=polaris" in opt(cmd, "-l")


def test_qsub_polaris_no_queue_without_preemption(tmp_path):
    with pytest.raises(SystemExit, match="no polaris queue takes 6 nodes for 120 min.*pbs_queue"):
        qsub(tmp_path, props(tasks=24, runtime=120))
    cmd = qsub(tmp_path, props(tasks=24, runtime=120, pbs_queue="preemptable"))
    assert opt(cmd, "-q") == ["preemptable"]
    with pytest.raises(SystemExit, match="prod takes 10-496 nodes"):
        qsub(tmp_path, props(tasks=8, runtime=120, pbs_queue="prod"))
    with pytest.raises(SystemExit, match="prod takes .* at most 180 min"):
        qsub(tmp_path, props(tasks=40, runtime=240, pbs_queue="prod"))  # 10 nodes: small, 3 h


@pytest.mark.parametrize(
    ("tasks", "runtime", "nodes", "queue"),
    [
        (12, 30, 1, "debug"),
        (24, 60, 2, "debug"),
        (48, 30, 4, "debug-scaling"),
        (12, 120, 1, "prod"),  # tiny, from 1 node
        (32 * 12, 120, 32, "prod"),
        (300 * 12, 600, 300, None),  # tiny: at most 6 h
    ],
)
def test_qsub_aurora_queues(tmp_path, tasks, runtime, nodes, queue):
    p = props(tasks=tasks, runtime=runtime)
    if queue is None:
        with pytest.raises(SystemExit, match="no aurora queue"):
            qsub(tmp_path, p, "--system", "aurora")
        return
    cmd = qsub(tmp_path, p, "--system", "aurora")
    assert opt(cmd, "-q") == [queue]
    assert f"select={nodes}" in opt(cmd, "-l")
    assert "filesystems=flare:home" in opt(cmd, "-l")


def test_qsub_aurora_refuses_queues_it_does_not_have(tmp_path):
    with pytest.raises(SystemExit, match="'capacity' is not a aurora queue"):
        qsub(tmp_path, props(pbs_queue="capacity"), "--system", "aurora")


def test_qsub_resources_become_nodes(tmp_path):
    cmd = qsub(tmp_path, props(tasks=2, gpu=8, runtime=30))  # 8 GPUs: 2 Polaris nodes
    assert "select=2:system=polaris" in opt(cmd, "-l")
    cmd = qsub(tmp_path, props(tasks=2, mem_mb=700_000, runtime=30))
    assert "select=2:system=polaris" in opt(cmd, "-l")
    group = {"type": "group", "groupid": "scans", "threads": 48, "resources": {"tasks": 6}}
    cmd = qsub(tmp_path, group)  # 6 single-rank jobs x 8 cores side by side: 2 nodes
    assert "select=2:system=polaris" in opt(cmd, "-l")
    cmd = qsub(tmp_path, props(tasks=2, nodes=3, runtime=30))
    assert "select=3:system=polaris" in opt(cmd, "-l")


@pytest.mark.parametrize(
    ("resources", "threads", "message"),
    [
        ({"gpu": 5}, 1, "gpu 5 is more than one node has \\(4\\)"),
        ({"mem_mb": 600_000}, 1, "mem_mb 600000 is more than one node has"),
        ({}, 64, "threads 64 is more than one node has \\(32\\)"),
        ({"tasks_per_gpu": 1}, 1, "tasks_per_gpu cannot be requested from PBS"),
        ({"slurm_partition": "x", "qos": "y"}, 1, "qos, slurm_partition cannot be"),
        ({"runtime": "2h"}, 1, "resource runtime must be an integer"),
    ],
)
def test_qsub_refuses_what_it_cannot_pass(tmp_path, resources, threads, message):
    with pytest.raises(SystemExit, match=message):
        qsub(tmp_path, props(threads=threads, **resources))


def test_qsub_passes_over_snakemake_derived_keys(tmp_path):
    derived = {"mem": "2 GB", "mem_mib": 1908, "disk_mb": 1000, "disk": "1 GB", "tmpdir": "/tmp"}
    cmd = qsub(tmp_path, props(tasks=1, mpi="", **derived))
    assert "select=1:system=polaris" in opt(cmd, "-l")


def test_qsub_per_user_job_limits(tmp_path):
    # debug-scaling (1 job per user) taken: a 3-node 1 h job goes to capacity instead
    p = props(tasks=12, runtime=60)
    assert opt(qsub(tmp_path, p), "-q") == ["debug-scaling"]
    assert opt(qsub(tmp_path, p, queued={"debug-scaling": 1}), "-q") == ["capacity"]
    # both full: wait (here: no time) and then name the queues
    waits = []
    full = {"debug-scaling": 1, "capacity": 2}
    with pytest.raises(SystemExit, match="debug-scaling, capacity still at their per-user"):
        qsub(tmp_path, p, queued=full, env={"XRAYFLOW_PBS_WAIT": "0"}, sleep=waits.append)
    # a named queue at its limit waits for room the same way
    with pytest.raises(SystemExit, match="debug-scaling still at"):
        qsub(
            tmp_path,
            props(tasks=12, runtime=60, pbs_queue="debug-scaling"),
            queued=full,
            env={"XRAYFLOW_PBS_WAIT": "0"},
            sleep=waits.append,
        )


def test_qsub_resource_overrides(tmp_path):
    cmd = qsub(
        tmp_path,
        props(tasks=4, runtime=10, pbs_select="ngpus=4", pbs_place="pack", pbs_filesystems="home"),
    )
    assert "select=1:system=polaris:ngpus=4" in opt(cmd, "-l")
    assert {"place=pack", "filesystems=home"} <= set(opt(cmd, "-l"))


def test_qsub_group_job_name(tmp_path):
    p = {"type": "group", "groupid": "scans", "resources": {"tasks": 3, "runtime": 40}}
    cmd = qsub(tmp_path, p)
    assert opt(cmd, "-N") == ["smk-scans"]


def test_qsub_needs_account(tmp_path):
    with pytest.raises(SystemExit, match="XRAYFLOW_ACCOUNT"):
        submit.build_qsub(props(), args(tmp_path), {})


def test_submit_main_with_fake_qsub(tmp_path, monkeypatch):
    """End to end: a Snakemake-style jobscript, a fake qsub that records argv."""
    jobscript = tmp_path / "snakejob.reconstruct.1.sh"
    properties = json.dumps(props(tasks=4, runtime=20))
    jobscript.write_text(f"#!/bin/sh\n# properties = {properties}\necho hi\n")
    fake = tmp_path / "qsub"
    record = tmp_path / "argv.json"
    fake.write_text(
        "#!/usr/bin/env python3\nimport json, sys\n"
        f"json.dump(sys.argv[1:], open({str(record)!r}, 'w'))\nprint('4242.polaris-pbs-01')\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("XRAYFLOW_ACCOUNT", "PRJ")
    logs = tmp_path / "logs"
    rc = submit.main(
        ["--qsub", str(fake), "--qselect", fake_qselect(tmp_path), "--logdir", str(logs)]
        + [str(jobscript)]
    )
    assert rc == 0
    argv = json.loads(record.read_text())
    assert argv[-1] == str(jobscript)
    assert "select=1:system=polaris" in argv
    assert (logs / "jobids").read_text() == "4242.polaris-pbs-01\n"  # to qdel after a kill


def qstat_json(jobid, **job):
    return {"timestamp": 1, "pbs_version": "2024.1", "Jobs": {jobid: job}}


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        ({"job_state": "Q"}, "running"),
        ({"job_state": "H"}, "running"),
        ({"job_state": "R"}, "running"),
        ({"job_state": "E"}, "running"),
        ({"job_state": "F", "Exit_status": 0}, "success"),
        ({"job_state": "F", "Exit_status": 1}, "failed"),
        ({"job_state": "F", "Exit_status": -29}, "failed"),  # killed (walltime)
        ({"job_state": "F"}, "failed"),
    ],
)
def test_status_classify(job, expected):
    assert status.classify(qstat_json("7.polaris-pbs-01", **job), "7.polaris-pbs-01") == expected


def test_status_short_id_matches_server_suffix():
    data = qstat_json("7.polaris-pbs-01", job_state="F", Exit_status=0)
    assert status.classify(data, "7") == "success"
    assert status.classify({"Jobs": {}}, "8") == "failed"


def test_status_main_with_fake_qstat(tmp_path, monkeypatch, capsys):
    fake = tmp_path / "qstat"
    payload = json.dumps(qstat_json("11.server", job_state="F", Exit_status=0))
    fake.write_text(f"#!/bin/sh\necho '{payload}'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("XRAYFLOW_QSTAT", str(fake))
    assert status.main(["11.server"]) == 0
    assert capsys.readouterr().out.strip() == "success"
    bad = tmp_path / "qstat-unknown"
    bad.write_text("#!/bin/sh\necho 'qstat: Unknown Job Id 12.server' >&2\nexit 153\n")
    bad.chmod(0o755)
    monkeypatch.setenv("XRAYFLOW_QSTAT", str(bad))
    assert status.main(["12.server"]) == 0
    assert capsys.readouterr().out.strip() == "failed"


def test_scripts_are_executable():
    for name in ("submit.py", "status.py", "pilot.sh"):
        assert os.access(PBS / name, os.X_OK), name
