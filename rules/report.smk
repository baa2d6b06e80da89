# Summaries and provenance: small Python scripts in workflow/scripts, no stage logic.


rule provenance:
    """Resolved workflow config, software versions and git commit next to the results."""
    output:
        report(
            f"{RESULTS}/provenance/workflow.yaml",
            caption="../workflow/report/provenance.rst",
            category="Provenance",
        ),
    log:
        f"{LOGS}/provenance.log",
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        config=config,
    script:
        "../workflow/scripts/provenance.py"


rule info:
    """`xrayflow info` of a dataset that is simulated but not reconstructed."""
    input:
        f"{RESULTS}/data/{{dataset}}.h5",
    output:
        f"{RESULTS}/info/{{dataset}}.txt",
    log:
        f"{LOGS}/info/{{dataset}}.log",
    conda:
        "../envs/simulate.yaml"
    shell:
        "xrayflow info {input:q} > {output:q} 2> {log:q}"


rule summary:
    """Table of the metrics of every demo dataset."""
    input:
        metrics=expand(
            f"{RESULTS}/metrics/{{dataset}}.json", dataset=reconstructed_datasets()
        ),
        benchmarks=expand(
            f"{RESULTS}/benchmarks/reconstruct/{{dataset}}.tsv",
            dataset=reconstructed_datasets(),
        ),
        info=expand(
            f"{RESULTS}/info/{{dataset}}.txt", dataset=simulated_only_datasets()
        ),
    output:
        table=report(
            f"{RESULTS}/summary.tsv",
            caption="../workflow/report/summary.rst",
            category="Summary",
        ),
        html=report(
            f"{RESULTS}/summary.html",
            caption="../workflow/report/summary.rst",
            category="Summary",
        ),
    log:
        f"{LOGS}/summary.log",
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        names=reconstructed_datasets(),
        ranks=[int(DATASETS[name]["ranks"]) for name in reconstructed_datasets()],
        simulated_only=simulated_only_datasets(),
    script:
        "../workflow/scripts/summarize.py"


rule beamtime_summary:
    """Table of every beamtime scan: overrides, ranks, run time, metrics when evaluated."""
    input:
        recon=expand(f"{RESULTS}/beamtime/recon/{{scan}}.h5", scan=list(SCANS.index)),
        benchmarks=expand(
            f"{RESULTS}/benchmarks/beamtime/reconstruct/{{scan}}.tsv",
            scan=list(SCANS.index),
        ),
        metrics=expand(
            f"{RESULTS}/beamtime/metrics/{{scan}}.json", scan=scans_to_evaluate()
        ),
    output:
        table=report(
            f"{RESULTS}/beamtime/summary.tsv",
            caption="../workflow/report/beamtime.rst",
            category="Beamtime",
        ),
        html=report(
            f"{RESULTS}/beamtime/summary.html",
            caption="../workflow/report/beamtime.rst",
            category="Beamtime",
        ),
    log:
        f"{LOGS}/beamtime/summary.log",
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        scans=SCANS.fillna("").astype(str).to_dict("records"),
        evaluated=scans_to_evaluate(),
    script:
        "../workflow/scripts/beamtime_summary.py"
