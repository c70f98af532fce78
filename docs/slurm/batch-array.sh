#!/bin/bash
# Shards of an inferencelab grid as a Slurm job array: task i runs shard i of N.
#   jid=$(sbatch --parsable docs/slurm/batch-array.sh configs/simulation_mooncake.yaml)
#   sbatch --dependency=afterok:$jid --wrap "inferencelab batch merge --yaml configs/simulation_mooncake.yaml"
#SBATCH --job-name=inferencelab-grid
#SBATCH --array=0-7
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=01:00:00
#SBATCH --output=inferencelab-grid-%A_%a.out
set -euo pipefail
grid=${1:?usage: sbatch batch-array.sh GRID.yaml}
n=$(( SLURM_ARRAY_TASK_MAX - SLURM_ARRAY_TASK_MIN + 1 ))
i=$(( SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN ))
# a requeued task resumes from its shard's results.jsonl
exec inferencelab batch --yaml "$grid" --shard "$i/$n" --threads "${SLURM_CPUS_PER_TASK:-1}" --no-plot -q
