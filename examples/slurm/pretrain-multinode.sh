#!/usr/bin/env bash
# Stage 3 on several GPU nodes: torchrun on each node, one process per GPU, NCCL between them.
#
#   sbatch examples/slurm/pretrain-multinode.sh
#
# Reads run/corpus and run/tokenizer (the pipeline's layout, so that afterwards
# `mdeberta pipeline recipes/mdeberta-v3-base.toml --workdir run` finds pretraining finished and
# goes on with export and XNLI). batch_size in the recipe is the global batch: accumulation makes up
# what nodes x GPUs x micro_batch_size leave. The job checkpoints every checkpoint_every steps and
# when stopped before the time limit (below); resubmitting the same script continues from the
# latest checkpoint.
#
# Stopping before the time limit: --signal=TERM@900 has Slurm send SIGTERM to every process of the
# job step, torchrun and the training processes alike, 15 minutes before the limit. The training
# processes agree to stop at the next micro-batch, drop the unfinished step, process 0 writes a
# checkpoint of the last completed one (unless it has one), and all exit with 143. torchrun passes
# the SIGTERM on too (a repeated SIGTERM changes nothing) and SIGKILLs its workers after a grace
# period of 30 s by default: too short for a base-size checkpoint (about 3 GB with the optimizer
# state) on a network filesystem. TORCH_ELASTIC_SHUTDOWN_TIMEOUT lengthens it to 14 minutes, still
# inside the 15 (torch versions whose torchrun has --shutdown-timeout; older ones ignore it and kill
# after 30 s, and then what a stop loses is up to checkpoint_every steps: choose checkpoint_every
# so that checkpoint_every x seconds per step is what you accept to redo). A trap for a signal to
# the batch shell alone (--signal=B:...) would not lengthen torchrun's grace period: it has to
# reach the workers through the job step and torchrun all the same.
#SBATCH --job-name=mdeberta-pretrain
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=48:00:00
#SBATCH --signal=TERM@900
#SBATCH --output=logs/%x-%j.out
set -euo pipefail

RECIPE=${RECIPE:-recipes/mdeberta-v3-base.toml}
RUN=${RUN:-run}
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=840  # seconds torchrun waits for its workers after a SIGTERM

srun --kill-on-bad-exit=1 torchrun \
    --nnodes "$SLURM_NNODES" --nproc-per-node 8 \
    --rdzv-id "$SLURM_JOB_ID" --rdzv-backend c10d --rdzv-endpoint "$head_node:29500" \
    -m mdeberta pretrain run --recipe "$RECIPE" --no-progress \
    --corpus "$RUN/corpus" --tokenizer "$RUN/tokenizer" --out "$RUN/pretrain"
