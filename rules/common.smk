# Shared helpers of the xrayflow workflow: configuration validation, sample sheets,
# command-line fragments and provenance. Rules call the `xrayflow` CLI only.
import datetime
import glob
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
from snakemake.utils import validate

# Launcher settings are data, not shell: they are inserted unquoted in front of the CLI
# (`{launcher} -n RANKS {wrapper} xrayflow ...`), so only plain words are accepted.
LAUNCH_WORD = r"[A-Za-z0-9_./=:,+@-]+"
LAUNCH_WORDS = re.compile(rf"{LAUNCH_WORD}( +{LAUNCH_WORD})*")


def check_launch_words(key, value, allow_empty=False):
    """`value` if it is plain words (no shell metacharacters), else ValueError naming `key`."""
    text = str(value)
    if (allow_empty and text == "") or LAUNCH_WORDS.fullmatch(text):
        return text
    bad = sorted({c for c in text if not re.fullmatch(r"[A-Za-z0-9_./=:,+@ -]", c)})
    raise ValueError(
        f"config key {key}: {text!r} is refused: launcher settings are plain words of "
        "letters, digits and _ . / = : , + @ - separated by spaces, never shell "
        f"(refused characters: {' '.join(repr(c) for c in bad) or 'leading/trailing space'}). "
        "Put environment settings in a wrapper script or use `env VAR=value`."
    )


# before the schema, for a message that names the key and the refused characters
for _key in ("mpi_launcher", "mpi_wrapper"):
    if isinstance(config.get(_key), str):
        check_launch_words(_key, config[_key], allow_empty=_key == "mpi_wrapper")

validate(config, schema="../workflow/schemas/config.schema.yaml")

RESULTS = config["results"].rstrip("/")
LOGS = config["logs"].rstrip("/")
DATASETS = config["datasets"]
TRAIN = config["train"]
BEAMTIME = config["beamtime"]
SCALING = config["scaling"]
NETWORKS = config["networks"]
# override lists are `$ref`s in the schema, whose defaults the validator does not fill in
for _section, _keys in [
    *((ds, ("simulate_set", "reconstruct_set")) for ds in DATASETS.values()),
    (TRAIN, ("set",)),
    (BEAMTIME, ("reconstruct_set",)),
    *((study, ("set", "test_set")) for study in NETWORKS.values()),
    (SCALING, ("simulate_set", "reconstruct_set")),
]:
    for _key in _keys:
        _section.setdefault(_key, [])


def _rules_resources(stage):
    """Resource defaults of one stage (schema defaults filled)."""
    res = dict(config["resources"].get(stage) or {})
    for key, value in (("threads", 1), ("mem_mb", 2000), ("runtime", 30), ("gpu", 0)):
        res.setdefault(key, value)
    return res


RES = {
    stage: _rules_resources(stage)
    for stage in ("simulate", "reconstruct", "train", "evaluate", "ingest")
}


def set_args(overrides):
    """Render KEY=VALUE overrides as shell-quoted `--set` arguments."""
    return " ".join(f"--set {shlex.quote(str(item))}" for item in overrides)


def split_overrides(text):
    """Scan-sheet overrides are separated by semicolons: 'a=1; b.c=2'."""
    return [part.strip() for part in str(text or "").split(";") if part.strip()]


def config_arg(path):
    """Optional `--config PATH` argument (empty when PATH is null)."""
    return f"--config {shlex.quote(str(path))}" if path else ""


# ---------------------------------------------------------------------- MPI launch
def dataset_ranks(wildcards):
    return int(DATASETS[wildcards.dataset]["ranks"])


def scaling_ranks(wildcards):
    return int(wildcards.n)


def mpi_for(ranks):
    """`mpi` resource: the launcher for multi-rank jobs, "" (not an MPI job) for one rank."""

    def mpi(wildcards):
        return config["mpi_launcher"] if ranks(wildcards) > 1 else ""

    return mpi


def gpus_for(ranks):
    """`gpu` resource of MPI rules: ranks x config gpus_per_rank (0 on CPU machines)."""

    def gpu(wildcards):
        return ranks(wildcards) * int(config["gpus_per_rank"])

    return gpu


def launch_prefix(wildcards, resources):
    """In front of the CLI: `{launcher} -n {tasks} [{wrapper}]` for a multi-rank job; for a
    single-rank GPU job the wrapper alone (config mpi_wrapper: it binds the process to a
    free GPU of the node, so that jobs side by side never share one), or, with config
    launch_single_rank (the Slurm pilot: srun binds the GPUs), `{launcher} -n 1 [{wrapper}]`;
    else nothing. Rules without `tasks` (training) are single-rank."""
    return _launch(resources, bind_single_rank=False)


def scan_launch_prefix(wildcards, resources):
    """launch_prefix of grouped scans, which run inside the group's batch job: a single-rank
    GPU scan on a machine without a wrapper goes through the launcher (`-n 1`), whose GPU
    binding (srun --gpus-per-task) gives it one GPU of the allocation."""
    return _launch(resources, bind_single_rank=True)


def _launch(resources, bind_single_rank):
    ranks = int(getattr(resources, "tasks", 1) or 1)
    wrapper = config["mpi_wrapper"]
    gpu = int(getattr(resources, "gpu", 0) or 0) > 0
    through_launcher = bool(config.get("launch_single_rank")) or (
        bind_single_rank and not wrapper
    )
    if ranks < 2 and not (gpu and through_launcher):
        return wrapper if gpu else ""
    # the `mpi` resource (profiles may set it: same rule) or, for grouped scans, the config
    launcher = check_launch_words(
        "mpi (resource)", getattr(resources, "mpi", "") or config["mpi_launcher"]
    )
    return " ".join(part for part in (launcher, f"-n {ranks}", wrapper) if part)


def tie_prefix():
    """Shell prefix of every job: strict bash, plus a watchdog in the background that ends
    the job's process tree when Snakemake dies (kill -9) or cancels the job
    (workflow/scripts/tie_to_snakemake.py)."""
    script = Path(workflow.basedir) / "workflow" / "scripts" / "tie_to_snakemake.py"
    cmd = f"{shlex.quote(sys.executable)} -I -S {shlex.quote(str(script))} $$"  # stdlib only
    prefix = f"set -euo pipefail; {cmd} </dev/null >/dev/null 2>&1 & "
    return prefix.replace("{", "{{").replace("}", "}}")


# ---------------------------------------------------------------------- beamtime scans
SCAN_TEXT_COLUMNS = {
    name: object
    for name in (
        "scan",
        "data",
        "master",
        "positions",
        "ingest",
        "ingest_set",
        "simulate_set",
        "reconstruct_set",
        "comment",
    )
}
#: Reconstructions of a scan (wildcard `part` of reconstruct_scan) - the whole scan and, with
#: beamtime.halves, its even- and odd-indexed frames (`--set data.subset=...`).
SCAN_PARTS = {"recon": None, "recon_even": "even", "recon_odd": "odd"}


def scan_text(scan, column):
    """A text cell of the scan sheet ("" when the column is absent or the cell empty)."""
    value = scan_row(scan).get(column, "")
    return value if isinstance(value, str) else ""


def scan_halves():
    """Whether every scan also gets even/odd half reconstructions (beamtime.halves)."""
    return bool(BEAMTIME.get("halves", True))


def load_scans():
    """Scan table of the beamtime mode, validated against workflow/schemas/scans.schema.yaml."""
    if config["mode"] != "beamtime":
        return pd.DataFrame(columns=["scan"]).set_index("scan", drop=False)
    if BEAMTIME.get("scans"):
        table = pd.read_csv(
            BEAMTIME["scans"], sep="\t", comment="#", dtype=SCAN_TEXT_COLUMNS
        )
    elif BEAMTIME.get("cxi_dir"):
        files = sorted(glob.glob(os.path.join(BEAMTIME["cxi_dir"], "*.cxi")))
        table = pd.DataFrame(
            {"scan": [Path(f).stem for f in files], "data": files}, dtype=object
        )
    else:
        raise ValueError("beamtime: set either `scans` (TSV scan sheet) or `cxi_dir`")
    validate(table, schema="../workflow/schemas/scans.schema.yaml")
    if table["scan"].duplicated().any():
        dup = sorted(set(table.loc[table["scan"].duplicated(), "scan"]))
        raise ValueError(f"beamtime scan sheet: duplicate scan names {dup}")
    text = {
        c: (table[c].fillna("") if c in table else pd.Series("", index=table.index))
        for c in ("data", "master", "positions", "ingest", "ingest_set")
    }
    both = table.loc[(text["data"] != "") & (text["master"] != ""), "scan"]
    if not both.empty:
        raise ValueError(
            f"beamtime scan sheet: scans {sorted(both)} give both `data` and `master` "
            "(a CXI file, or a raw master file to ingest, not both)"
        )
    for column in ("positions", "ingest", "ingest_set"):
        stray = table.loc[(text[column] != "") & (text["master"] == ""), "scan"]
        if not stray.empty:
            raise ValueError(
                f"beamtime scan sheet: column `{column}` of scans {sorted(stray)} needs a "
                "`master` file in the same row"
            )
    no_cfg = table.loc[(text["master"] != "") & (text["ingest"] == ""), "scan"]
    if not no_cfg.empty and not BEAMTIME.get("ingest"):
        raise ValueError(
            f"beamtime: scans {sorted(no_cfg)} give a raw `master` file but no ingest config "
            "(set beamtime.ingest or the sheet column `ingest`)"
        )
    simulated = (text["data"] == "") & (text["master"] == "")
    if not table.empty and simulated.any() and not BEAMTIME.get("simulate"):
        raise ValueError(
            "beamtime: scans without a `data` or `master` file need beamtime.simulate "
            "(a simulate stage config)"
        )
    return table.set_index("scan", drop=False)


SCANS = load_scans()


def scan_row(scan):
    return SCANS.loc[scan]


def scan_data(wildcards):
    """Measured CXI file of a scan, the CXI ingested from its raw `master` file, or the
    simulated stand-in when the sheet gives neither."""
    data = scan_text(wildcards.scan, "data")
    if data:
        return data
    if scan_text(wildcards.scan, "master"):
        return f"{RESULTS}/beamtime/data/{wildcards.scan}.cxi"
    return f"{RESULTS}/beamtime/data/{wildcards.scan}.h5"


def ingest_inputs(wildcards):
    """Inputs of the ingest_scan jobs - the ingest config, the master file and, when the
    sheet gives one, the positions file (Snakemake waits for them and re-runs when they
    change)."""
    scan = wildcards.scan
    files = {
        "cfg": scan_text(scan, "ingest") or BEAMTIME["ingest"],
        "master": scan_text(scan, "master"),
    }
    if scan_text(scan, "positions"):
        files["positions"] = scan_text(scan, "positions")
    return files


def ingest_args(wildcards, input, threads, resources):
    """Shell-quoted `--set` arguments of the ingest_scan jobs - the scan's files (values as
    YAML strings, so that no file name is read as a number, a list or a boolean), the Dask
    workers from the job's threads, the memory limit from its mem_mb (when above 0) and the
    sheet's `ingest_set` overrides last."""
    sets = [f"master={json.dumps(str(input.master))}"]
    if "positions" in input.keys():
        sets.append(f"positions.file={json.dumps(str(input.positions))}")
    sets.append(f"compute.workers={int(threads)}")
    mem_mb = int(getattr(resources, "mem_mb", 0) or 0)
    if mem_mb > 0:
        sets.append(f"compute.max_memory_gb={mem_mb / 1024:.3f}")
    sets += split_overrides(scan_text(wildcards.scan, "ingest_set"))
    return set_args(sets)


def scan_part_args(wildcards):
    """`--set` overrides of one reconstruction of a scan: beamtime.reconstruct_set, the sheet's
    `reconstruct_set`, and `data.subset` for a half (wildcard part recon_even/recon_odd).
    """
    sets = BEAMTIME["reconstruct_set"] + split_overrides(
        scan_text(wildcards.scan, "reconstruct_set")
    )
    subset = SCAN_PARTS[wildcards.part]
    return set_args(sets + ([f"data.subset={subset}"] if subset else []))


def scan_ranks(wildcards):
    ranks = scan_row(wildcards.scan).get("ranks", 0)
    ranks = 0 if pd.isna(ranks) else int(ranks)
    return ranks if ranks > 0 else int(BEAMTIME["ranks"])


def scans_to_evaluate():
    if SCANS.empty:
        return []
    flags = (
        SCANS["evaluate"]
        if "evaluate" in SCANS
        else pd.Series(False, index=SCANS.index)
    )
    return [scan for scan, flag in flags.items() if bool(flag) is True]


def quicklook_inputs(wildcards):
    """The scan's result and, with beamtime.halves, its two half reconstructions."""
    files = {"result": f"{RESULTS}/beamtime/recon/{wildcards.scan}.h5"}
    if scan_halves():
        for part in ("recon_even", "recon_odd"):
            files[part] = f"{RESULTS}/beamtime/{part}/{wildcards.scan}.h5"
    return files


def quicklook_outputs():
    """Quick-look JSON and figures; with beamtime.halves also the halves' FRC JSON and figures."""
    outputs = {
        "look": f"{RESULTS}/beamtime/quicklook/{{scan}}.json",
        "look_figures": directory(f"{RESULTS}/beamtime/quicklook/{{scan}}"),
    }
    if scan_halves():
        outputs["frc"] = f"{RESULTS}/beamtime/frc/{{scan}}.json"
        outputs["frc_figures"] = directory(f"{RESULTS}/beamtime/frc/{{scan}}")
    return outputs


def pair_command(wildcards, input, output):
    """With beamtime.halves: the second command of rule quicklook_scan, `xrayflow evaluate
    --pair EVEN ODD` (every value shell-quoted; its output appended to the job's log).
    """
    if not scan_halves():
        return ""
    q = shlex.quote
    log = f"{LOGS}/beamtime/quicklook/{wildcards.scan}.log"
    cfg = config_arg(BEAMTIME["evaluate"])
    return (
        f"; xrayflow evaluate {cfg} --pair {q(input.recon_even)} {q(input.recon_odd)}"
        f" --out {q(output.frc)} --figures {q(output.frc_figures)} >> {q(log)} 2>&1"
    )


# ---------------------------------------------------------------------- scaling study
def scaling_points():
    """(series, ranks, size) of every timed reconstruction of the scaling mode."""
    if config["mode"] != "scaling":
        return []
    points = []
    for n in SCALING["ranks"]:
        points.append(("strong", int(n), int(SCALING["strong_size"])))
        points.append(("weak", int(n), int(n) * int(SCALING["weak_size_per_rank"])))
    return points


def first_shard(shard_dir):
    """First HDF5 shard of a shard directory (the input of `xrayflow train --infer`)."""
    shards = sorted(Path(shard_dir).glob("*.h5"))
    return str(shards[0]) if shards else str(Path(shard_dir) / "shard-00000.h5")


# ---------------------------------------------------------------------- datasets
def selected_datasets():
    """The demo datasets this run builds: config `selected_datasets`, else all."""
    names = config.get("selected_datasets")
    if names is None:
        return list(DATASETS)
    unknown = sorted(set(names) - set(DATASETS))
    if unknown:
        raise ValueError(
            f"config key selected_datasets: unknown datasets {unknown} "
            f"(known: {sorted(DATASETS)})"
        )
    return list(names)


def reconstructed_datasets():
    """Demo datasets with a reconstruct config (the others are only simulated)."""
    return [name for name in selected_datasets() if DATASETS[name].get("reconstruct")]


def simulated_only_datasets():
    return [
        name for name in selected_datasets() if not DATASETS[name].get("reconstruct")
    ]


# ---------------------------------------------------------------------- targets
def demo_targets():
    targets = [f"{RESULTS}/summary.tsv", f"{RESULTS}/provenance/workflow.yaml"]
    if TRAIN["enabled"]:
        targets += [
            f"{RESULTS}/train/model.pt",
            f"{RESULTS}/train/figures/training_curve.png",
        ]
        if TRAIN["infer"]:
            targets += [
                f"{RESULTS}/train/predictions.h5",
                f"{RESULTS}/train/figures/predictions.png",
            ]
    return targets


def network_runs():
    """`study/variant` of every network of the networks mode."""
    if config["mode"] != "networks":
        return []
    return [
        f"{name}/{v}" for name, study in NETWORKS.items() for v in study["variants"]
    ]


def networks_targets():
    return [f"{RESULTS}/networks/summary.tsv", f"{RESULTS}/provenance/workflow.yaml"]


def beamtime_targets():
    return [
        f"{RESULTS}/beamtime/summary.tsv",
        f"{RESULTS}/beamtime/summary.html",
        f"{RESULTS}/provenance/workflow.yaml",
    ]


def scaling_targets():
    return [
        f"{RESULTS}/scaling/scaling.tsv",
        f"{RESULTS}/scaling/strong.png",
        f"{RESULTS}/scaling/weak.png",
        f"{RESULTS}/provenance/workflow.yaml",
    ]


def all_targets():
    return {
        "demo": demo_targets,
        "beamtime": beamtime_targets,
        "scaling": scaling_targets,
        "networks": networks_targets,
    }[config["mode"]]()


# ---------------------------------------------------------------------- provenance
def write_provenance():
    """onstart hook: one time-stamped provenance file per run (workflow/scripts/provenance.py)."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(RESULTS) / "provenance" / f"run-{stamp}.yaml"
    script = Path(workflow.basedir) / "workflow" / "scripts" / "provenance.py"
    payload = json.dumps({"config": config, "command": sys.argv})
    subprocess.run(
        [sys.executable, str(script), str(out)], input=payload, text=True, check=True
    )
