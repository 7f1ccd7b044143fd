#!/usr/bin/env bash
# A batchgen run as a Slurm job array: task K runs `--shard K/N`, all tasks share one rate
# budget through Redis, and a dependent job merges the shards' results.
#
#   sbatch --array=0-19 deploy/slurm/batchgen-array.sh            # 20 shards
#   sbatch --dependency=afterany:<jobid> deploy/slurm/batchgen-merge.sh
#   sbatch --array=7 deploy/slurm/batchgen-array.sh               # rerun shard 7 (it resumes)
#
# Edit DATA, REDIS and the run flags below. The API key comes from the environment of the
# submitting shell (sbatch exports it by default); never write it into this file.
#SBATCH --job-name=batchgen
#SBATCH --output=batchgen-%A_%a.log
#SBATCH --time=08:00:00
#SBATCH --cpus-per-task=1
#SBATCH --mem=512M
# Two minutes before the time limit Slurm sends SIGTERM to the job step (batchgen, started by
# srun below): it drains and exits 130, and a rerun resumes.
#SBATCH --signal=TERM@120
set -euo pipefail

DATA=${DATA:-$HOME/batchgen-data}
REDIS=${REDIS:-redis://redis.example.internal:6379}
K=${SLURM_ARRAY_TASK_ID:?run this with sbatch --array}
N=${SHARDS:-${SLURM_ARRAY_TASK_COUNT:?set SHARDS when rerunning one task}}

set +e
srun batchgen run "$DATA/rows.jsonl" \
    --shard "$K/$N" \
    --limits-redis "$REDIS" \
    --rpm 1200 --tpm 1000000 \
    --model qwen-plus \
    --template 'Summarize in one sentence: {text}' \
    --deadline 7h30m \
    --progress-interval 60s \
    --summary-json "$DATA/summary.shard-$K-of-$N.json"
code=$?
set -e

# What each exit code asks of whoever reads the log (see README, "Exit codes"):
case $code in
    0) echo "shard $K/$N: done" ;;
    1) echo "shard $K/$N: some rows failed; resubmit this task to retry them (it resumes)" ;;
    2) echo "shard $K/$N: bad usage, configuration or input; every task fails alike: fix it first" ;;
    3) echo "shard $K/$N: stopped early (credentials, billing, cost cap, deadline, output); see above" ;;
    130) echo "shard $K/$N: interrupted; resubmit this task to resume" ;;
esac
exit "$code"
