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
            caption="../workflow/report/summary_table.rst",
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
