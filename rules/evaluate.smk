# Evaluate stage: `xrayflow evaluate` compares a reconstruction with the ground truth
# stored in the simulated data file and writes metrics.json plus figures.


rule evaluate:
    """Metrics of demo dataset {wildcards.dataset} against its ground truth."""
    input:
        result=f"{RESULTS}/recon/{{dataset}}.h5",
        truth=f"{RESULTS}/data/{{dataset}}.h5",
    output:
        metrics=f"{RESULTS}/metrics/{{dataset}}.json",
        figures=report(
            directory(f"{RESULTS}/figures/{{dataset}}"),
            patterns=["{name}.png"],
            caption="../workflow/report/figures.rst",
            category="Evaluation",
            subcategory="{dataset}",
        ),
    log:
        f"{LOGS}/evaluate/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{dataset}}.tsv"
    conda:
        "../envs/evaluate.yaml"
    threads: RES["evaluate"]["threads"]
    resources:
        mem_mb=RES["evaluate"]["mem_mb"],
        runtime=RES["evaluate"]["runtime"],
        gpu=RES["evaluate"]["gpu"],
    params:
        cfg=lambda wc: config_arg(DATASETS[wc.dataset]["evaluate"]),
    shell:
        "xrayflow evaluate {params.cfg} --result {input.result:q} --truth {input.truth:q}"
        " --out {output.metrics:q} --figures {output.figures:q} > {log:q} 2>&1"


rule evaluate_scan:
    """Metrics of beamtime scan {wildcards.scan} (only scans whose data hold a ground truth)."""
    input:
        result=f"{RESULTS}/beamtime/recon/{{scan}}.h5",
        truth=scan_data,
    output:
        metrics=f"{RESULTS}/beamtime/metrics/{{scan}}.json",
        figures=directory(f"{RESULTS}/beamtime/figures/{{scan}}"),
    log:
        f"{LOGS}/beamtime/evaluate/{{scan}}.log",
    group:
        "scans"
    conda:
        "../envs/evaluate.yaml"
    threads: RES["evaluate"]["threads"]
    resources:
        mem_mb=RES["evaluate"]["mem_mb"],
        runtime=RES["evaluate"]["runtime"],
        gpu=RES["evaluate"]["gpu"],
    params:
        cfg=lambda wc: config_arg(BEAMTIME["evaluate"]),
    shell:
        "xrayflow evaluate {params.cfg} --result {input.result:q} --truth {input.truth:q}"
        " --out {output.metrics:q} --figures {output.figures:q} > {log:q} 2>&1"
