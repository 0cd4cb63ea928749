#!/usr/bin/env bash
# The GPU suite (benchmarks/gpu_suite.py): every preset x {8, 16} frames x checkpointing off/on, bf16, on one
# GPU (clips/s, peak memory, MFU and HFU per cell), decode throughput per CPU core, and one end-to-end cell
# (Ray Data -> device -> step). Writes ~/.cache/vidpeft/bench/gpu_suite.json (printed; --out to choose),
# rewritten after every cell. Under 5 minutes on one GPU.
#   bash benchmarks/gpu_suite.sh                 # the full-size suite (needs CUDA)
#   bash benchmarks/gpu_suite.sh --tiny          # tiny models on CPU (what tests/benchmarks/test_gpu_suite.py runs)
#   PYTHON=.venv/bin/python bash benchmarks/gpu_suite.sh --batch 4 --out benchmarks/results/gpu_suite.json
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" benchmarks/gpu_suite.py "$@"
