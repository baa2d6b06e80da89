"""The networks mode (config/scattering.yaml, config/diffuse.yaml): per study one set of
training shards and one held-out set, one network per variant trained, applied to the
held-out set and scored; a summary table over all of them; bad studies are refused naming
the key."""

import yaml
from test_workflow_dryrun import job_counts
from wfhelpers import profile, snakemake

SCATTERING = "config/scattering.yaml"
DIFFUSE = "config/diffuse.yaml"


def test_networks_dry_run_trains_one_network_per_variant(workdir):
    proc = snakemake(
        workdir, "-n", "-p", "--workflow-profile", profile("local"), "--configfile", SCATTERING
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    counts = job_counts(proc.stdout)
    expected = {
        "network_shards": 1,
        "network_test_set": 1,
        "network_train": 3,
        "network_infer": 3,
        "network_evaluate": 3,
        "network_summary": 1,
    }
    for rule, n in expected.items():
        assert counts.get(rule) == n, (rule, counts)
    assert not {"simulate", "reconstruct", "train"} & set(counts), counts  # no demo jobs
    assert "--set seed=1001 --set data.n_shards=1" in out  # the held-out set: another seed
    for network, view in (("image", "image"), ("coefficient", "coefficients"), ("joint", "joint")):
        assert f"--set network.scattering.view={view}" in out
        assert f"results/scattering/networks/scattering/{network}/metrics.json" in out
    assert "--truth results/scattering/networks/scattering/test/shard-00000.h5" in out


def test_a_study_without_variants_is_refused_naming_it(workdir):
    cfg = workdir / "config" / "scattering.yaml"
    data = yaml.safe_load(cfg.read_text())
    del data["networks"]["scattering"]["variants"]
    cfg.write_text(yaml.safe_dump(data))
    proc = snakemake(
        workdir, "-n", "--workflow-profile", profile("local"), "--configfile", SCATTERING
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "variants" in out and "scattering" in out, out


def test_a_variant_override_reaches_the_cli_as_one_quoted_word(workdir):
    cfg = workdir / "config" / "scattering.yaml"
    data = yaml.safe_load(cfg.read_text())
    data["networks"]["scattering"]["variants"]["image"] = ["training.lr=1e-3; rm -rf ~"]
    cfg.write_text(yaml.safe_dump(data))
    proc = snakemake(
        workdir, "-n", "-p", "--workflow-profile", profile("local"), "--configfile", SCATTERING
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "--set 'training.lr=1e-3; rm -rf ~'" in out


def test_networks_lint(workdir):
    proc = snakemake(workdir, "--lint", "--configfile", SCATTERING)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_diffuse_dry_run_has_one_study_per_encoding_dimension(workdir):
    proc = snakemake(
        workdir, "-n", "-p", "--workflow-profile", profile("local"), "--configfile", DIFFUSE
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    counts = job_counts(proc.stdout)
    for rule in ("network_shards", "network_test_set", "network_train", "network_evaluate"):
        assert counts.get(rule) == 3, (rule, counts)
    for dim in (3, 8, 15):
        assert f"--set data.diffuse.dimension={dim}" in out
        assert f"results/diffuse/networks/diffuse_d{dim}/small/metrics.json" in out
