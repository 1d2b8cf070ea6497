#!/usr/bin/env bash
# Stages 3b and 4 on one 8-GPU node once pretraining has finished: export the last checkpoint, then
# fine-tune and evaluate each XNLI setting of the recipe under torchrun, in the pipeline's layout
# (run/model, run/xnli/<setting>, merged report run/xnli/results.md).
#SBATCH --job-name=mdeberta-xnli
#SBATCH --nodes=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --output=logs/%x-%j.out
set -euo pipefail

RECIPE=${RECIPE:-recipes/mdeberta-v3-base.toml}
RUN=${RUN:-run}

mdeberta pipeline "$RECIPE" --workdir "$RUN" --from export --until export --no-progress
for setting in zero-shot translate-train-all; do
    torchrun --nproc-per-node 8 -m mdeberta xnli run --recipe "$RECIPE" --setting "$setting" --no-progress \
        --model "$RUN/model/discriminator" --data facebook/xnli --out "$RUN/xnli/$setting"
done
mdeberta xnli report "$RUN"/xnli/zero-shot "$RUN"/xnli/translate-train-all --out "$RUN/xnli"
