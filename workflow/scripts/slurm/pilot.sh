#!/usr/bin/env bash
# Pilot job: run the whole workflow inside ONE Slurm allocation (Frontier, Perlmutter): no
# per-job queueing, every GPU of the allocation kept busy by jobs running side by side.
#   sbatch -A "$XRAYFLOW_ACCOUNT" -p batch -N 2 workflow/scripts/slurm/pilot.sh        # Frontier
#   sbatch -A "$XRAYFLOW_ACCOUNT" -C gpu -q regular -N 2 --gpus-per-node=4 \
#     workflow/scripts/slurm/pilot.sh                                                   # Perlmutter
#   XRAYFLOW_SNAKEMAKE_ARGS="--configfile config/beamtime.yaml" sbatch ... pilot.sh
#   workflow/scripts/slurm/pilot.sh [snakemake args]     # outside Slurm: runs locally
# The #SBATCH lines below are placeholders (name, one node, one hour, log file); the account,
# partition/constraint/QOS, node count, GPUs and time limit go on the sbatch command line, which
# overrides them. Snakemake runs in $SLURM_SUBMIT_DIR (submit from the repository) with the
# local executor; the allocation's GPUs are a global resource (gpu = nodes x GPUs per node), so
# running jobs never ask for more GPUs than the allocation has. EVERY GPU job goes through srun:
# multi-rank jobs `srun --exact ... --gpus-per-task=1 -n RANKS xrayflow ...`, single-rank
# reconstructions and training `srun ... -n 1 xrayflow ...` (config launch_single_rank=True), so
# Slurm gives every rank its own GPU and places the steps on any node with free GPUs.
# `--exact` gives a step only what it asks for and `--mem=0` lets steps share the job's memory
# (without them a step takes all cores/memory of its nodes and the others wait). The pilot
# removes the allocation's SLURM_* request variables (SLURM_GPUS, SLURM_GPUS_PER_NODE,
# SLURM_NTASKS, ...; the job id stays) before Snakemake starts, as the Snakemake Slurm jobstep
# does: srun would read them as its own request (e.g. all GPUs for every step) and wait.
# Machine defaults come from XRAYFLOW_PILOT_SYSTEM (frontier | perlmutter | generic; default
# from $NERSC_HOST / $LMOD_SYSTEM_NAME, else generic: GPUs and cores from SLURM_GPUS_ON_NODE /
# SLURM_CPUS_ON_NODE, 1 core per rank); override them with XRAYFLOW_GPUS_PER_NODE,
# XRAYFLOW_CORES_PER_NODE and XRAYFLOW_PILOT_LAUNCHER (plain words, as config mpi_launcher).
# Training asks for one GPU (`--set-resources train:gpu=1 network_train:gpu=1`); a
# --set-resources of your own replaces that list, so repeat those two in it. Put configuration
# in --configfile: a second --config would replace the pilot's.
#SBATCH -J xrayflow-pilot
#SBATCH -N 1
#SBATCH -t 01:00:00
#SBATCH -o xrayflow-pilot-%j.out
set -euo pipefail

if [ -n "${SLURM_SUBMIT_DIR:-}" ]; then
  cd "$SLURM_SUBMIT_DIR"
else
  cd "$(dirname "$0")/../../.."
fi

read -r -a extra <<<"${XRAYFLOW_SNAKEMAKE_ARGS:-}"
snakemake="${XRAYFLOW_SNAKEMAKE:-snakemake}"

if [ -z "${SLURM_JOB_ID:-}" ]; then
  echo "pilot: not inside a Slurm job; running locally with profiles/local" >&2
  exec "$snakemake" --workflow-profile profiles/local "${extra[@]}" "$@"
fi

system=${XRAYFLOW_PILOT_SYSTEM:-${NERSC_HOST:-${LMOD_SYSTEM_NAME:-generic}}}
case "$system" in
frontier) # 8 GCDs, 56 usable cores (7 per GCD, closest to it)
  gpus_default=8 cores_default=56
  launcher_default="srun --exact --mem=0 --kill-on-bad-exit=1 -c 7 --gpus-per-task=1 --gpu-bind=closest"
  ;;
perlmutter) # 4 A100, 64 cores
  gpus_default=4 cores_default=64
  launcher_default="srun --exact --mem=0 --kill-on-bad-exit=1 -c 32 --cpu-bind=cores --gpus-per-task=1"
  ;;
generic)
  gpus_default=${SLURM_GPUS_ON_NODE:-0} cores_default=${SLURM_CPUS_ON_NODE:-1}
  launcher_default="srun --exact --mem=0 --kill-on-bad-exit=1 -c 1 --gpus-per-task=1"
  ;;
*)
  echo "pilot: unknown XRAYFLOW_PILOT_SYSTEM '$system' (frontier, perlmutter or generic)" >&2
  exit 2
  ;;
esac
nodes=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}
gpus_per_node=${XRAYFLOW_GPUS_PER_NODE:-$gpus_default}
cores_per_node=${XRAYFLOW_CORES_PER_NODE:-$cores_default}
launcher=${XRAYFLOW_PILOT_LAUNCHER:-$launcher_default}
for value in "$nodes" "$gpus_per_node" "$cores_per_node"; do
  case "$value" in '' | *[!0-9]*)
    echo "pilot: node, GPU and core counts must be integers (got '$value')" >&2
    exit 2
    ;;
  esac
done
if [ "$gpus_per_node" -lt 1 ]; then
  echo "pilot: no GPUs in this allocation (request them, e.g. --gpus-per-node, or set" \
    "XRAYFLOW_GPUS_PER_NODE)" >&2
  exit 2
fi

# The allocation's request variables would become every step's request: keep the job's
# identity only (as snakemake-executor-plugin-slurm-jobstep does for the jobs it starts).
while read -r var; do
  case "$var" in
  SLURM_JOB_ID | SLURM_JOBID | SLURM_CLUSTER_NAME | SLURM_SUBMIT_DIR | SLURM_SUBMIT_HOST | SLURM_CONF) ;;
  SLURM_* | SRUN_* | SBATCH_*) unset "$var" ;;
  esac
done < <(compgen -e)

echo "pilot: ${nodes} nodes, $((nodes * gpus_per_node)) GPUs, launcher '${launcher}'" >&2
exec "$snakemake" --workflow-profile profiles/local \
  --cores "$((nodes * cores_per_node))" \
  --resources "gpu=$((nodes * gpus_per_node))" \
  --set-resources "train:gpu=1" "network_train:gpu=1" \
  --config "mpi_launcher=${launcher}" "gpus_per_rank=1" "launch_single_rank=True" \
  "${extra[@]}" "$@"
