# Train stage: `xrayflow train --generate` writes training shards from simulate-stage physics
# (config section `data`), `xrayflow train` fits the small network on them, and
# `xrayflow train --infer` applies the model to one shard. Training with a GPU (resource gpu,
# set by the GPU profiles) goes through launch_prefix like a single-rank reconstruction: the
# GPU wrapper (Polaris), or srun -n 1 in the Slurm pilot, gives it a GPU of its own.


rule train_data:
    """Training shards generated from the train config's `data` section."""
    input:
        cfg=lambda wc: TRAIN["config"],
    output:
        directory(f"{RESULTS}/train/shards"),
    log:
        f"{LOGS}/train/generate.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/generate.tsv"
    conda:
        "../envs/train.yaml"
    threads: RES["train"]["threads"]
    resources:
        mem_mb=RES["train"]["mem_mb"],
        runtime=RES["train"]["runtime"],
    params:
        sets=set_args(TRAIN["set"]),
    shell:
        "xrayflow train --generate --config {input.cfg:q} --out {output:q} {params.sets}"
        " > {log:q} 2>&1"


rule train:
    """Small network trained on the generated shards."""
    input:
        cfg=lambda wc: TRAIN["config"],
        shards=f"{RESULTS}/train/shards",
    output:
        model=f"{RESULTS}/train/model.pt",
        metrics=f"{RESULTS}/train/model.pt.metrics.jsonl",
        curve=report(
            f"{RESULTS}/train/figures/training_curve.png",
            caption="../workflow/report/training_curve.rst",
            category="Training",
            labels={"figure": "training curve"},
        ),
    log:
        f"{LOGS}/train/train.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/train.tsv"
    conda:
        "../envs/train.yaml"
    threads: RES["train"]["threads"]
    resources:
        mem_mb=RES["train"]["mem_mb"],
        runtime=RES["train"]["runtime"],
        gpu=RES["train"]["gpu"],
    params:
        launch=launch_prefix,
        sets=set_args(TRAIN["set"]),
        figures=lambda wc, output: os.path.dirname(output.curve),
    shell:
        "{params.launch} xrayflow train --config {input.cfg:q} --data {input.shards:q}"
        " --out {output.model:q}"
        " --figures {params.figures:q} {params.sets} > {log:q} 2>&1"


rule train_infer:
    """Network predictions on the first training shard."""
    input:
        cfg=lambda wc: TRAIN["config"],
        model=f"{RESULTS}/train/model.pt",
        shards=f"{RESULTS}/train/shards",
    output:
        predictions=f"{RESULTS}/train/predictions.h5",
        figure=report(
            f"{RESULTS}/train/figures/predictions.png",
            caption="../workflow/report/training_predictions.rst",
            category="Training",
            labels={"figure": "predictions vs truth"},
        ),
    log:
        f"{LOGS}/train/infer.log",
    conda:
        "../envs/train.yaml"
    threads: RES["train"]["threads"]
    resources:
        mem_mb=RES["train"]["mem_mb"],
        runtime=RES["train"]["runtime"],
    params:
        sets=set_args(TRAIN["set"]),
        shard=lambda wc, input: first_shard(input.shards),
        figures=lambda wc, output: os.path.dirname(output.figure),
    shell:
        "xrayflow train --infer --config {input.cfg:q} --model {input.model:q}"
        " --data {params.shard:q} --out {output.predictions:q} --figures {params.figures:q}"
        " {params.sets} > {log:q} 2>&1"
