#!/usr/bin/env bash
# Polaris GPU affinity (after ALCF's set_affinity_gpu_polaris.sh): one GPU per MPI rank,
# assigned in reverse order of the local rank so that ranks bound to the first cores get the
# closest GPU. Used as config mpi_wrapper: mpiexec ... -n N set_affinity_gpu.sh xrayflow ...
num_gpus=${XRAYFLOW_GPUS_PER_NODE:-4}
# PALS (Polaris) sets PMI_LOCAL_RANK / PALS_LOCAL_RANKID; MPICH hydra sets MPI_LOCALRANKID.
local_rank=${PMI_LOCAL_RANK:-${PALS_LOCAL_RANKID:-${MPI_LOCALRANKID:-0}}}
gpu=$((num_gpus - 1 - local_rank % num_gpus))
export CUDA_VISIBLE_DEVICES=$gpu
exec "$@"
