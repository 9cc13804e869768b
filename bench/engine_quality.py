"""Do the fast sampling engines write lists as good as fp32's? Several draws per held-out request, paired by request.

    .venv/bin/python -m bench.engine_quality --reward-model RUN [--draws 4] [--engines plain,llamacpp] [--prompts 72]

One draw of 72 lists per engine (bench/sampling_speed.py) gives reward-model means whose intervals are ~+-0.38 wide,
too wide to see a small loss from quantised weights. Here:
1. Each engine answers the held-out requests --draws times (seeds 0..draws-1), sampled as `python -m core eval`
   samples them (core.judge.evaluate.sample).
2. The reward model scores every list; per request, the mean over its draws.
3. Per engine: well-formed lists (95 % Wilson over all lists), the mean score (95 % t over requests); against the
   first engine, the mean per-request difference (95 % t over requests, paired: the request's difficulty cancels).
Prints a table and, last, one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from bench.sampling_speed import mean_interval
from core.collect.library import load_prompts
from core.engine import ENGINES
from core.judge.evaluate import EvalConfig, proportion, sample
from core.lists import parse_list
from core.model import load
from core.train.reward_model import RewardScorer


def per_request_means(scores: list[list[float]]) -> list[float]:
    """(draws, requests) scores -> each request's mean over the draws."""
    return [statistics.fmean(column) for column in zip(*scores)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reward-model", required=True, help="reward-model run that scores the lists")
    parser.add_argument("--engines", default="plain,llamacpp", help="engines to compare; the first is the reference")
    parser.add_argument("--draws", type=int, default=4, help="answers per request and engine")
    parser.add_argument("--prompts", type=int, default=72, help="held-out requests (at most 72)")
    parser.add_argument("--base-model", default=None)
    args = parser.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    bad = [e for e in engines if e not in ENGINES or e == "auto"]
    if bad or len(engines) < 2 or args.draws < 1:
        parser.error(f"--engines takes two or more of plain, int8, llamacpp (not {bad}); --draws at least 1")
    requests = [p.text for p in load_prompts(split="eval")][:args.prompts]
    scorer = RewardScorer.from_folder(args.reward_model, device="cpu")
    result = {"bench": "engine_quality", "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
              "reward_model": args.reward_model, "draws": args.draws, "prompts": len(requests), "engines": {}}
    means = {}
    for engine in engines:
        loaded, started = load(args.base_model, "cpu", engine), time.perf_counter()
        texts = [[c.text for c in sample(loaded, {"base": "base"}, requests, EvalConfig(policy="base", seed=d))["base"]]
                 for d in range(args.draws)]  # (draws, requests)
        seconds = time.perf_counter() - started
        means[engine] = per_request_means([scorer.score(requests, t) for t in texts])
        ok = sum(parse_list(t).well_formed for draw in texts for t in draw)
        result["engines"][engine] = {"seconds_per_draw": seconds / args.draws,
                                     "well_formed": proportion(ok, len(requests) * args.draws),
                                     "rm_score": mean_interval(means[engine])}
    reference = engines[0]
    for engine in engines[1:]:
        result["engines"][engine]["rm_minus_" + reference] = mean_interval(
            [a - b for a, b in zip(means[engine], means[reference])])
    for engine, row in result["engines"].items():
        wf, rm = row["well_formed"], row["rm_score"]
        diff = row.get("rm_minus_" + reference)
        versus = f"; minus {reference} {diff['mean']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}]" if diff else ""
        print(f"{engine:9} {row['seconds_per_draw']:5.0f} s a draw, well-formed {wf['hits']}/{wf['n']} "
              f"[{wf['low']:.2f}, {wf['high']:.2f}], RM {rm['mean']:.3f} [{rm['low']:.3f}, {rm['high']:.3f}]{versus}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
