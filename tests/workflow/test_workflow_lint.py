"""Static checks: snakemake --lint, snakefmt --check, shell syntax, schema sanity."""

import shutil
import subprocess

import pytest
import yaml
from wfhelpers import PROFILES, REPO, VENV_BIN, snakemake


def tool(name):
    exe = shutil.which(name, path=str(VENV_BIN)) or shutil.which(name)
    if exe is None:
        pytest.skip(f"{name} not installed")
    return exe


def test_snakemake_lint(workdir):
    proc = snakemake(workdir, "--lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "good condition" in proc.stdout + proc.stderr


@pytest.mark.parametrize("configfile", ["config/beamtime.yaml", "config/scaling.yaml"])
def test_snakemake_lint_modes(workdir, configfile):
    proc = snakemake(workdir, "--lint", "--configfile", configfile)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_snakefmt_check():
    files = [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]
    proc = subprocess.run(
        [tool("snakefmt"), "--check", *map(str, files)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "script",
    [
        "workflow/scripts/local-slurm.sh",
        "workflow/scripts/pbs/pilot.sh",
        "workflow/scripts/polaris/set_affinity_gpu.sh",
        "workflow/scripts/slurm/pilot.sh",
    ],
)
def test_shell_scripts_parse(script):
    path = REPO / script
    assert path.stat().st_mode & 0o111, f"{script} is not executable"
    subprocess.run(["bash", "-n", str(path)], check=True)


@pytest.mark.parametrize("name", PROFILES)
def test_profile_keys_are_commented(name):
    """Every top-level key of a profile has a comment line right above it."""
    path = REPO / "profiles" / name / "profile.yaml"
    lines = path.read_text().splitlines()
    yaml.safe_load(path.read_text())
    for i, line in enumerate(lines):
        if line and not line.startswith((" ", "#")):
            assert i > 0 and lines[i - 1].startswith("#"), f"{name}: key without comment: {line}"


def test_schema_documents_every_property():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())

    def walk(node, where):
        for key, sub in (node.get("properties") or {}).items():
            if "$ref" in sub:
                continue
            assert "description" in sub, f"{where}.{key} has no description"
            walk(sub, f"{where}.{key}")
            if isinstance(sub.get("additionalProperties"), dict):
                walk(sub["additionalProperties"], f"{where}.{key}.*")

    walk(schema, "config")
    for name, sub in schema["definitions"].items():
        walk(sub, name)
