#!/usr/bin/env bash
# Stage 1 on a cluster: one array task per slice of the input files, then one merge job.
#
#   jobid=$(sbatch --parsable examples/slurm/corpus-array.sh)
#   sbatch --dependency=afterok:$jobid examples/slurm/corpus-merge.sh
#
# Each task cleans and language-identifies the input files whose index % 64 == its task id, into
# $OUT/_work (a task that is rerun continues where it stopped); the merge job deduplicates across
# all of them and writes $OUT/<lang>/part-*.parquet, stats and the manifest. Adjust --array to
# the number of slices (--num-shards) and the recipe to your data.
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
