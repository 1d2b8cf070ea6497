#!/usr/bin/env bash
# Every GPU figure benchmarks/RESULTS.md asks for, in one run on one CUDA GPU (bf16):
#   1. the CUDA tests (bf16 agreement of the backends, fp32 training gradients of sdpa and flex);
#   2. the encoder's training step (model_speed.py), ours against transformers, BERT-SDPA and the
#      peers disentangled-flash and flashdeberta where installed (pip install disentangled-flash flashdeberta);
#   3. the full pretraining step with its MFU (pretrain_speed.py).
# Logs and JSON go to the folder given (default: gpu-results). Usage: benchmarks/gpu_suite.sh [folder]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=".:${PYTHONPATH:-}"
python3 -c 'import torch; assert torch.cuda.is_available(), "no CUDA GPU visible"; print(torch.cuda.get_device_name())' || exit 1
status=0
python3 -m pytest -q -p no:cacheprovider tests/model -k cuda -rs 2>&1 | tee "$out/cuda_tests.log" || status=1
python3 benchmarks/model_speed.py --device cuda --dtype bf16 --sizes base --lengths 512,128 --tokens 32768 \
    --rounds 10 --contenders transformers,ours-sdpa,ours-flex,ours-eager,bert-sdpa,disentangled-flash,flashdeberta \
    --json "$out/model_speed_cuda.json" 2>&1 | tee "$out/model_speed_cuda.log" || status=1
python3 benchmarks/pretrain_speed.py --device cuda --dtype bf16 --size base --length 512 --batch 32 \
    --vocab-size 251000 --rounds 10 --json "$out/pretrain_speed_cuda.json" 2>&1 | tee "$out/pretrain_speed_cuda.log" || status=1
exit $status
