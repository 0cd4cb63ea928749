#!/usr/bin/env bash
# The GPU suite (benchmarks/gpu_suite.py): every preset x {8, 16} frames x checkpointing off/on, bf16, on one
# GPU, plus decode throughput per CPU core; writes benchmarks/results/gpu_suite.json. Under 5 minutes on one GPU.
#   bash benchmarks/gpu_suite.sh                 # the full-size suite (needs CUDA)
#   bash benchmarks/gpu_suite.sh --tiny          # tiny models on CPU (what tests/benchmarks/test_gpu_suite.py runs)
#   PYTHON=.venv/bin/python bash benchmarks/gpu_suite.sh --batch 4
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" benchmarks/gpu_suite.py "$@"
