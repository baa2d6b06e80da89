"""Beamtime mode: even/odd half reconstructions and their FRC (beamtime.halves), the
truth-less quick-look, the one-row-per-scan summary page, and raw detector files in the scan
sheet ingested by rule ingest_scan.

Dry runs and runs with the stand-in CLI (tests/workflow/fake_bin/xrayflow, which records its
argument lists) check the DAG, the command lines and the summary; one slow test runs the real
CLI from a synthetic Eiger master file to the summary row with its FRC resolution.
"""

import base64
import importlib.util
import json
import re
import subprocess
import sys

import h5py
import pandas as pd
import pytest
import yaml
from wfhelpers import REPO, fake_calls, profile, run_local, snakemake

BEAMTIME = ("--configfile", "config/beamtime.yaml")
SCANS = ["scan001", "scan002", "scan003"]
HEADER = "scan\tdata\tmaster\tpositions\tingest\tingest_set\treconstruct_set\tevaluate\tcomment\n"


def set_beamtime(workdir, **changes):
    """Change keys of the `beamtime` section of the work directory's config/beamtime.yaml."""
    path = workdir / "config" / "beamtime.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["beamtime"].update(changes)
    path.write_text(yaml.safe_dump(cfg))


def dry_run(workdir, *extra, check=True):
    return snakemake(
        workdir, "-n", "-p", "--workflow-profile", profile("local"), *BEAMTIME, *extra, check=check
    )


def job_counts(stdout):
    """{rule: count} of the dry run's job table."""
    table = stdout[stdout.index("Job stats:") :]
    return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", table, re.M)}


def run_fake(workdir, *extra, env=None):
    """A real run with the stand-in CLI; returns the recorded argument lists."""
    calls = workdir.parent / "calls.jsonl"
    run_local(workdir, *BEAMTIME, *extra, calls=calls, env=env)
    return fake_calls(calls)


def thumbnails(html):
    """The PNGs embedded in the summary page."""
    return [base64.b64decode(s) for s in re.findall(r"src='data:image/png;base64,([^']+)'", html)]


# ---------------------------------------------------------------------- halves switch
@pytest.mark.parametrize("halves", [True, False])
def test_halves_switch_sets_the_jobs(workdir, halves):
    set_beamtime(workdir, halves=halves)
    out = dry_run(workdir).stdout
    counts = job_counts(out)
    assert counts["reconstruct_scan"] == (9 if halves else 3), counts
    assert counts["quicklook_scan"] == 3 and counts["evaluate_scan"] == 2, counts
    for scan in SCANS:
        quicklook = (
            f"xrayflow evaluate  --result results/beamtime/recon/{scan}.h5"
            f" --out results/beamtime/quicklook/{scan}.json"
            f" --figures results/beamtime/quicklook/{scan}"
        )
        assert quicklook in out
        pair = (
            f"xrayflow evaluate  --pair results/beamtime/recon_even/{scan}.h5"
            f" results/beamtime/recon_odd/{scan}.h5 --out results/beamtime/frc/{scan}.json"
        )
        assert (pair in out) is halves
        for half in ("even", "odd"):
            recon = (
                f"--out results/beamtime/recon_{half}/{scan}.h5 --resume --set data.subset={half}"
            )
            assert (recon in out) is halves
    assert ("data.subset" in out) is halves


def test_halves_are_on_by_default():
    cfg = yaml.safe_load((REPO / "config" / "beamtime.yaml").read_text())
    assert cfg["beamtime"]["halves"] is True
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    assert schema["properties"]["beamtime"]["properties"]["halves"]["default"] is True


# ---------------------------------------------------------------------- summary
def test_beamtime_summary_rows_with_fake_cli(workdir):
    calls = run_fake(workdir)
    res = workdir / "results" / "beamtime"
    recon = [a for a in calls if a[0] == "reconstruct"]
    subsets = sorted(a[a.index("--set") + 1] if "--set" in a else "" for a in recon)
    assert subsets == [""] * 4 + ["data.subset=even"] * 4 + ["data.subset=odd"] * 4  # 2 ranks
    pairs = [a for a in calls if "--pair" in a]
    assert sorted(a[a.index("--pair") + 1 : a.index("--pair") + 3] for a in pairs) == [
        [f"results/beamtime/recon_even/{s}.h5", f"results/beamtime/recon_odd/{s}.h5"] for s in SCANS
    ]
    table = pd.read_csv(res / "summary.tsv", sep="\t")
    assert list(table["scan"]) == SCANS
    # the stand-in's quick-look (loss 0.25 after 40 iterations) and pair FRC (1.6e-7 m, 2.5 px)
    assert list(table["final_loss"]) == [0.25] * 3 and list(table["iterations"]) == [40] * 3
    assert list(table["frc_resolution_m"]) == [1.6e-7] * 3
    assert list(table["frc_resolution_px"]) == [2.5] * 3
    assert list(table["frc_threshold"]) == ["half_bit"] * 3
    assert (table["runtime_s"] > 0).all()
    assert list(table["ssim"].isna()) == [False, False, True]  # scan003 not evaluated
    html = (res / "summary.html").read_text()
    assert html.count("<tr>") == 4  # header and one row per scan
    thumbs = thumbnails(html)
    assert len(thumbs) == 3 and all(t.startswith(b"\x89PNG") for t in thumbs)
    assert "1.6e-07 m (2.5 px)" in html
    links = re.findall(r"href='([^']+)'", html)
    for scan in SCANS:
        for target in (
            f"recon/{scan}.h5",
            f"quicklook/{scan}/quicklook.png",
            f"frc/{scan}/frc.png",
        ):
            assert target in links, (target, links)
            assert (res / target).exists()
    assert "figures/scan001" in links and "figures/scan003" not in links


def test_beamtime_summary_without_halves(workdir):
    set_beamtime(workdir, halves=False)
    calls = run_fake(workdir)
    assert not [a for a in calls if "--pair" in a or "data.subset=even" in a]
    table = pd.read_csv(workdir / "results/beamtime/summary.tsv", sep="\t")
    assert list(table["scan"]) == SCANS
    assert not [c for c in table.columns if c.startswith(("frc_", "halves."))]
    assert list(table["iterations"]) == [40] * 3
    html = (workdir / "results/beamtime/summary.html").read_text()
    assert "FRC resolution" not in html and len(thumbnails(html)) == 3
    assert not (workdir / "results/beamtime/recon_even").exists()


# ---------------------------------------------------------------------- ingest rule
def write_sheet(workdir, *rows):
    (workdir / "config" / "scans.tsv").write_text(
        HEADER + "".join("\t".join(r) + "\n" for r in rows)
    )


def touch(workdir, *names):
    for name in names:
        path = workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"raw")


def test_ingest_rule_dry_run(workdir):
    touch(workdir, "raw/a_master.h5", "raw/a.csv", "raw/b_master.h5", "raw/measured.cxi")
    (workdir / "config/ingest/other.yaml").write_text("master: x\n")
    write_sheet(
        workdir,
        ["scanA", "", "raw/a_master.h5", "raw/a.csv", "", "", "", "false", "eiger"],
        ["scanB", "", "raw/b_master.h5", "", "config/ingest/other.yaml", "binning=2", "", "false",
         ""],
        ["scanC", "raw/measured.cxi", "", "", "", "", "", "false", "measured CXI"],
    )  # fmt: skip
    out = dry_run(workdir).stdout
    counts = job_counts(out)
    assert counts["ingest_scan"] == 2 and "simulate_scan" not in counts, counts
    assert (
        "xrayflow ingest --config config/ingest/eiger.yaml --out results/beamtime/data/scanA.cxi"
        " --set 'master=\"raw/a_master.h5\"' --set 'positions.file=\"raw/a.csv\"'"
        " --set compute.workers=1 --set compute.max_memory_gb=1.953"
        " > logs/beamtime/ingest/scanA.log"
    ) in out
    assert (
        "xrayflow ingest --config config/ingest/other.yaml --out results/beamtime/data/scanB.cxi"
        " --set 'master=\"raw/b_master.h5\"' --set compute.workers=1"
        " --set compute.max_memory_gb=1.953 --set binning=2 >"
    ) in out
    for scan, data in [
        ("scanA", "results/beamtime/data/scanA.cxi"),
        ("scanB", "results/beamtime/data/scanB.cxi"),
        ("scanC", "raw/measured.cxi"),
    ]:
        for part in ("recon", "recon_even", "recon_odd"):
            assert f"--data {data} --out results/beamtime/{part}/{scan}.h5" in out


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            ["scanA", "raw/measured.cxi", "raw/a_master.h5", "", "", "", "", "false", ""],
            "scans ['scanA'] give both `data` and `master`",
        ),
        (
            ["scanA", "", "", "raw/a.csv", "", "", "", "false", ""],
            "column `positions` of scans ['scanA'] needs a `master` file",
        ),
        (
            ["scanA", "", "raw/a_master.h5", "", "", "", "", "false", ""],
            "scans ['scanA'] give a raw `master` file but no ingest config",
        ),
    ],
    ids=["data-and-master", "positions-without-master", "no-ingest-config"],
)
def test_ingest_columns_are_checked(workdir, row, message):
    touch(workdir, "raw/a_master.h5", "raw/a.csv", "raw/measured.cxi")
    write_sheet(workdir, row)
    if message.endswith("no ingest config"):
        set_beamtime(workdir, ingest=None)
    proc = dry_run(workdir, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and message in out, out


def test_ingest_file_names_reach_the_cli_verbatim(workdir):
    """Sheet cells reach `xrayflow ingest` as data: a master file whose name holds a command
    substitution is passed as it is (a YAML string), and no shell runs the command."""
    master = "raw/scan $(touch PWNED) `touch PWNED2`.h5"
    touch(workdir, master, "raw/yes")
    write_sheet(
        workdir,
        ["scanA", "", master, "raw/yes", "", "crop.centre=[3, 4]", "", "false", ""],
    )
    calls = run_fake(workdir, "--until", "ingest_scan")
    assert not list(workdir.rglob("PWNED*"))
    ingest = [a for a in calls if a[0] == "ingest"]
    assert len(ingest) == 1
    sets = [ingest[0][i + 1] for i, a in enumerate(ingest[0]) if a == "--set"]
    # a file named `yes` stays a string for the CLI's YAML parser, not a boolean
    assert sets[:2] == [f"master={json.dumps(master)}", 'positions.file="raw/yes"']
    assert sets[-1] == "crop.centre=[3, 4]"
    assert yaml.safe_load(sets[1].partition("=")[2]) == "raw/yes"
    assert (workdir / "results/beamtime/data/scanA.cxi").exists()


def load_ingest_helpers():
    """tests/ingest/conftest.py (synthetic Eiger files) under a name of its own."""
    spec = importlib.util.spec_from_file_location(
        "ingest_helpers", REPO / "tests" / "ingest" / "conftest.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_real_cli_from_eiger_master_to_summary_row(tmp_path):
    """The real CLI: a synthetic Eiger master file (external links, bitshuffle/LZ4, dark and
    flat, positions CSV) in the scan sheet is ingested, reconstructed whole and in halves, and
    the summary row carries the quick-look's numbers and the halves' FRC resolution."""
    from wfhelpers import make_workdir

    helpers = load_ingest_helpers()
    workdir = make_workdir(tmp_path / "wd", placeholders=False)
    raw = tmp_path / "raw"
    raw.mkdir()
    sim = tmp_path / "sim.cxi"
    sets = ["geometry.shape=[32,32]", "scan.n_y=8", "scan.n_x=8"]  # 64 frames of 32 x 32
    simulate = [sys.executable, "-m", "xrayflow", "simulate", "--out", str(sim)]
    simulate += ["-c", str(REPO / "config/simulate/ptycho2d.yaml")]
    subprocess.run(simulate + [f"--set={s}" for s in sets], check=True, capture_output=True)
    from xrayflow.io.cxi import read_cxi

    truth = read_cxi(sim, truth=False)
    master = helpers.write_eiger(raw, truth.data)
    positions = helpers.write_positions_csv(raw / "scan.csv", truth.positions)
    cfg = helpers.ingest_config(raw)
    helpers.write_config(workdir / "config" / "ingest" / "synthetic.yaml", cfg)
    write_sheet(
        workdir,
        ["eiger01", "", str(master), str(positions), "config/ingest/synthetic.yaml", "",
         "optimizer.iterations=10", "false", "Eiger master file"],
    )  # fmt: skip
    proc = run_local(workdir, *BEAMTIME, timeout=600)
    res = workdir / "results" / "beamtime"
    with h5py.File(res / "data" / "eiger01.cxi") as f:
        assert f["entry_1/instrument_1/detector_1/data"].shape == (64, 32, 32)
    table = pd.read_csv(res / "summary.tsv", sep="\t")
    assert list(table["scan"]) == ["eiger01"], proc.stdout
    row = table.iloc[0]
    assert row["iterations"] == 10 and row["final_loss"] > 0
    assert row["frc_threshold"] == "half_bit"
    pixel = row["quicklook.pixel_size_m"]
    assert pixel > 0 and row["frc_resolution_m"] == pytest.approx(
        row["frc_resolution_px"] * pixel, rel=1e-6
    )
    frc = json.loads((res / "frc" / "eiger01.json").read_text())
    assert frc["mode"] == "pair" and frc["result"].endswith("recon_even/eiger01.h5")
    html = (res / "summary.html").read_text()
    assert len(thumbnails(html)) == 1 and "Eiger master file" in html
    assert (res / "quicklook" / "eiger01" / "quicklook.png").exists()
