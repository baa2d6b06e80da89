#!/usr/bin/env bash
# Pilot job: run the whole workflow inside ONE PBS allocation (no per-job queueing).
#   qsub -A "$XRAYFLOW_ACCOUNT" -l select=4:system=polaris workflow/scripts/pbs/pilot.sh
#   XRAYFLOW_SNAKEMAKE_ARGS="--configfile config/beamtime.yaml" qsub -A ... pilot.sh
#   workflow/scripts/pbs/pilot.sh [snakemake args]     # outside PBS: runs locally
# Inside PBS, Snakemake runs on the head node with the local executor; the allocation's GPUs
# are a global resource (gpu = nodes x XRAYFLOW_GPUS_PER_NODE), so running jobs never ask for
# more GPUs than the allocation has. Multi-rank jobs run `mpiexec --ppn 4 ... -n RANKS
# set_affinity_gpu.sh ...` across the allocation's nodes; single-rank GPU jobs run
# `set_affinity_gpu.sh xrayflow ...` on the head node. The wrapper gives every process a GPU
# of its node that no other process holds (a lock per GPU), so jobs running side by side never
# share a GPU; a process that finds every GPU of its node taken waits for one (PALS places
# ranks from the first node of $PBS_NODEFILE, and single-rank jobs stay on the head node: for
# many single-rank scans a 1-node pilot, or group jobs, use the GPUs best).
# Defaults below are for Polaris; override with the XRAYFLOW_PILOT_* / XRAYFLOW_GPUS_PER_NODE /
# XRAYFLOW_CORES_PER_NODE variables. Snakemake runs in $PBS_O_WORKDIR (the repository).
#PBS -N xrayflow-pilot
#PBS -l select=2:system=polaris
#PBS -l place=scatter
#PBS -l walltime=01:00:00
#PBS -l filesystems=home:eagle
#PBS -q debug
#PBS -k doe
#PBS -j oe
set -euo pipefail

if [ -n "${PBS_O_WORKDIR:-}" ]; then
  cd "$PBS_O_WORKDIR"
else
  cd "$(dirname "$0")/../../.."
fi

read -r -a extra <<<"${XRAYFLOW_SNAKEMAKE_ARGS:-}"
snakemake="${XRAYFLOW_SNAKEMAKE:-snakemake}"

if [ -n "${PBS_NODEFILE:-}" ] && [ -s "${PBS_NODEFILE}" ]; then
  nodes=$(sort -u "$PBS_NODEFILE" | wc -l)
  export XRAYFLOW_GPUS_PER_NODE=${XRAYFLOW_GPUS_PER_NODE:-4}
  gpus_per_node=$XRAYFLOW_GPUS_PER_NODE
  cores_per_node=${XRAYFLOW_CORES_PER_NODE:-32}
  launcher=${XRAYFLOW_PILOT_LAUNCHER:-"mpiexec --ppn ${gpus_per_node} --depth 8 --cpu-bind depth"}
  wrapper=${XRAYFLOW_PILOT_WRAPPER:-workflow/scripts/polaris/set_affinity_gpu.sh}
  echo "pilot: ${nodes} nodes, $((nodes * gpus_per_node)) GPUs, launcher '${launcher}'" >&2
  exec "$snakemake" --workflow-profile profiles/local \
    --cores "$((nodes * cores_per_node))" \
    --resources "gpu=$((nodes * gpus_per_node))" \
    --config "mpi_launcher=${launcher}" "mpi_wrapper=${wrapper}" "gpus_per_rank=1" \
    "${extra[@]}" "$@"
else
  echo "pilot: not inside a PBS job; running locally with profiles/local" >&2
  exec "$snakemake" --workflow-profile profiles/local "${extra[@]}" "$@"
fi
