# Beamtime-only rules: the ingest of raw detector files, the truth-less look at every scan
# (quick-look, and the FRC between the even/odd halves) and the summary page. The scan's
# simulated stand-in, reconstructions and metrics against a truth are rules simulate_scan,
# reconstruct_scan and evaluate_scan of the stage files. Every per-scan rule is in group
# `scans`, so that profiles pack whole scans into one batch job (group-components).


rule ingest_scan:
    """Raw detector files of beamtime scan {wildcards.scan} (sheet columns master, positions,
    ingest, ingest_set) to the CXI file its reconstructions read (`xrayflow ingest`)."""
    input:
        unpack(ingest_inputs),
    output:
        f"{RESULTS}/beamtime/data/{{scan}}.cxi",
    log:
        f"{LOGS}/beamtime/ingest/{{scan}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/beamtime/ingest/{{scan}}.tsv"
    group:
        "scans"
    conda:
        "../envs/reconstruct.yaml"
    threads: RES["ingest"]["threads"]
    resources:
        mem_mb=RES["ingest"]["mem_mb"],
        runtime=RES["ingest"]["runtime"],
        gpu=RES["ingest"]["gpu"],
    params:
        sets=ingest_args,
    shell:
        "xrayflow ingest --config {input.cfg:q} --out {output:q} {params.sets} > {log:q} 2>&1"


rule quicklook_scan:
    """Beamtime scan {wildcards.scan} without a ground truth: the quick-look of its result
    (`xrayflow evaluate --result`: loss, ranges, quicklook.png) and, with beamtime.halves, the
    FRC between the reconstructions of its even and odd frames (`xrayflow evaluate --pair`).
    """
    input:
        unpack(quicklook_inputs),
    output:
        **quicklook_outputs(),
    log:
        f"{LOGS}/beamtime/quicklook/{{scan}}.log",
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
        pair=pair_command,
    shell:
        "xrayflow evaluate {params.cfg} --result {input.result:q} --out {output.look:q}"
        " --figures {output.look_figures:q} > {log:q} 2>&1{params.pair}"


rule beamtime_summary:
    """One row per beamtime scan: key numbers (final loss, iterations, time, FRC resolution of
    the halves, metrics against the truth when evaluated), a thumbnail of the quick-look and
    links to the result and figures, as an HTML page and a TSV with every column."""
    input:
        recon=expand(f"{RESULTS}/beamtime/recon/{{scan}}.h5", scan=list(SCANS.index)),
        benchmarks=expand(
            f"{RESULTS}/benchmarks/beamtime/recon/{{scan}}.tsv", scan=list(SCANS.index)
        ),
        looks=expand(
            f"{RESULTS}/beamtime/quicklook/{{scan}}.json", scan=list(SCANS.index)
        ),
        look_figures=expand(
            f"{RESULTS}/beamtime/quicklook/{{scan}}", scan=list(SCANS.index)
        ),
        frc=expand(
            f"{RESULTS}/beamtime/frc/{{scan}}.json",
            scan=list(SCANS.index) if scan_halves() else [],
        ),
        metrics=expand(
            f"{RESULTS}/beamtime/metrics/{{scan}}.json", scan=scans_to_evaluate()
        ),
        figures=expand(f"{RESULTS}/beamtime/figures/{{scan}}", scan=scans_to_evaluate()),
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
        halves=scan_halves(),
    script:
        "../workflow/scripts/beamtime_summary.py"
