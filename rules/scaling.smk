# Scaling study: reconstruct over rank counts (wildcard n) and problem sizes (wildcard size);
# strong scaling keeps the size fixed, weak scaling grows it with the rank count.


rule scaling_plot:
    """Strong/weak-scaling table and plots: time per iteration from the result files."""
    input:
        benchmarks=[
            f"{RESULTS}/scaling/benchmarks/{series}/n{n}_size{size}.tsv"
            for series, n, size in scaling_points()
        ],
        recon=[
            f"{RESULTS}/scaling/{series}/n{n}_size{size}.h5"
            for series, n, size in scaling_points()
        ],
    output:
        table=report(
            f"{RESULTS}/scaling/scaling.tsv",
            caption="../workflow/report/scaling.rst",
            category="Scaling",
        ),
        strong=report(
            f"{RESULTS}/scaling/strong.png",
            caption="../workflow/report/scaling.rst",
            category="Scaling",
        ),
        weak=report(
            f"{RESULTS}/scaling/weak.png",
            caption="../workflow/report/scaling.rst",
            category="Scaling",
        ),
    log:
        f"{LOGS}/scaling/plot.log",
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        points=[list(point) for point in scaling_points()],
    script:
        "../workflow/scripts/scaling_plot.py"
