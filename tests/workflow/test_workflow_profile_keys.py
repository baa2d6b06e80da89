"""No profile key is silently ignored: every flag is one Snakemake or the profile's executor
plugin reads, every resource is read by the executor (the installed plugin's source, or the
PBS submit script), by Snakemake itself or by the workflow's rules, every rule named in
set-resources/set-threads exists, and every `config:` key is in the workflow schema."""

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
import snakemake_executor_plugin_cluster_generic as cluster_generic
import snakemake_executor_plugin_slurm as slurm
import snakemake_executor_plugin_slurm_jobstep as slurm_jobstep
import yaml
from snakemake.cli import get_argument_parser
from wfhelpers import PROFILES, REPO

PLUGIN_SOURCES = {
    "slurm": [slurm, slurm_jobstep],
    "cluster-generic": [cluster_generic],
}
# Resources Snakemake itself reads: scheduling, group sizing, --default-resources.
SNAKEMAKE_RESOURCES = {"mem_mb", "disk_mb", "runtime", "tmpdir"}
# Resources the rules read (rules/common.smk: launch_prefix reads tasks, gpu and mpi).
WORKFLOW_RESOURCES = {"tasks", "gpu", "mpi"}


def source_text(modules):
    return "\n".join(
        path.read_text() for module in modules for path in Path(module.__file__).parent.glob("*.py")
    )


def plugin_resources(executor):
    text = source_text(PLUGIN_SOURCES[executor])
    keys = set(re.findall(r'resources\.get\(\s*"(\w+)"', text))
    return keys | set(re.findall(r"resources\.(\w+)\b", text)) - {"get", "keys", "items"}


def plugin_reads_setting(executor, name):
    """Whether the plugin's code uses executor setting `name` (not only declares it)."""
    return re.search(rf"\.{name}\b", source_text(PLUGIN_SOURCES[executor])) is not None


def load_submit():
    path = REPO / "workflow" / "scripts" / "pbs" / "submit.py"
    spec = importlib.util.spec_from_file_location("pbs_submit_keys", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_profile(name):
    return yaml.safe_load((REPO / "profiles" / name / "profile.yaml").read_text())


def rule_names():
    text = "\n".join(p.read_text() for p in (REPO / "rules").glob("*.smk"))
    return set(re.findall(r"^rule (\w+):", text, flags=re.M))


def constrained(profile):
    """Resources the profile constrains with `resources:` (Snakemake reads them)."""
    return {item.split("=", 1)[0] for item in profile.get("resources") or []}


def resources_read(name, profile):
    executor = profile.get("executor", "local")
    keys = SNAKEMAKE_RESOURCES | WORKFLOW_RESOURCES | constrained(profile)
    if executor == "slurm":
        keys |= plugin_resources("slurm")
    elif executor == "cluster-generic":
        submit = load_submit()
        command = shlex.split(profile["cluster-generic-submit-cmd"])
        assert command[0] == "workflow/scripts/pbs/submit.py", command
        keys |= submit.REQUESTS | submit.OPTIONS
    return keys


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_flag_is_read(name):
    profile = read_profile(name)
    options = {
        opt.lstrip("-")
        for action in get_argument_parser()._actions
        for opt in action.option_strings
    }
    executor = profile.get("executor", "local")
    for key in profile:
        assert key in options, f"{name}: {key} is not a Snakemake flag"
        prefix = f"{executor}-"
        if executor in PLUGIN_SOURCES and key.startswith(prefix):
            setting = key[len(prefix) :].replace("-", "_")
            assert plugin_reads_setting(executor, setting), (
                f"{name}: {key} is declared by the {executor} plugin but never read"
            )


def test_slurm_no_account_is_not_read_by_the_installed_plugin():
    """Why profiles/local-slurm does without `slurm-no-account` (plugin 2.8.0 declares it and
    never reads it); when a release reads it again, the profile may set it."""
    assert not plugin_reads_setting("slurm", "no_account")


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_resource_is_read(name):
    profile = read_profile(name)
    read = resources_read(name, profile)
    rules = rule_names()
    default = profile.get("default-resources") or {}
    unread = {f"default-resources.{key}" for key in default if key not in read}
    for rule, resources in (profile.get("set-resources") or {}).items():
        assert rule in rules, f"{name}: set-resources names no rule {rule}"
        unread |= {f"set-resources.{rule}.{key}" for key in resources if key not in read}
    assert not unread, f"{name}: resources nothing reads: {sorted(unread)}"
    for rule in profile.get("set-threads") or {}:
        assert rule in rules, f"{name}: set-threads names no rule {rule}"
    for item in profile.get("set-resource-scopes") or []:
        assert item.split("=", 1)[0] in constrained(profile), item


@pytest.mark.parametrize("name", PROFILES)
def test_profile_config_keys_are_in_the_schema(name):
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    unknown = set(read_profile(name).get("config") or {}) - set(schema["properties"])
    assert not unknown, f"{name}: config keys not in the schema: {sorted(unknown)}"


def test_unread_keys_are_caught():
    """The checks above catch what they are for: a Slurm-only key in a PBS profile, a typo."""
    pbs = read_profile("polaris")
    assert "tasks_per_gpu" not in resources_read("polaris", pbs)
    assert "gpus_per_task" not in resources_read("frontier", read_profile("frontier"))
    assert "serial" in resources_read("frontier", read_profile("frontier"))
