#!/usr/bin/env bash
# The GPU path, every stage once, on a CUDA machine (bf16 where the GPU supports it; core.model.default_dtype):
#     bash bench/gpu_check.sh [OUT]          # OUT defaults to bench/out/gpu_check; ~8 minutes on one H100/H200
# Prepares the embedded model, then runs: a pair in the arena's generator, SFT, a reward model on scripted votes,
# PPO against it, and `core eval`. Each stage prints its wall time, its throughput and the GPU's peak memory
# (metrics.jsonl: memory/cuda_peak_mb; bench.pair_generation and core eval print theirs). Never run by the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/out/gpu_check}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
export RLHF_RUNS_DIR="$OUT/runs" TOKENIZERS_PARALLELISM=false
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible'; print('GPU:', torch.cuda.get_device_name(0), '| bf16:', torch.cuda.is_bf16_supported())"
$PY -m core prepare-model
stage() {  # name, then the command; prints wall seconds and the run's last throughput and peak-memory metrics
  local name=$1; shift
  local t0=$SECONDS
  "$@" > "$OUT/$name.log" 2>&1 || { echo "$name FAILED: see $OUT/$name.log"; tail -20 "$OUT/$name.log"; exit 1; }
  echo "$name: $((SECONDS - t0)) s"
  local run="$RLHF_RUNS_DIR/$name"
  if [ -f "$run/metrics.jsonl" ]; then
    $PY - "$run/metrics.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
keys = ("train_samples_per_second", "eps", "memory/cuda_peak_mb", "memory/peak_rss_mb")  # eps: PPO episodes/s
last = {k: r[k] for r in rows for k in keys if k in r}
print("   ", ", ".join(f"{k} {v:.1f}" for k, v in last.items()))
PYEOF
  fi
}
stage pair $PY -m bench.pair_generation --trials 3 --tokens 160 --device cuda
$PY - "$OUT/votes.jsonl" <<'PYEOF'
import sys
from tests.helpers import write_preference_votes
write_preference_votes(sys.argv[1], 400)
PYEOF
rm -f "$OUT/gpu.duckdb"*
$PY -m core import-votes "$OUT/votes.jsonl" --db "$OUT/gpu.duckdb" > /dev/null
stage sft $PY -m core train sft --max-steps 100 --batch-size 32 --eval-prompts 32 --output-dir "$RLHF_RUNS_DIR/sft"
stage reward $PY -m core train reward --db "$OUT/gpu.duckdb" --epochs 1 --batch-size 32 --output-dir "$RLHF_RUNS_DIR/reward"
stage ppo $PY -m core train ppo --reward-model "$RLHF_RUNS_DIR/reward" --sft-adapter "$RLHF_RUNS_DIR/sft" \
  --total-updates 10 --batch-size 64 --output-dir "$RLHF_RUNS_DIR/ppo"
stage eval $PY -m core eval --policy "$RLHF_RUNS_DIR/ppo" --against "$RLHF_RUNS_DIR/sft" \
  --reward-model "$RLHF_RUNS_DIR/reward" --out "$OUT/eval.json"
tail -5 "$OUT/eval.log"
echo "all stages ran on the GPU; logs in $OUT"
