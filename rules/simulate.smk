# Simulate stage: `xrayflow simulate` writes one CXI/HDF5 file of diffraction data + truth.


rule simulate:
    """Demo dataset {wildcards.dataset}: simulated diffraction data with ground truth."""
    input:
        cfg=lambda wc: DATASETS[wc.dataset]["simulate"],
    output:
        f"{RESULTS}/data/{{dataset}}.h5",
    log:
        f"{LOGS}/simulate/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/simulate/{{dataset}}.tsv"
    conda:
        "../envs/simulate.yaml"
    threads: RES["simulate"]["threads"]
    resources:
        mem_mb=RES["simulate"]["mem_mb"],
        runtime=RES["simulate"]["runtime"],
        gpu=RES["simulate"]["gpu"],
    params:
        sets=lambda wc: set_args(DATASETS[wc.dataset]["simulate_set"]),
    shell:
        "xrayflow simulate --config {input.cfg:q} --out {output:q} {params.sets} > {log:q} 2>&1"


rule simulate_scan:
    """Stand-in data of a beamtime scan that has no measured file (tests, dry runs)."""
    input:
        cfg=lambda wc: BEAMTIME["simulate"],
    output:
        f"{RESULTS}/beamtime/data/{{scan}}.h5",
    log:
        f"{LOGS}/beamtime/simulate/{{scan}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/beamtime/simulate/{{scan}}.tsv"
    group:
        "scans"
    conda:
        "../envs/simulate.yaml"
    threads: RES["simulate"]["threads"]
    resources:
        mem_mb=RES["simulate"]["mem_mb"],
        runtime=RES["simulate"]["runtime"],
        gpu=RES["simulate"]["gpu"],
    params:
        sets=lambda wc: set_args(
            split_overrides(scan_row(wc.scan).get("simulate_set", ""))
        ),
    shell:
        "xrayflow simulate --config {input.cfg:q} --out {output:q} {params.sets} > {log:q} 2>&1"


rule simulate_scaling:
    """Scaling-study input of problem size {wildcards.size}."""
    input:
        cfg=lambda wc: SCALING["simulate"],
    output:
        f"{RESULTS}/scaling/data/size{{size}}.h5",
    log:
        f"{LOGS}/scaling/simulate/size{{size}}.log",
    conda:
        "../envs/simulate.yaml"
    threads: RES["simulate"]["threads"]
    resources:
        mem_mb=RES["simulate"]["mem_mb"],
        runtime=RES["simulate"]["runtime"],
        gpu=RES["simulate"]["gpu"],
    params:
        sets=lambda wc: set_args(
            SCALING["simulate_set"] + [f"{SCALING['size_key']}={int(wc.size)}"]
        ),
    shell:
        "xrayflow simulate --config {input.cfg:q} --out {output:q} {params.sets} > {log:q} 2>&1"
