#!/usr/bin/env bash
# The GPU path, every stage once, on a CUDA machine (bf16 where the GPU supports it):
#     bash bench/gpu_check.sh [--out bench/out/gpu_check]     # ~8 minutes on one H200
# Prepares the embedded model, then runs a pair in the arena's generator, SFT, a reward model on scripted votes, PPO
# against it, `core eval`, DPO, RLOO and a decoding probe (eager vs CUDA graphs), and prints each stage's wall time,
# throughput and peak GPU memory (bench/gpu_check.py says how; its --help lists the flags). The tests run its
# commands' parsing, never the check itself.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PY:-.venv/bin/python}" -m bench.gpu_check "$@"
