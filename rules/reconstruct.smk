# Reconstruct stage: `xrayflow reconstruct` under MPI. `tasks` is the rank count (an int from a
# callable, so that the Slurm plugin renders --ntasks=N); `mpi` is the launcher (config key
# mpi_launcher, set per machine by the profiles) for multi-rank jobs and "" for single-rank
# jobs, which run without a launcher (the Slurm plugin rejects MPI jobs with tasks=1), through
# the per-rank wrapper when they use a GPU (launch_prefix in common.smk).


rule reconstruct:
    """AD reconstruction of demo dataset {wildcards.dataset} with MPI ranks."""
    input:
        cfg=lambda wc: DATASETS[wc.dataset]["reconstruct"],
        data=f"{RESULTS}/data/{{dataset}}.h5",
    output:
        f"{RESULTS}/recon/{{dataset}}.h5",
    log:
        f"{LOGS}/reconstruct/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/reconstruct/{{dataset}}.tsv"
    conda:
        "../envs/reconstruct.yaml"
    threads: RES["reconstruct"]["threads"]
    resources:
        mem_mb=RES["reconstruct"]["mem_mb"],
        runtime=RES["reconstruct"]["runtime"],
        gpu=gpus_for(dataset_ranks),
        tasks=dataset_ranks,
        mpi=mpi_for(dataset_ranks),
    params:
        launch=launch_prefix,
        sets=lambda wc: set_args(DATASETS[wc.dataset]["reconstruct_set"]),
    shell:
        "{params.launch} xrayflow reconstruct --config {input.cfg:q}"
        " --data {input.data:q} --out {output:q} --resume {params.sets} > {log:q} 2>&1"


rule reconstruct_scan:
    """Beamtime scan {wildcards.scan}: the whole scan (part recon) or, with beamtime.halves, its
    even/odd-indexed frames (recon_even, recon_odd: `--set data.subset=even|odd`, for the FRC
    between the halves); grouped so that many scans share one allocation."""
    input:
        cfg=lambda wc: BEAMTIME["reconstruct"],
        data=scan_data,
    output:
        f"{RESULTS}/beamtime/{{part}}/{{scan}}.h5",
    log:
        f"{LOGS}/beamtime/{{part}}/{{scan}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/beamtime/{{part}}/{{scan}}.tsv"
    wildcard_constraints:
        part="|".join(SCAN_PARTS),
    group:
        "scans"
    conda:
        "../envs/reconstruct.yaml"
    threads: RES["reconstruct"]["threads"]
    resources:
        mem_mb=RES["reconstruct"]["mem_mb"],
        runtime=RES["reconstruct"]["runtime"],
        gpu=gpus_for(scan_ranks),
        tasks=scan_ranks,
        # "" for every scan (group members must agree on string resources): the launcher comes
        # from config mpi_launcher at run time; on Slurm an `mpi` key (even empty) makes the
        # jobstep run the group's jobs directly instead of inside one srun step holding the
        # whole allocation, and "" keeps the submission free of the MPI-only checks.
        mpi="",
    params:
        launch=scan_launch_prefix,
        sets=scan_part_args,
    shell:
        "{params.launch} xrayflow reconstruct --config {input.cfg:q}"
        " --data {input.data:q} --out {output:q} --resume {params.sets} > {log:q} 2>&1"


rule reconstruct_scaling:
    """Timed reconstruction: {wildcards.series} scaling, {wildcards.n} ranks, size {wildcards.size}."""
    input:
        cfg=lambda wc: SCALING["reconstruct"],
        data=f"{RESULTS}/scaling/data/size{{size}}.h5",
    output:
        f"{RESULTS}/scaling/{{series}}/n{{n}}_size{{size}}.h5",
    log:
        f"{LOGS}/scaling/{{series}}/n{{n}}_size{{size}}.log",
    benchmark:
        repeat(
            f"{RESULTS}/scaling/benchmarks/{{series}}/n{{n}}_size{{size}}.tsv",
            SCALING["repeats"] if SCALING else 1,
        )
    conda:
        "../envs/reconstruct.yaml"
    threads: RES["reconstruct"]["threads"]
    resources:
        mem_mb=RES["reconstruct"]["mem_mb"],
        runtime=RES["reconstruct"]["runtime"],
        gpu=gpus_for(scaling_ranks),
        tasks=scaling_ranks,
        mpi=mpi_for(scaling_ranks),
    params:
        launch=launch_prefix,
        sets=lambda wc: set_args(SCALING["reconstruct_set"]),
    shell:
        "{params.launch} xrayflow reconstruct --config {input.cfg:q}"
        " --data {input.data:q} --out {output:q} {params.sets} > {log:q} 2>&1"
