#!/usr/bin/env bash
# Merges the shards' results into one file with one record per id, and names the input rows
# that have no record (exit 1 if any). Submit it after the array:
#   sbatch --dependency=afterany:<array jobid> deploy/slurm/batchgen-merge.sh
#SBATCH --job-name=batchgen-merge
#SBATCH --output=batchgen-merge-%j.log
#SBATCH --time=00:30:00
#SBATCH --mem=1G
set -euo pipefail

DATA=${DATA:-$HOME/batchgen-data}
N=${SHARDS:-20}
shards=()
for ((k = 0; k < N; k++)); do
    shards+=("$DATA/rows.shard-$k-of-$N.results.jsonl")
done
exec batchgen merge "${shards[@]}" -o "$DATA/rows.results.jsonl" --input "$DATA/rows.jsonl"
