# xrayflow workflow: simulate -> reconstruct (MPI) -> train -> evaluate -> report.
#   snakemake --cores 2 --workflow-profile profiles/local                # demo (default)
#   snakemake ... --configfile config/beamtime.yaml                     # one recon per scan
#   snakemake ... --configfile config/scaling.yaml                      # scaling study
#   snakemake ... --configfile config/scattering.yaml                   # networks: tags
#   snakemake --workflow-profile profiles/local --report results/report.html
# Machine profiles: profiles/{polaris,aurora,frontier,perlmutter,local-slurm}.


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/simulate.smk"
include: "rules/reconstruct.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/scaling.smk"
include: "rules/networks.smk"
include: "rules/beamtime.smk"
include: "rules/report.smk"


report: "workflow/report/workflow.rst"


wildcard_constraints:
    dataset=r"[A-Za-z0-9_-]+",
    scan=r"[A-Za-z0-9_-]+",
    series=r"strong|weak",
    n=r"\d+",
    size=r"\d+",
    study=r"[A-Za-z0-9_-]+",
    variant=r"[A-Za-z0-9_-]+",


# Every job shell runs strict bash with a watchdog that ends the job when Snakemake dies.
shell.prefix(tie_prefix())


onstart:
    write_provenance()


# Targets of the configured mode (config key `mode`).
rule all:
    default_target: True
    input:
        all_targets(),
    localrule: True
