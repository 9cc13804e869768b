"""Can the reward model tell the policy's own lists apart? Best-of-n under the reward model against the annotator's
own best-of-n, on the held-out requests.

    .venv/bin/python -m bench.best_of_n --loop bench/out/rounds-terse/round1 --n 8      # ~10-20 min on 2 cores
    .venv/bin/python -m bench.best_of_n --loop LOOP --base-model TINY --n 2 --eval-prompts 4 \\
        --max-new-tokens 8                                                       # the smoke test (tests/test_loop.py)
    .venv/bin/python -m bench.best_of_n --loop LOOP --out OUT --report-only      # re-read a finished run's samples
    .venv/bin/python -m bench.best_of_n --loop LOOP --out OUT --samples-from BON --reward-model RM  # another reward
                                                 # model on a finished run's samples: on-policy accuracy in minutes
    .venv/bin/python -m bench.best_of_n --loop LOOP --out OUT --report-only --paired-with OUT2   # two such runs,
                                                 # pair by pair

In every loop so far PPO, DPO and RLOO moved the annotator's verdict over the SFT policy they started from by a few
points (45-62 %, goal 65 %), while SFT itself beat the base 75-94 % of the time. The reward model's held-out accuracy
(0.67-0.84) is measured on arena votes: mostly pairs of base-model lists that differ in form. What a reinforcement
stage needs is different: to rank the policy's *own* samples, which differ less. Best-of-n sampling under the reward
model asks that directly and needs no training. It is the reference optimiser of reward-model over-optimisation
studies (Gao, Schulman and Hilton 2023), with a KL from the policy of at most log n - (n - 1) / n nats (Stiennon et al.
2020), the range PPO's runs here reach (0.2-2.7 nats per list). So it separates "the reward model cannot tell what
the annotator wants among these lists" from "the optimiser does not get there". The annotator's own best-of-n (its
noiseless utility picks) is the most any reranker of these samples could get.

1. Read the loop (bench/loop.py --out): its taste, its SFT run (or --policy) and its reward model (or --reward-model).
2. The policy answers each held-out request n + 1 times, sampled as `python -m core eval` samples them, seeds
   seed..seed+n: n candidates and one reference answer independent of them.
3. The reward model scores every candidate; the taste's noiseless utility (bench/annotator.utility) too. With
   --samples-from, steps 2-3 take a finished run's lists and score them with --reward-model: reward models
   trained on different votes or settings, compared on the very same samples.
4. For k = 1, 2, 4 ... n: the reward model's pick among the first k candidates and the annotator's own pick. The
   annotator, with its usual noise, judges each pick against the reference (ties and "both bad" half; 95 % Wilson);
   beside them each pick's mean utility. k = 1 is one sample against another: about 50 %, the noise floor.
5. On-policy accuracy: among each request's n candidates, every pair the annotator would decide (utility gap at least
   its tie band): how often the reward model orders it the same way. Pairs of one request are not independent, so
   the 95 % interval is a bootstrap over requests. Beside it, the reward model's held-out accuracy on arena votes.
   With --paired-with, the same pairs under another run's reward model: right only with each, and the difference.
6. Report: best_of_n.json and best_of_n.md in --out (default: the loop's folder).
"""
from __future__ import annotations

import json
import math
import random
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.annotator import utility
from bench.loop import entry_point, finished_loop, held_out_answers, outcomes
from bench.loop_report import mean_se, win_cell
from core.config import check, command_config, knob
from core.runs import read_json
from core.train.reward_model import RewardScorer
from core.win_rate import win_rate


@dataclass
class BestOfNConfig:
    loop: str = knob("", "a finished bench/loop.py --out folder: its taste, SFT and reward-model runs; required")
    out: str = knob("", "folder for the report; empty: the loop's folder")
    policy: str = knob("sft", "whose samples: sft or ppo (the loop's runs), base, or a run folder")
    reward_model: str = knob("", "a reward run that picks; empty: the loop's")
    n: int = knob(8, "candidates per request (the largest k)")
    base_model: str = knob("", "base model; empty: the loop's (the embedded SmolLM2-135M-Instruct)")
    eval_prompts: int = knob(72, "held-out requests (at most 72)")
    max_new_tokens: int = knob(160, "token budget per list")
    seed: int = knob(0, "first sampling seed; also the annotator's and the bootstrap's")
    resamples: int = knob(2000, "bootstrap resamples for the on-policy accuracy's interval")
    report_only: bool = knob(False, "rewrite the report from --out's best_of_n.json (its samples and scores); "
                                    "sample nothing")
    samples_from: str = knob("", "a finished best_of_n --out folder: score its samples (policy, candidates and "
                                 "references) with --reward-model instead of sampling; compares reward models on "
                                 "the same lists")
    paired_with: str = knob("", "another best_of_n --out folder scored on the very same lists (--samples-from): "
                                "which pairs each reward model alone orders right, and the difference's interval")

    def __post_init__(self):
        check(self.n >= 2, "--n must be at least 2 (best of one is the policy itself).")
        check(self.eval_prompts > 0 and self.max_new_tokens > 0, "eval-prompts and max-new-tokens must be positive.")
        check(self.resamples > 0, "--resamples must be positive.")
        check(not (self.report_only and self.samples_from), "--report-only and --samples-from exclude each other: "
                                                             "--samples-from already rescores a saved run.")


def ks(n: int) -> list[int]:
    """1, 2, 4 ... up to n, and n itself."""
    return sorted({2 ** i for i in range(int(math.log2(n)) + 1)} | {n})


def kl_bound(k: int) -> float:
    """Best-of-k's KL from the policy it samples, at most log k - (k - 1) / k nats (Stiennon et al. 2020)."""
    return math.log(k) - (k - 1) / k


def pick(values: list[float], k: int) -> int:
    """The index of the highest of the first k values (the first of equals)."""
    return max(range(k), key=lambda i: (values[i], -i))


def decided_pairs(utilities: list[float], tie_band: float):
    """(i, j, utility gap i - j) for each pair of one request's candidates that the annotator decides (gap at least
    `tie_band`)."""
    for i in range(len(utilities)):
        for j in range(i + 1, len(utilities)):
            if abs(utilities[i] - utilities[j]) >= tie_band:
                yield i, j, utilities[i] - utilities[j]


def pair_agreement(scores: list[float], utilities: list[float], tie_band: float) -> tuple[int, int]:
    """(agreeing, decided) over the pairs of one request's candidates that the annotator decides (utility gap at
    least `tie_band`): agreeing when the reward model's scores order the pair the same way (equal scores do not)."""
    agree = [(scores[i] - scores[j]) * gap > 0 for i, j, gap in decided_pairs(utilities, tie_band)]
    return sum(agree), len(agree)


def paired_orders(scores: list[float], other: list[float], utilities: list[float],
                  tie_band: float) -> tuple[int, int, int]:
    """(right only with `scores`, right only with `other`, decided) over one request's pairs the annotator decides:
    two reward models compared pair by pair on the same candidates."""
    right = [((scores[i] - scores[j]) * gap > 0, (other[i] - other[j]) * gap > 0)
             for i, j, gap in decided_pairs(utilities, tie_band)]
    return sum(a and not b for a, b in right), sum(b and not a for a, b in right), len(right)


def paired(samples: list[dict], other: list[dict], taste, seed: int, resamples: int) -> dict:
    """This run's reward model against another's on the same candidates: right only here / only there, and the
    difference in on-policy accuracy (here minus there) with a bootstrap over requests."""
    if [s["candidates"] for s in samples] != [s["candidates"] for s in other]:
        raise SystemExit("--paired-with: that run scored other lists; pass a --samples-from run of the same lists.")
    per_request = [paired_orders(s["rm_scores"], o["rm_scores"], s["utilities"], taste.tie_band)
                   for s, o in zip(samples, other)]
    here, there, decided = (sum(r[k] for r in per_request) for k in range(3))
    low, high = bootstrap_interval([(h - t, d) for h, t, d in per_request], random.Random(seed), resamples)
    return {"only_here": here, "only_there": there, "decided": decided,
            "difference": (here - there) / decided if decided else math.nan, "low": low, "high": high}


def bootstrap_interval(per_request: list[tuple[int, int]], rng: random.Random, resamples: int) -> tuple[float, float]:
    """95 % percentile interval of sum(agree) / sum(decided), resampling requests with replacement (bench/rejudge.py
    passes (points, 1) per request: the interval of a mean)."""
    rates = []
    for _ in range(resamples):
        draw = [per_request[rng.randrange(len(per_request))] for _ in per_request]
        decided = sum(d for _, d in draw)
        if decided:
            rates.append(sum(a for a, _ in draw) / decided)
    rates.sort()
    if not rates:
        return math.nan, math.nan
    return rates[int(0.025 * (len(rates) - 1))], rates[int(0.975 * (len(rates) - 1))]


def policy_run(spec: str, runs: dict) -> str:
    """A run folder (or "base") for --policy: the loop's sft or ppo run, base, or a folder given as is."""
    return str(runs[spec]) if spec in ("sft", "ppo") else spec


def answers(policy: str, base_model: str, prompts: int, draws: int, max_new_tokens: int,
            seed: int) -> tuple[list[str], list[list[str]]]:
    """Step 2: the held-out requests and `draws` answers to each, (requests, draws): draw d is one `core eval`
    sampling with seed + d (bench/loop.held_out_answers, one label per draw)."""
    labels = [f"draw{d}" for d in range(draws)]
    requests, drawn = held_out_answers({label: policy for label in labels}, base_model, prompts, max_new_tokens, seed,
                                       seeds={label: seed + d for d, label in enumerate(labels)})
    return requests, [[drawn[label][r] for label in labels] for r in range(len(requests))]


def scored(requests: list[str], drawn: list[list[str]], n: int, reward_dir: Path) -> list[dict]:
    """Step 3: the reward model scores each request's first n answers; the last is the reference."""
    flat = RewardScorer.from_folder(reward_dir).score([r for r in requests for _ in range(n)],
                                                      [t for d in drawn for t in d[:n]])
    return [{"prompt": r, "candidates": d[:n], "rm_scores": flat[i * n:(i + 1) * n], "reference": d[n]}
            for i, (r, d) in enumerate(zip(requests, drawn))]


def best_of(requests, candidates, reference, scores, utilities, taste, n: int, seed: int) -> list[dict]:
    """Step 4: one row per k, the reward model's and the annotator's pick judged against the reference."""
    rows = []
    for k in ks(n):
        row = {"k": k, "kl_bound": kl_bound(k)}
        for m, (who, values) in enumerate((("rm", scores), ("annotator", utilities))):
            chosen = [c[pick(v, k)] for c, v in zip(candidates, values)]
            row[f"{who}_vs_reference"] = win_rate(outcomes(requests, chosen, reference,
                                                           random.Random(seed + 10 * k + m), taste)).as_dict()
            row[f"{who}_utility"] = mean_se([u[pick(v, k)] for u, v in zip(utilities, values)])
        rows.append(row)
    return rows


def markdown(result: dict) -> str:
    acc, held = result["on_policy"], result["held_out"]
    lines = [f"Best-of-n of `{result['policy']}` on {result['prompts']} held-out requests, judged by the "
             f"`{result['taste']}` annotator against an independent answer of the same policy (ties half, 95 % "
             f"Wilson). Reference answer's mean utility {result['reference_utility']['mean']:+.2f} ± "
             f"{result['reference_utility']['se']:.2f}; over all {result['config']['n']} candidates (the policy's "
             f"utility, less noisy than one sample) {result['policy_utility']['mean']:+.2f} ± "
             f"{result['policy_utility']['se']:.2f}.", "",
             "| k | KL bound (nats) | reward model's pick vs reference (W-L-T) | its mean utility | "
             "annotator's own pick vs reference | its mean utility |", "|---|---|---|---|---|---|"]
    for row in result["best_of"]:
        lines.append(f"| {row['k']} | {row['kl_bound']:.2f} | {win_cell(row['rm_vs_reference'])} | "
                     f"{row['rm_utility']['mean']:+.2f} ± {row['rm_utility']['se']:.2f} | "
                     f"{win_cell(row['annotator_vs_reference'])} | {row['annotator_utility']['mean']:+.2f} ± "
                     f"{row['annotator_utility']['se']:.2f} |")
    lines += ["", f"On-policy accuracy: the reward model orders {acc['agree']}/{acc['decided']} = {acc['rate']:.1%} "
              f"[{acc['low']:.1%}, {acc['high']:.1%}] (bootstrap over requests) of the pairs of candidates the "
              f"annotator decides; its held-out accuracy on arena votes: "
              + (f"{held['correct']}/{held['pairs']} = {held['accuracy']:.1%}." if held.get("pairs") else "none."),
              f"Spread of the annotator's utility among one request's {result['config']['n']} candidates (mean "
              f"standard deviation): {result['utility_spread']:.2f}."]
    if pair := result.get("paired"):
        lines += ["", f"Against the reward model of {pair['with']} on the same {pair['decided']} pairs: right only "
                      f"here {pair['only_here']}, only there {pair['only_there']}; here minus there "
                      f"{pair['difference']:+.1%} [{pair['low']:+.1%}, {pair['high']:+.1%}] (bootstrap over requests)."]
    return "\n".join(lines) + "\n"


def analyse(samples: list[dict], taste, n: int, seed: int, resamples: int) -> dict:
    """Steps 3 (the annotator's side) to 5 on sampled, scored candidates: [{prompt, candidates, rm_scores,
    reference}] per request. The taste's utility is recomputed from the texts, so a saved run re-reads alike."""
    requests = [s["prompt"] for s in samples]
    candidates, scores = [s["candidates"] for s in samples], [s["rm_scores"] for s in samples]  # (requests, n)
    reference = [s["reference"] for s in samples]
    utilities = [[utility(r, t, taste.name) for t in c] for r, c in zip(requests, candidates)]  # (requests, n)
    # 4. best-of-k for both pickers
    rows = best_of(requests, candidates, reference, scores, utilities, taste, n, seed)
    # 5. on-policy accuracy
    per_request = [pair_agreement(s, u, taste.tie_band) for s, u in zip(scores, utilities)]
    agree, decided = sum(a for a, _ in per_request), sum(d for _, d in per_request)
    low, high = bootstrap_interval(per_request, random.Random(seed), resamples)
    return {"prompts": len(requests), "best_of": rows,
            "on_policy": {"agree": agree, "decided": decided, "rate": agree / decided if decided else math.nan,
                          "low": low, "high": high},
            "reference_utility": mean_se([utility(r, t, taste.name) for r, t in zip(requests, reference)]),
            "policy_utility": mean_se([statistics.fmean(u) for u in utilities]),
            "utility_spread": statistics.fmean(statistics.pstdev(u) for u in utilities),
            "samples": [{**s, "utilities": u} for s, u in zip(samples, utilities)]}


def main(argv: list[str] | None = None) -> dict:
    cfg = command_config(BestOfNConfig, sys.argv[1:] if argv is None else argv, prog="python -m bench.best_of_n",
                         description=__doc__.split("\n")[0])
    # 1. the loop, its taste and runs
    done = finished_loop(cfg.loop, cfg.out, cfg.base_model)
    taste, policy = done.taste, policy_run(cfg.policy, done.report["runs"])
    reward_dir = Path(cfg.reward_model) if cfg.reward_model else done.run("reward")
    if cfg.report_only:  # the saved run's samples, policy and reward model; its settings where they matter
        saved = read_json(done.out / "best_of_n.json")
        if not saved.get("samples"):
            raise SystemExit(f"--report-only: {done.out / 'best_of_n.json'} holds no samples; run without it first.")
        samples, policy, reward_dir = saved["samples"], saved["policy"], Path(saved["reward_model"])
        cfg.n, cfg.seed, cfg.resamples = len(samples[0]["candidates"]), saved["config"]["seed"], \
            saved["config"]["resamples"]
    elif cfg.samples_from:  # another run's lists, this reward model's scores
        saved = read_json(Path(cfg.samples_from) / "best_of_n.json")
        if not saved.get("samples"):
            raise SystemExit(f"--samples-from: {Path(cfg.samples_from) / 'best_of_n.json'} holds no samples.")
        # the saved run's seed too, so its annotator judges the picks with the same draws
        policy, cfg.n, cfg.seed = saved["policy"], len(saved["samples"][0]["candidates"]), saved["config"]["seed"]
        samples = scored([s["prompt"] for s in saved["samples"]],
                         [[*s["candidates"], s["reference"]] for s in saved["samples"]], cfg.n, reward_dir)
    else:
        # 2. n candidates and one reference answer per request
        requests, drawn = answers(policy, done.base_model, cfg.eval_prompts, cfg.n + 1, cfg.max_new_tokens, cfg.seed)
        # 3. the reward model scores every candidate
        samples = scored(requests, drawn, cfg.n, reward_dir)
    held = read_json(reward_dir / "calibration.json")
    result = {"config": asdict(cfg), "loop": str(done.folder), "taste": taste.name, "policy": policy,
              "reward_model": str(reward_dir), "held_out": {k: held.get(k) for k in ("pairs", "correct", "accuracy")},
              **analyse(samples, taste, cfg.n, cfg.seed, cfg.resamples)}
    if cfg.paired_with:
        other = read_json(Path(cfg.paired_with) / "best_of_n.json")
        result["paired"] = {"with": other.get("reward_model"),
                            **paired(result["samples"], other.get("samples") or [], taste, cfg.seed, cfg.resamples)}
    # 6. the report
    (done.out / "best_of_n.json").write_text(json.dumps(result, indent=2) + "\n")
    (done.out / "best_of_n.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    entry_point(main)
