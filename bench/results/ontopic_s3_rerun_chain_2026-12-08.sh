#!/usr/bin/env bash
# ontopic round 1 again with seed 3 (the loop whose reward model read 0.891 held out on 2026-12-08), stopped after
# its reward model; then Next round's online DPO (8 lists a request, RPO) from its SFT with its reward model, then
# rejudge with 4 draws against SFT. Question (bench/README finding 27): do 8 lists carry `ontopic` past 65 % over SFT
# when round 1's reward model is strong?
set -uo pipefail
cd "$(dirname "$0")/../.."  # the repository root
PY=.venv/bin/python
OUT=bench/out/loop-ontopic-s3
date
setsid $PY bench/loop.py --taste ontopic --own-requests 0.6 --seed 3 --out $OUT &
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
grep -h '"eval/accuracy"\|eval_accuracy' $RM/metrics.jsonl | tail -2
set -e
$PY -m core train rejection --preset quick --sft-adapter $SFT --reward-model $RM --sample-only true --num-samples 8 \
  --max-prompts 0 --output-dir models/runs/rejection-ontopic-s3-n8
date
$PY -m core train dpo --preset quick --pairs-from models/runs/rejection-ontopic-s3-n8 --epochs 1 --max-steps -1 \
  --batch-size 8 --learning-rate 2e-4 --sft-weight 1 --output-dir models/runs/dpo-ontopic-s3-n8
date
$PY -m bench.rejudge --taste ontopic --reference sft=$SFT --policies r1=models/runs/dpo-ontopic-s3-n8 \
  --out bench/out/rejudge-ontopic-s3-r1
date
echo ALL DONE

# As run, the DPO step above stopped at once (no --db: it reads the held-out votes from the default data/rlhf.duckdb,
# which this checkout lacked); the last two steps were run again as bench/out/chain2.sh:
# # the chain's last two steps again: DPO with --db (its held-out votes are the loop's), then rejudge
# set -euo pipefail
# cd "$(dirname "$0")/../.."
# PY=.venv/bin/python
# SFT=models/runs/sft-20261208-031137-loop
# date
# $PY -m core train dpo --preset quick --pairs-from models/runs/rejection-ontopic-s3-n8 --epochs 1 --max-steps -1 \
#   --batch-size 8 --learning-rate 2e-4 --sft-weight 1 --db bench/out/loop-ontopic-s3/loop.duckdb \
#   --output-dir models/runs/dpo-ontopic-s3-n8
# date
# $PY -m bench.rejudge --taste ontopic --reference sft=$SFT --policies r1=models/runs/dpo-ontopic-s3-n8 \
#   --out bench/out/rejudge-ontopic-s3-r1
# date
# echo ALL DONE
