#!/bin/bash
# Submit scripts/slurm/fit.sbatch with its log under outputs/slurm/ (created here, before
# sbatch: SLURM opens the log file before the job script runs).
#   scripts/slurm/submit.sh configs/ucf101.yaml [extra csvr fit args]
#   SBATCH_ARGS="--nodes=2" scripts/slurm/submit.sh configs/ucf101_L.yaml
# LOG_DIR (default outputs/slurm) and SBATCH (default sbatch) can be overridden.
set -euo pipefail
CONFIG=${1:?usage: scripts/slurm/submit.sh CONFIG [extra csvr fit args]}
LOG_DIR=${LOG_DIR:-outputs/slurm}
mkdir -p "$LOG_DIR"
# shellcheck disable=SC2086  # SBATCH_ARGS is a list of options
exec "${SBATCH:-sbatch}" ${SBATCH_ARGS:-} --output="$LOG_DIR/%x-%j.out" \
  "$(dirname "$0")/fit.sbatch" "$@"
