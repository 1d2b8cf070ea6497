#!/usr/bin/env bash
# Stage 1 on a cluster: an array over slices of the input files, an array over dedup tasks, then
# one merge job.
#
#   clean=$(sbatch --parsable examples/slurm/corpus-array.sh)
#   dedup=$(sbatch --parsable --dependency=afterok:$clean examples/slurm/corpus-dedup.sh)
#   sbatch --dependency=afterok:$dedup examples/slurm/corpus-merge.sh
#
# Each task cleans and language-identifies the input files whose index % 64 == its task id, into
# $OUT/_work, and sorts their paragraph and document keys (a task that is rerun continues where
# it stopped). Adjust --array to the number of slices (--num-shards) and the recipe to your data.
#SBATCH --job-name=mdeberta-corpus
#SBATCH --array=0-63
#SBATCH --cpus-per-task=16
#SBATCH --mem=32G
#SBATCH --time=12:00:00
#SBATCH --output=logs/%x-%A_%a.out
set -euo pipefail

RECIPE=${RECIPE:-recipes/mdeberta-v3-base.toml}
OUT=${OUT:-run/corpus}

mdeberta corpus prepare --recipe "$RECIPE" --out "$OUT" --no-progress \
    --shard-index "$SLURM_ARRAY_TASK_ID" --num-shards 64 --workers "$SLURM_CPUS_PER_TASK"
