#!/usr/bin/env bash
# Every GPU figure benchmarks/RESULTS.md asks for, on one CUDA GPU (bf16), in three parts:
#   tests     the CUDA tests (bf16 agreement of the backends, fp32 training gradients of sdpa and flex);
#   model     the encoder's training step (model_speed.py): ours (sdpa, flex, eager) against
#             transformers, BERT-SDPA and the peers disentangled-flash and flashdeberta where installed
#             (pip install disentangled-flash flashdeberta);
#   pretrain  the full pretraining step with its MFU (pretrain_speed.py).
# Logs and JSON go to FOLDER (default: gpu-results).
# Usage: [PYTHON=python] benchmarks/gpu_suite.sh [FOLDER] [PART ...]   (default: all three parts)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-results}
shift $(($# > 0 ? 1 : 0))
parts=${*:-tests model pretrain}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=".:${PYTHONPATH:-}"
python3() { command "${PYTHON:-python3}" "$@"; }  # PYTHON=path/to/python picks another interpreter
python3 -c 'import torch; assert torch.cuda.is_available(), "no CUDA GPU visible"; print(torch.cuda.get_device_name())' || exit 1
status=0
for part in $parts; do
    case $part in
    tests)
        python3 -m pytest -q -p no:cacheprovider tests/model -k cuda -rs 2>&1 | tee "$out/cuda_tests.log" || status=1 ;;
    model)
        python3 benchmarks/model_speed.py --device cuda --dtype bf16 --sizes base --lengths 512,128 --tokens 32768 \
            --rounds 10 --contenders transformers,ours-sdpa,ours-flex,ours-eager,bert-sdpa,disentangled-flash,flashdeberta \
            --json "$out/model_speed_cuda.json" 2>&1 | tee "$out/model_speed_cuda.log" || status=1 ;;
    pretrain)
        python3 benchmarks/pretrain_speed.py --device cuda --dtype bf16 --size base --length 512 --batch 32 \
            --vocab-size 251000 --rounds 10 --json "$out/pretrain_speed_cuda.json" 2>&1 \
            | tee "$out/pretrain_speed_cuda.log" || status=1 ;;
    *)
        echo "unknown part '$part': choose tests, model or pretrain" >&2; exit 2 ;;
    esac
done
exit $status
