#!/usr/bin/env bash
# Stage 1, last step: apply the decisions of corpus-dedup.sh's tasks (running any task still
# missing) and write the shards, stats and manifest; each worker writes one shard at a time.
# Then the tokenizer (one machine, many cores and memory for a 250K vocabulary):
#   mdeberta pipeline recipes/mdeberta-v3-base.toml --workdir run --from tokenizer --until tokenizer
#SBATCH --job-name=mdeberta-corpus-merge
#SBATCH --cpus-per-task=32
#SBATCH --mem=64G
#SBATCH --time=24:00:00
#SBATCH --output=logs/%x-%j.out
set -euo pipefail

RECIPE=${RECIPE:-recipes/mdeberta-v3-base.toml}
OUT=${OUT:-run/corpus}

mdeberta corpus prepare --recipe "$RECIPE" --out "$OUT" --no-progress --merge --dedup-tasks 64 \
    --workers "$SLURM_CPUS_PER_TASK"
