"""The building blocks of the reliability rules: output checks, temporaries, fingerprints,
memory guard, strict YAML."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from xrayflow.config import load_config, read_yaml
from xrayflow.errors import ConfigError, OutputError, ResourceError, XrayflowError
from xrayflow.io import atomic
from xrayflow.io.atomic import atomic_path, remove_stale_temporaries
from xrayflow.io.fingerprint import file_fingerprint, run_fingerprint
from xrayflow.io.outputs import check_outputs
from xrayflow.memory import GiB, available_bytes, check_memory


@pytest.fixture
def data(tmp_path):
    p = tmp_path / "data.h5"
    p.write_bytes(b"frames")
    return p


def test_output_that_is_the_input_is_refused(tmp_path, data):
    with pytest.raises(OutputError, match="would overwrite the input --data"):
        check_outputs({"--out": data}, {"--data": data})


@pytest.mark.parametrize("how", ["symlink", "hardlink", "dotdot"])
def test_output_reaching_the_input_another_way_is_refused(tmp_path, data, how):
    other = tmp_path / "alias.h5"
    if how == "symlink":
        other.symlink_to(data)
    elif how == "hardlink":
        os.link(data, other)
    else:
        (tmp_path / "sub").mkdir()
        other = tmp_path / "sub" / ".." / "data.h5"
    with pytest.raises(OutputError, match="overwrite"):
        check_outputs({"--out": other}, {"--data": data})


def test_folder_output_holding_an_input_is_refused(tmp_path, data):
    with pytest.raises(OutputError, match="overwrite"):
        check_outputs({"--out": tmp_path}, {"--data": data}, dirs=("--out",))


@pytest.mark.parametrize(
    ("path", "match"),
    [
        ("", "empty"),
        ("  ", "empty"),
        ("/dev/full", "not a regular file"),
        ("/dev/null", "not a regular file"),
        ("/proc/xrayflow.h5", "cannot write"),
        ("/nonexistent-dir-xrayflow/out.h5", "does not exist"),
    ],
)
def test_unusable_output_paths_are_refused(path, match):
    with pytest.raises(OutputError, match=match):
        check_outputs({"--out": path})


def test_directory_as_file_output_and_file_as_folder_output(tmp_path, data):
    with pytest.raises(OutputError, match="is a directory"):
        check_outputs({"--out": tmp_path})
    with pytest.raises(OutputError, match="not a directory"):
        check_outputs({"--figures": data}, dirs=("--figures",))
    with pytest.raises(OutputError, match="not a directory"):
        check_outputs({"--out": data / "x.h5"})


def test_two_outputs_on_one_path_are_refused(tmp_path):
    with pytest.raises(OutputError, match="same path"):
        check_outputs({"--out": tmp_path / "a.h5", "run.checkpoint_path": tmp_path / "a.h5"})


def test_good_outputs_pass_and_create_nothing(tmp_path, data):
    got = check_outputs(
        {"--out": tmp_path / "r.h5", "--figures": tmp_path / "figs", "opt": None},
        {"--data": data, "--model": None},
        dirs=("--figures",),
    )
    assert set(got) == {"--out", "--figures"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.h5"]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    target = tmp_path / "out.h5"
    host = atomic._HOST
    stale = tmp_path / f"out.h5.tmp-{host}-{_dead_pid()}-abc"
    live = tmp_path / f"out.h5.tmp-{host}-{os.getpid()}-abc"
    foreign = tmp_path / f"out.h5.tmp-otherhost-{_dead_pid()}-abc"
    unrelated = tmp_path / f"other.h5.tmp-{host}-{_dead_pid()}-abc"
    for p in (stale, live, foreign, unrelated):
        p.write_bytes(b"partial")
    check_outputs({"--out": target})
    assert not stale.exists()
    assert live.exists() and foreign.exists() and unrelated.exists()
    assert remove_stale_temporaries(target) == []


def test_atomic_path_leaves_nothing_on_failure_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "m.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
    with atomic_path(target) as tmp:
        assert tmp.name.startswith(f"m.json.tmp-{atomic._HOST}-{os.getpid()}-")
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_file_fingerprint_follows_the_content(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x" * 1000)
    b.write_bytes(b"x" * 1000)
    assert file_fingerprint(a) == file_fingerprint(b)
    b.write_bytes(b"x" * 999 + b"y")
    assert file_fingerprint(a) != file_fingerprint(b)


def test_large_files_are_fingerprinted_by_size_time_and_edges(tmp_path, monkeypatch):
    from xrayflow.io import fingerprint as fp

    monkeypatch.setattr(fp, "FULL_HASH_BYTES", 100)
    monkeypatch.setattr(fp, "EDGE_BYTES", 10)
    p = tmp_path / "big"
    p.write_bytes(bytes(range(256)))
    f0 = fp.file_fingerprint(p)
    assert f0.startswith("sampled:")
    raw = bytearray(p.read_bytes())
    raw[-1] ^= 1
    p.write_bytes(bytes(raw))
    assert fp.file_fingerprint(p) != f0


def test_run_fingerprint_changes_with_config_or_any_file(tmp_path, data):
    base = run_fingerprint({"lr": 1.0}, {"data": data})
    assert base == run_fingerprint({"lr": 1.0}, {"data": data})
    assert base != run_fingerprint({"lr": 0.5}, {"data": data})
    data.write_bytes(b"other frames")
    assert base != run_fingerprint({"lr": 1.0}, {"data": data})


def test_memory_guard_names_the_estimate_the_parts_and_the_limit():
    t0 = time.perf_counter()
    with pytest.raises(ResourceError, match=r"needs about .*object.*limit is .*available"):
        check_memory({"object": 10 * available_bytes() + GiB, "probe": 1.0}, "reconstruct")
    with pytest.raises(ResourceError, match=r"run\.max_memory_gb"):
        check_memory({"object": 2 * GiB}, "reconstruct", limit_gb=1, key="run.max_memory_gb")
    assert time.perf_counter() - t0 < 0.5
    assert check_memory({"object": 1024.0}, "reconstruct", limit_gb=1) == 1024.0
    assert issubclass(ResourceError, XrayflowError)


def test_memory_guard_on_a_gpu_counts_the_free_device_memory(monkeypatch):
    from xrayflow import memory

    monkeypatch.setattr(memory, "gpu_free_bytes", lambda: 1.5 * GiB)
    with pytest.raises(ResourceError, match=r"limit is 1\.5 GiB \(free GPU memory\)"):
        check_memory({"object": 2 * GiB}, "reconstruct", gpu=True)
    assert check_memory({"object": 2 * GiB}, "reconstruct", gpu=False) == 2 * GiB
    monkeypatch.setattr(memory, "gpu_free_bytes", lambda: None)  # no device: host only
    assert check_memory({"object": 2 * GiB}, "reconstruct", gpu=True) == 2 * GiB


def test_duplicate_yaml_keys_are_refused_with_both_lines(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("seed: 1\noptimizer:\n  iterations: 4\n  iterations: 40\n")
    with pytest.raises(ConfigError, match=r"line 4.*duplicate key 'iterations'.*line 3"):
        read_yaml(p)
    p.write_text("base: &b {iterations: 4}\noptimizer:\n  <<: *b\n  iterations: 40\n")
    assert read_yaml(p)["optimizer"] == {"iterations": 40}


@pytest.mark.parametrize("value", [".nan", "[1, .nan]"])
def test_nan_config_values_are_refused_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"train\.training\.lr(\[1\])?: NaN"):
        load_config({}, "train", [f"training.lr={value}"])


@pytest.mark.parametrize("value", [".inf", "-.inf"])
def test_infinite_config_values_are_refused_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"run\.max_memory_gb: -?inf is not a finite"):
        load_config({}, "reconstruct", [f"run.max_memory_gb={value}"])


def test_backend_error_is_a_user_error():
    from xrayflow.backend import BackendError, get_backend

    assert issubclass(BackendError, XrayflowError)
    with pytest.raises(BackendError):
        get_backend("tpu", "single")
    assert np.isfinite(available_bytes())
