#!/usr/bin/env bash
# Pilot job: run the whole workflow inside ONE PBS allocation (no per-job queueing).
#   qsub -A "$XRAYFLOW_ACCOUNT" -l select=4:system=polaris workflow/scripts/pbs/pilot.sh
#   XRAYFLOW_SNAKEMAKE_ARGS="--configfile config/beamtime.yaml" qsub -A ... pilot.sh
#   workflow/scripts/pbs/pilot.sh [snakemake args]     # outside PBS: runs locally
# Inside PBS, Snakemake runs on the head node with the local executor; the allocation's GPUs
# are a global resource (gpu = nodes x XRAYFLOW_GPUS_PER_NODE), so concurrently running
# reconstructions never ask for more GPUs than the allocation has, and every multi-rank job
# is launched with `mpiexec --ppn 4 ... -n RANKS` across the allocation's nodes (PALS places
# ranks from the first node of $PBS_NODEFILE: size groups/ranks to whole nodes for disjoint
# placement). Defaults below are for Polaris; override with the XRAYFLOW_PILOT_* variables.
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
  gpus_per_node=${XRAYFLOW_GPUS_PER_NODE:-4}
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
