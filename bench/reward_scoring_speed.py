"""How fast the reward model scores lists, the way it was scored before and the way RewardScorer scores now.

    .venv/bin/python -m bench.reward_scoring_speed --reward-model models/runs/reward-<ts> \\
        --samples bench/out/rejection-<name>/samples.jsonl --lists 192          # ~6 min on 2 cores

Scoring is what rejection sampling, RLOO's rewards, best-of-n and the leaderboard's mean scores wait on, and on a
CPU it is compute-bound (every token of request + list through the whole model), unlike sampling, which is bound by
reading the weights. Two exact changes in core.train.reward_model.RewardScorer: the LoRA adapter is folded into the
base weights once at load (PEFT's merge_and_unload), so each layer does one matmul instead of three; and lists go
through in order of length, so a batch pads to lists of similar length instead of to the longest of a random 16.

1. Read --lists real (request, list) pairs from a run's samples.jsonl (a rejection run's or any with prompt/text).
2. Side by side, twice each, alternating: before (the adapter unmerged, batches of 16 in the given order) and now
   (RewardScorer.from_folder: merged, sorted). Median seconds and lists per second of each.
3. How far apart: the largest |score difference|, and whether every request's best of its group (--group lists per
   request, consecutive in the file) is the same list.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from peft import PeftModel

from core.model import load_causal_lm, load_tokenizer
from core.runs import adapter_dir, read_adapter_config
from core.train.reward_model import RewardScorer


def unmerged_scorer(reward_model: str) -> RewardScorer:
    """The reward model as it was scored before: the PEFT adapter on top of the base, not merged."""
    base_name = read_adapter_config(reward_model, "SEQ_CLS", "python -m core train reward")["base_model_name_or_path"]
    tokenizer = load_tokenizer(base_name)
    base = load_causal_lm(base_name, torch.device("cpu"), dtype=torch.float32, head="reward")
    base.config.pad_token_id = tokenizer.pad_token_id
    return RewardScorer(PeftModel.from_pretrained(base, str(adapter_dir(reward_model))), tokenizer)


def in_given_order(scorer: RewardScorer, prompts: list[str], texts: list[str], batch: int = 16) -> list[float]:
    """Batches of `batch` consecutive lists, as before (the scorer sorts within one call, so one call per batch)."""
    return [s for i in range(0, len(texts), batch) for s in scorer.score(prompts[i:i + batch], texts[i:i + batch],
                                                                         batch_size=batch)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reward-model", required=True)
    ap.add_argument("--samples", required=True, help="a samples.jsonl with prompt and text per line")
    ap.add_argument("--lists", type=int, default=192)
    ap.add_argument("--group", type=int, default=4, help="lists per request, consecutive in the file")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(args.samples)][:args.lists]
    prompts, texts = [r["prompt"] for r in rows], [r["text"] for r in rows]
    before, now = unmerged_scorer(args.reward_model), RewardScorer.from_folder(args.reward_model, device="cpu")
    ways = {"before: unmerged, given order": lambda: in_given_order(before, prompts, texts),
            "now: merged, sorted by length": lambda: now.score(prompts, texts)}
    seconds, scores = {name: [] for name in ways}, {}
    for _ in range(args.repeats):
        for name, way in ways.items():
            start = time.perf_counter()
            scores[name] = np.array(way())
            seconds[name].append(time.perf_counter() - start)
    print(f"reward scoring of {len(rows)} lists, {torch.get_num_threads()} threads, median of {args.repeats}:")
    for name, secs in seconds.items():
        med = statistics.median(secs)
        print(f"  {name:32s} {med:7.1f} s  {len(rows) / med:6.2f} lists/s")
    old, new = scores.values()
    first, second = (statistics.median(s) for s in seconds.values())
    print(f"  speed-up {first / second:.2f}x; largest |score difference| {np.abs(old - new).max():.1e}")
    groups = len(rows) // args.group
    same = (old[:groups * args.group].reshape(groups, -1).argmax(1)
            == new[:groups * args.group].reshape(groups, -1).argmax(1))
    print(f"  same best list of {args.group}: {int(same.sum())}/{groups} requests")


if __name__ == "__main__":
    main()
