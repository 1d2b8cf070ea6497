#!/usr/bin/env bash
# Stage 1, second step: one array task per share of the key space (after corpus-array.sh).
# Each finds, across every shard, the repeats of an earlier document or paragraph whose key lies
# in its share, and writes their positions to $OUT/_work/dedup. A task holds one sub-range of its
# keys at a time (2^22 keys, about 150 MB) plus 16 bytes per repeat it finds: about 0.8 GB for
# CC-100 (10^10 paragraphs) in 64 tasks if a fifth of the keys repeat (docs/scale.md; the measured
# rates are in benchmarks/RESULTS.md). --dedup-tasks must be the same number in this script and in
# corpus-merge.sh; a rerun task whose inputs are unchanged is skipped.
#SBATCH --job-name=mdeberta-corpus-dedup
#SBATCH --array=0-63
#SBATCH --cpus-per-task=1
#SBATCH --mem=4G
#SBATCH --time=4:00:00
#SBATCH --output=logs/%x-%A_%a.out
set -euo pipefail

RECIPE=${RECIPE:-recipes/mdeberta-v3-base.toml}
OUT=${OUT:-run/corpus}

mdeberta corpus prepare --recipe "$RECIPE" --out "$OUT" --no-progress \
    --dedup-tasks 64 --dedup-task "$SLURM_ARRAY_TASK_ID"
