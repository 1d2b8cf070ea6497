#!/usr/bin/env bash
# Stage 3 on several GPU nodes: torchrun on each node, one process per GPU, NCCL between them.
#
#   sbatch examples/slurm/pretrain-multinode.sh
#
# Reads run/corpus and run/tokenizer (the pipeline's layout, so that afterwards
# `mdeberta pipeline recipes/mdeberta-v3-base.toml --workdir run` finds pretraining finished and
# goes on with export and XNLI). batch_size in the recipe is the global batch: accumulation makes up
# what nodes x GPUs x micro_batch_size leave. The job checkpoints every checkpoint_every steps and
# when Slurm sends SIGTERM before the time limit (--signal); resubmitting the same script continues
# from the latest checkpoint.
#SBATCH --job-name=mdeberta-pretrain
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=48:00:00
#SBATCH --signal=TERM@300
#SBATCH --output=logs/%x-%j.out
set -euo pipefail

RECIPE=${RECIPE:-recipes/mdeberta-v3-base.toml}
RUN=${RUN:-run}
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)

# srun forwards the SIGTERM to torchrun, which passes it on to every training process.
srun --kill-on-bad-exit=1 torchrun \
    --nnodes "$SLURM_NNODES" --nproc-per-node 8 \
    --rdzv-id "$SLURM_JOB_ID" --rdzv-backend c10d --rdzv-endpoint "$head_node:29500" \
    -m mdeberta pretrain run --recipe "$RECIPE" --no-progress \
    --corpus "$RUN/corpus" --tokenizer "$RUN/tokenizer" --out "$RUN/pretrain"
