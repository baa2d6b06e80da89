"""Dry runs of every mode with every profile, and the launch command each profile renders."""

import pytest
from wfhelpers import MODES, PROFILES, SRUN_2, profile, snakemake

EXPECTED_JOBS = {
    "demo": {
        "simulate": 2,
        "reconstruct": 2,
        "train_data": 1,
        "train": 1,
        "train_infer": 1,
        "evaluate": 2,
        "summary": 1,
    },
    # each scan and its even/odd halves (beamtime.halves: true), its quick-look + halves' FRC
    "beamtime": {
        "simulate_scan": 3,
        "reconstruct_scan": 9,
        "evaluate_scan": 2,
        "quicklook_scan": 3,
        "beamtime_summary": 1,
    },
    "scaling": {"simulate_scaling": 2, "reconstruct_scaling": 4, "scaling_plot": 1},
}

# the multi-rank reconstruct command of the demo under each profile
LAUNCH = {
    "local": "mpiexec -genv UCX_TLS self,sm -n 2 xrayflow reconstruct",
    "local-slurm": SRUN_2,
    "polaris": "mpiexec --ppn 4 --depth 8 --cpu-bind depth -n 2 "
    "workflow/scripts/polaris/set_affinity_gpu.sh xrayflow reconstruct",
    "aurora": "mpiexec --ppn 12 --depth 8 --cpu-bind depth -n 2 xrayflow reconstruct",
    "frontier": "srun -c 7 --gpus-per-task=1 --gpu-bind=closest -n 2 xrayflow reconstruct",
    "perlmutter": "srun -c 32 --cpu-bind=cores --gpus-per-task=1 -n 2 xrayflow reconstruct",
}


def job_counts(stdout):
    counts = {}
    in_table = False
    for line in stdout.splitlines():
        if line.startswith("job ") and "count" in line:
            in_table = True
            continue
        if in_table:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                counts[parts[0]] = int(parts[1])
            elif parts and parts[0] == "total":
                break
    return counts


# every profile with the demo; the other modes with one profile per executor kind
# (each Snakemake start costs seconds, so the full 6 x 3 matrix is not run)
CASES = [(name, "demo") for name in PROFILES] + [
    (name, mode)
    for mode in ("beamtime", "scaling")
    for name in ("local", "local-slurm", "polaris", "frontier")
]


@pytest.mark.parametrize(("name", "mode"), CASES)
def test_dry_run(workdir, name, mode):
    args = ["-n", "-p", "--workflow-profile", profile(name)]
    if MODES[mode]:
        args += ["--configfile", MODES[mode]]
    proc = snakemake(workdir, *args)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    counts = job_counts(proc.stdout)
    for rule, n in EXPECTED_JOBS[mode].items():
        assert counts.get(rule) == n, (rule, counts)
    if mode == "demo":
        assert LAUNCH[name] in out, out
        assert "-n 1 xrayflow" not in out


def test_overrides_are_quoted(workdir):
    cfg = workdir / "config" / "config.yaml"
    text = cfg.read_text().replace(
        "    simulate_set: []\n", "    simulate_set: ['sample.name=a b; rm -rf x']\n", 1
    )
    cfg.write_text(text)
    proc = snakemake(workdir, "-n", "-p", "--workflow-profile", profile("local"))
    assert proc.returncode == 0, proc.stderr
    assert "--set 'sample.name=a b; rm -rf x'" in proc.stdout


def test_scaling_tasks_follow_rank_wildcard(workdir):
    proc = snakemake(
        workdir,
        "-n",
        "-p",
        "--configfile",
        "config/scaling.yaml",
        "--workflow-profile",
        profile("local-slurm"),
    )
    assert proc.returncode == 0, proc.stderr
    assert SRUN_2 in proc.stdout
    assert "results/scaling/strong/n2_size8.h5" in proc.stdout
    assert "results/scaling/weak/n2_size8.h5" in proc.stdout
