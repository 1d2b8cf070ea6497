#!/usr/bin/env bash
# Stages 3b and 4 on one 8-GPU node once pretraining has finished: export the last checkpoint, then
# fine-tune and evaluate each XNLI setting of the recipe under torchrun, in the pipeline's layout
# (run/model, run/xnli/<setting>, merged report run/xnli/results.md). The settings and the data are
# the recipe's, as the pipeline reads them: [pipeline] xnli_settings (default: the [xnli] setting)
# and xnli_data.
#SBATCH --job-name=mdeberta-xnli
#SBATCH --nodes=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --output=logs/%x-%j.out
set -euo pipefail

RECIPE=${RECIPE:-recipes/mdeberta-v3-base.toml}
RUN=${RUN:-run}

# The recipe's XNLI data, then its settings, one a line.
recipe=$(python -c 'import sys; from mdeberta.recipe import Recipe; r = Recipe.load(sys.argv[1])
print(r.pipeline.xnli_data, *r.xnli_settings, sep="\n")' "$RECIPE")
mapfile -t settings <<< "$recipe"
data=${settings[0]}
settings=("${settings[@]:1}")

mdeberta pipeline "$RECIPE" --workdir "$RUN" --from export --until export --no-progress
for setting in "${settings[@]}"; do
    torchrun --nproc-per-node 8 -m mdeberta xnli run --recipe "$RECIPE" --setting "$setting" --no-progress \
        --model "$RUN/model/discriminator" --data "$data" --out "$RUN/xnli/$setting"
done
mdeberta xnli report "${settings[@]/#/$RUN/xnli/}" --out "$RUN/xnli"  # each setting's folder
