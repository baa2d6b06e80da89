# Networks mode (config key `networks`): per study, training shards and a held-out set are
# generated from one train config (`xrayflow train --generate`), one network per variant is
# trained on the shards, applied to the held-out set (`xrayflow train --infer`) and
# evaluated against its labels (`xrayflow evaluate`: mAP for tags, R^2 for encodings).


rule network_shards:
    """Training shards of study {wildcards.study}."""
    input:
        cfg=lambda wc: NETWORKS[wc.study]["config"],
    output:
        directory(f"{RESULTS}/networks/{{study}}/shards"),
    log:
        f"{LOGS}/networks/{{study}}/generate.log",
    benchmark:
        f"{RESULTS}/benchmarks/networks/{{study}}/generate.tsv"
    conda:
        "../envs/train.yaml"
    threads: RES["train"]["threads"]
    resources:
        mem_mb=RES["train"]["mem_mb"],
        runtime=RES["train"]["runtime"],
    params:
        sets=lambda wc: set_args(NETWORKS[wc.study]["set"]),
    shell:
        "xrayflow train --generate --config {input.cfg:q} --out {output:q} {params.sets}"
        " > {log:q} 2>&1"


rule network_test_set:
    """Held-out samples of study {wildcards.study}: the same physics, another seed."""
    input:
        cfg=lambda wc: NETWORKS[wc.study]["config"],
    output:
        directory(f"{RESULTS}/networks/{{study}}/test"),
    log:
        f"{LOGS}/networks/{{study}}/generate_test.log",
    conda:
        "../envs/train.yaml"
    threads: RES["train"]["threads"]
    resources:
        mem_mb=RES["train"]["mem_mb"],
        runtime=RES["train"]["runtime"],
    params:
        sets=lambda wc: set_args(
            [*NETWORKS[wc.study]["set"], *NETWORKS[wc.study]["test_set"]]
        ),
    shell:
        "xrayflow train --generate --config {input.cfg:q} --out {output:q} {params.sets}"
        " > {log:q} 2>&1"


rule network_train:
    """Network {wildcards.variant} of study {wildcards.study}."""
    input:
        cfg=lambda wc: NETWORKS[wc.study]["config"],
        shards=f"{RESULTS}/networks/{{study}}/shards",
    output:
        model=f"{RESULTS}/networks/{{study}}/{{variant}}/model.pt",
        metrics=report(
            f"{RESULTS}/networks/{{study}}/{{variant}}/model.pt.metrics.jsonl",
            caption="../workflow/report/network_training.rst",
            category="Networks",
            subcategory="{study}",
            labels={"network": "{variant}", "file": "training curve (JSON lines)"},
        ),
        curve=report(
            f"{RESULTS}/networks/{{study}}/{{variant}}/training_curve.png",
            caption="../workflow/report/training_curve.rst",
            category="Networks",
            subcategory="{study}",
            labels={"network": "{variant}", "figure": "training curve"},
        ),
    log:
        f"{LOGS}/networks/{{study}}/{{variant}}/train.log",
    benchmark:
        f"{RESULTS}/benchmarks/networks/{{study}}/{{variant}}/train.tsv"
    conda:
        "../envs/train.yaml"
    threads: RES["train"]["threads"]
    resources:
        mem_mb=RES["train"]["mem_mb"],
        runtime=RES["train"]["runtime"],
        gpu=RES["train"]["gpu"],
    params:
        sets=lambda wc: set_args(
            [*NETWORKS[wc.study]["set"], *NETWORKS[wc.study]["variants"][wc.variant]]
        ),
        figures=lambda wc, output: os.path.dirname(output.curve),
        launch=launch_prefix,
    shell:
        "{params.launch} xrayflow train --config {input.cfg:q} --data {input.shards:q}"
        " --out {output.model:q}"
        " --figures {params.figures:q} {params.sets} > {log:q} 2>&1"


rule network_infer:
    """Predictions of network {wildcards.variant} on the held-out set of {wildcards.study}."""
    input:
        cfg=lambda wc: NETWORKS[wc.study]["config"],
        model=f"{RESULTS}/networks/{{study}}/{{variant}}/model.pt",
        test=f"{RESULTS}/networks/{{study}}/test",
    output:
        f"{RESULTS}/networks/{{study}}/{{variant}}/predictions.h5",
    log:
        f"{LOGS}/networks/{{study}}/{{variant}}/infer.log",
    conda:
        "../envs/train.yaml"
    threads: RES["train"]["threads"]
    resources:
        mem_mb=RES["train"]["mem_mb"],
        runtime=RES["train"]["runtime"],
    params:
        shard=lambda wc, input: first_shard(input.test),
    shell:
        "xrayflow train --infer --config {input.cfg:q} --model {input.model:q}"
        " --data {params.shard:q} --out {output:q} > {log:q} 2>&1"


rule network_evaluate:
    """Held-out scores and figures of network {wildcards.variant} of {wildcards.study}."""
    input:
        result=f"{RESULTS}/networks/{{study}}/{{variant}}/predictions.h5",
        test=f"{RESULTS}/networks/{{study}}/test",
    output:
        metrics=f"{RESULTS}/networks/{{study}}/{{variant}}/metrics.json",
        figures=report(
            directory(f"{RESULTS}/networks/{{study}}/{{variant}}/figures"),
            patterns=["{name}.png"],
            caption="../workflow/report/network_figures.rst",
            category="Networks",
            subcategory="{study}",
            labels={"network": "{variant}", "figure": "{name}"},
        ),
    log:
        f"{LOGS}/networks/{{study}}/{{variant}}/evaluate.log",
    conda:
        "../envs/evaluate.yaml"
    threads: RES["evaluate"]["threads"]
    resources:
        mem_mb=RES["evaluate"]["mem_mb"],
        runtime=RES["evaluate"]["runtime"],
    params:
        truth=lambda wc, input: first_shard(input.test),
    shell:
        "xrayflow evaluate --result {input.result:q} --truth {params.truth:q}"
        " --out {output.metrics:q} --figures {output.figures:q} > {log:q} 2>&1"


rule network_summary:
    """Table of the held-out scores of every network of every study."""
    input:
        expand(
            f"{RESULTS}/networks/{{study_variant}}/metrics.json",
            study_variant=network_runs(),
        ),
    output:
        report(
            f"{RESULTS}/networks/summary.tsv",
            caption="../workflow/report/network_summary.rst",
            category="Networks",
        ),
    log:
        f"{LOGS}/networks/summary.log",
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        runs=network_runs(),
    script:
        "../workflow/scripts/network_summary.py"
