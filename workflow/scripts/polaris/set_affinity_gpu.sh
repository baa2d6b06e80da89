#!/usr/bin/env bash
# Per-rank GPU binding (config mpi_wrapper): `mpiexec ... -n N set_affinity_gpu.sh xrayflow ...`,
# or `set_affinity_gpu.sh xrayflow ...` for a single-rank job. Every process takes a GPU slot
# of its node that no other process holds: it locks <lock dir>/<gpu>.lock (flock; the kernel
# drops the lock when the process and its children exit) and keeps the lock open across exec.
# The first choice is ALCF's Polaris mapping, GPU = num_gpus - 1 - local rank (ranks bound to
# the first cores get the closest GPU); when that one is taken (another job of a group or of
# the pilot runs beside this one) the next free one is used, so jobs never share a GPU.
# Environment: XRAYFLOW_GPUS_PER_NODE (4), XRAYFLOW_GPU_VAR (CUDA_VISIBLE_DEVICES; e.g.
# ZE_AFFINITY_MASK on Aurora), XRAYFLOW_GPU_LOCKS (lock dir, node-local; default under
# ${TMPDIR:-/tmp}, one per batch job), XRAYFLOW_GPU_WAIT (seconds to wait for a free slot,
# 3600; then exit 75 with a message).
set -euo pipefail

num_gpus=${XRAYFLOW_GPUS_PER_NODE:-4}
var=${XRAYFLOW_GPU_VAR:-CUDA_VISIBLE_DEVICES}
# PALS (Polaris, Aurora) sets PMI_LOCAL_RANK / PALS_LOCAL_RANKID; MPICH hydra MPI_LOCALRANKID.
local_rank=${PMI_LOCAL_RANK:-${PALS_LOCAL_RANKID:-${MPI_LOCALRANKID:-0}}}
job=${PBS_JOBID:-${SLURM_JOB_ID:-${USER:-user}}}
locks=${XRAYFLOW_GPU_LOCKS:-${TMPDIR:-/tmp}/xrayflow-gpus-${job%%.*}}
wait_s=${XRAYFLOW_GPU_WAIT:-3600}
mkdir -p "$locks"

first=$((num_gpus - 1 - local_rank % num_gpus))
start=$SECONDS
while :; do
  for i in $(seq 0 $((num_gpus - 1))); do
    gpu=$(((first - i + num_gpus) % num_gpus))
    exec {fd}>"$locks/$gpu.lock"
    if flock -n "$fd"; then
      export "$var=$gpu"
      exec "$@"
    fi
    exec {fd}>&-
  done
  if ((SECONDS - start >= wait_s)); then
    echo "set_affinity_gpu.sh: no free GPU among $num_gpus on $(hostname) after ${wait_s} s" \
      "(more GPU jobs on this node than GPUs; see $locks)" >&2
    exit 75
  fi
  sleep 1
done
