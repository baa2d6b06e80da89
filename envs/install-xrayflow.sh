#!/usr/bin/env bash
# Snakemake post-deploy script (envs/<env>.post-deploy.sh links here): installs xrayflow from
# the checkout into the conda env Snakemake has just created ($CONDA_PREFIX, activated), without
# dependencies (the env file pins them) and without build isolation (no download). Snakemake
# runs it in the working directory, which is the checkout when snakemake runs from there; set
# XRAYFLOW_SRC to the checkout otherwise (e.g. with `-d elsewhere` or `--conda-prefix`).
set -euo pipefail
src=${XRAYFLOW_SRC:-$PWD}
if ! grep -qs '^name = "xrayflow"$' "$src/pyproject.toml"; then
  echo "xrayflow post-deploy: $src is not the xrayflow checkout; set XRAYFLOW_SRC" >&2
  exit 1
fi
python -m pip install --no-deps --no-build-isolation -e "$src"
