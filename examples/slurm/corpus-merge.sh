#!/usr/bin/env bash
# Stage 1, last step: deduplicate across the slices of corpus-array.sh and write the shards.
# Then the tokenizer (one machine, many cores and memory for a 250K vocabulary):
#   mdeberta pipeline recipes/mdeberta-v3-base.toml --workdir run --from tokenizer --until tokenizer
#SBATCH --job-name=mdeberta-corpus-merge
#SBATCH --cpus-per-task=32
#SBATCH --mem=256G
#SBATCH --time=24:00:00
#SBATCH --output=logs/%x-%j.out
set -euo pipefail

RECIPE=${RECIPE:-recipes/mdeberta-v3-base.toml}
OUT=${OUT:-run/corpus}

mdeberta corpus prepare --recipe "$RECIPE" --out "$OUT" --no-progress --merge --workers "$SLURM_CPUS_PER_TASK"
