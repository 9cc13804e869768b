#!/usr/bin/env bash
# ontopic round 1 (fresh votes, seed 5) stopped after its reward model, then Next round's online DPO by hand with
# 8 lists a request, then round 2 on Next round's plan (8 lists by default), then rejudge with 4 draws
set -uo pipefail
cd "$(dirname "$0")/../.."  # the repository root (as run: cd /work/main)
PY=.venv/bin/python
OUT=bench/out/loop-ontopic-s5
date
setsid $PY bench/loop.py --taste ontopic --own-requests 0.6 --seed 5 --out $OUT \
  --sft-args "--eval-prompts 0 --seed-lists off" &
LOOP=$!
while [ ! -f $OUT/logs/ppo.log ]; do
  if ! kill -0 $LOOP 2>/dev/null; then echo "loop exited early"; exit 1; fi
  sleep 10
done
kill -- -$LOOP; sleep 5; kill -9 -- -$LOOP 2>/dev/null
echo "loop stopped at its PPO stage"; date
SFT=$(ls -d models/runs/sft-*-loop | tail -1); RM=$(ls -d models/runs/reward-*-loop | tail -1)
rm -rf $(ls -d models/runs/ppo-*-loop 2>/dev/null)
echo "SFT=$SFT RM=$RM"
set -e
$PY -m core train rejection --preset quick --sft-adapter $SFT --reward-model $RM --sample-only true --num-samples 8 \
  --max-prompts 0 --output-dir models/runs/rejection-ontopic-s5-n8
date
$PY -m core train dpo --preset quick --pairs-from models/runs/rejection-ontopic-s5-n8 --epochs 1 --max-steps -1 \
  --batch-size 8 --learning-rate 2e-4 --sft-weight 1 --output-dir models/runs/dpo-ontopic-s5-n8
date
cat > $OUT/loop.json <<JSON
{
  "note": "written by hand (2026-12-07): bench/loop.py was stopped when it reached PPO; round 1's tuned policy ('ppo' here) is the online DPO on 8 lists a request trained from this loop's SFT and reward model (bench/out/ontopic_n8.sh)",
  "config": {"taste": "ontopic", "own_requests": 0.6, "seed": 5},
  "runs": {"sft": "$SFT", "reward": "$RM", "ppo": "models/runs/dpo-ontopic-s5-n8"},
  "stored": {"votes": 300}
}
JSON
$PY -m bench.rejudge --taste ontopic --reference sft=$SFT --policies r1=models/runs/dpo-ontopic-s5-n8 \
  --out bench/out/rejudge-ontopic-s5-r1
date
echo ROUND1 DONE
$PY -m bench.rounds --taste ontopic --own-requests 0.6 --round1 $OUT --out bench/out/rounds-ontopic-s5-n8 \
  --methods online-dpo
date
echo ROUNDS DONE
R2=$($PY -c "import json;print(json.load(open('bench/out/rounds-ontopic-s5-n8/rounds.json'))['runs']['online-dpo'])")
$PY -m bench.rejudge --taste ontopic --reference sft=$SFT --policies r2=$R2 r1=models/runs/dpo-ontopic-s5-n8 \
  --out bench/out/rejudge-ontopic-s5-r2
date
echo ALL DONE
