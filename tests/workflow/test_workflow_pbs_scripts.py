"""Unit tests of the PBS submit/status wrappers (workflow/scripts/pbs)."""

import importlib.util
import json
import os
import stat

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


def args(tmp_path, *extra):
    return submit.parse_args([*extra, "--logdir", str(tmp_path / "pbs"), "jobscript.sh"])


def props(rule="reconstruct", **resources):
    return {"type": "single", "rule": rule, "resources": resources}


def opt(cmd, flag):
    return [cmd[i + 1] for i, a in enumerate(cmd) if a == flag]


def test_qsub_polaris_small_job(tmp_path):
    cmd = submit.build_qsub(props(tasks=2, runtime=30), args(tmp_path), {"XRAYFLOW_ACCOUNT": "PRJ"})
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
        (8, 300, 2, "preemptable"),
    ],
)
def test_qsub_polaris_queue_and_nodes(tmp_path, tasks, runtime, nodes, queue):
    cmd = submit.build_qsub(
        props(tasks=tasks, runtime=runtime), args(tmp_path), {"XRAYFLOW_ACCOUNT": "PRJ"}
    )
    assert opt(cmd, "-q") == [queue]
    assert f"select={nodes}:system=polaris" in opt(cmd, "-l")


def test_qsub_resource_overrides_and_aurora(tmp_path):
    a = args(tmp_path, "--system", "aurora", "--filesystems", "flare:home", "--ppn", "12")
    cmd = submit.build_qsub(
        props(tasks=24, runtime=10, pbs_queue="capacity", pbs_select="ncpus=208"),
        a,
        {"XRAYFLOW_ACCOUNT": "PRJ"},
    )
    assert opt(cmd, "-q") == ["capacity"]
    assert "select=2:ncpus=208" in opt(cmd, "-l")
    assert "filesystems=flare:home" in opt(cmd, "-l")


def test_qsub_group_job_name(tmp_path):
    p = {"type": "group", "groupid": "scans", "resources": {"tasks": 3, "runtime": 40}}
    cmd = submit.build_qsub(p, args(tmp_path), {"XRAYFLOW_ACCOUNT": "PRJ"})
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
    rc = submit.main(["--qsub", str(fake), "--logdir", str(tmp_path / "logs"), str(jobscript)])
    assert rc == 0
    argv = json.loads(record.read_text())
    assert argv[-1] == str(jobscript)
    assert "select=1:system=polaris" in argv


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
