"""The conda envs of the rules (envs/*.yaml) and the container recipes: conda-forge only,
every package pinned, the pins inside pyproject.toml's bounds, equal to constraints.txt and to
the versions this test suite runs with, xrayflow installed from the checkout by the
post-deploy script. Solving them needs a conda solver and the network: only with
XRAYFLOW_SOLVE_ENVS=1 and conda, mamba or micromamba on PATH (skipped otherwise)."""

import os
import re
import shutil
import subprocess
import tomllib
from importlib.metadata import PackageNotFoundError, version

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from wfhelpers import REPO

ENVS = REPO / "envs"
XRAYFLOW_ENVS = ["simulate", "reconstruct", "evaluate", "train"]  # rules run `xrayflow` in them
ALL_ENVS = [*XRAYFLOW_ENVS, "report"]
CONDA_PIN = re.compile(r"^([a-z0-9_.-]+)=(\d[\w.]*)$")
PIP_PIN = re.compile(r"^([A-Za-z0-9_.-]+)==(\d[\w.]*)$")
PYPI_NAME = {"dask-core": "dask"}  # conda-forge name -> PyPI name


def load(name):
    return yaml.safe_load((ENVS / f"{name}.yaml").read_text())


def pins(name):
    """{canonical package name: version} of an env file; every entry must be an exact pin."""
    out = {}
    for dep in load(name)["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        pattern = PIP_PIN if isinstance(dep, dict) else CONDA_PIN
        for item in items:
            match = pattern.match(item)
            assert match, f"envs/{name}.yaml: {item!r} is not pinned to one version"
            package = PYPI_NAME.get(match.group(1), match.group(1))
            out[canonicalize_name(package)] = match.group(2)
    return out


def project_requirements():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({"sys_platform": "linux"})]


def constraints():
    out = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            out[canonicalize_name(req.name)] = str(req.specifier).removeprefix("==")
    return out


def test_rules_use_existing_env_files():
    text = "\n".join(p.read_text() for p in (REPO / "rules").glob("*.smk"))
    used = set(re.findall(r'"\.\./envs/(\w+)\.yaml"', text))
    assert used == set(ALL_ENVS)


@pytest.mark.parametrize("name", ALL_ENVS)
def test_env_is_pinned_conda_forge(name):
    env = load(name)
    assert env["channels"] == ["conda-forge", "nodefaults"]  # no defaults, no pytorch channel
    assert pins(name)["python"] == "3.11"


@pytest.mark.parametrize("name", ALL_ENVS)
def test_env_pins_agree_with_pyproject_and_constraints(name):
    pinned = pins(name)
    for req in project_requirements():
        key = canonicalize_name(req.name)
        if key in pinned:
            assert Version(pinned[key]) in req.specifier, f"{name}: {key} {pinned[key]} vs {req}"
        else:
            assert name not in XRAYFLOW_ENVS, f"envs/{name}.yaml lacks {req.name} (pyproject)"
    for key, pin in constraints().items():
        if key in pinned:
            assert pinned[key] == pin, f"{name}: {key} {pinned[key]}, constraints.txt {pin}"
    assert ("torch" in pinned) == (name == "train")


@pytest.mark.parametrize("name", ALL_ENVS)
def test_env_pins_are_the_tested_versions(name):
    """The pins are the versions this test suite runs with (the .venv of `make install`)."""
    for key, pin in pins(name).items():
        if key in ("python", "pip", "setuptools"):
            continue
        try:
            installed = Version(version(key)).base_version  # torch 2.13.0+cpu -> 2.13.0
        except PackageNotFoundError:
            continue
        assert installed == pin, f"envs/{name}.yaml pins {key} {pin}, tests run {installed}"


@pytest.mark.parametrize("name", XRAYFLOW_ENVS)
def test_post_deploy_installs_the_checkout(name, tmp_path):
    script = ENVS / f"{name}.post-deploy.sh"
    assert script.resolve() == ENVS / "install-xrayflow.sh"
    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "args"}\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("XRAYFLOW_SRC", None)
    elsewhere = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True)
    assert elsewhere.returncode == 1 and b"set XRAYFLOW_SRC" in elsewhere.stderr
    run = subprocess.run(["bash", str(script)], cwd=REPO, env=env, capture_output=True)
    assert run.returncode == 0, run.stderr
    args = (tmp_path / "args").read_text().split()
    assert args == ["-m", "pip", "install", "--no-deps", "--no-build-isolation", "-e", str(REPO)]


@pytest.mark.parametrize("recipe", ["Dockerfile", "xrayflow.def"])
def test_container_recipes_build_on_the_env_pins(recipe):
    text = (ENVS / recipe).read_text()
    assert "envs/train.yaml" in text  # the same pins as the conda envs
    assert "--no-deps" in text and "src" in text and "pyproject.toml" in text
    mpich = re.findall(r"mpich=([\d.]+)=external", text)
    assert mpich == [pins("train")["mpich"]]


SOLVER = next((s for s in ("micromamba", "mamba", "conda") if shutil.which(s)), None)


@pytest.mark.skipif(
    os.environ.get("XRAYFLOW_SOLVE_ENVS") != "1" or SOLVER is None,
    reason="solving conda envs needs XRAYFLOW_SOLVE_ENVS=1, a conda solver and the network",
)
@pytest.mark.parametrize("name", ALL_ENVS)
def test_env_solves(name, tmp_path):
    cmd = [SOLVER, "env", "create"] if SOLVER == "conda" else [SOLVER, "create", "-y"]
    cmd += ["--dry-run", "-p", str(tmp_path / name), "-f", str(ENVS / f"{name}.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
