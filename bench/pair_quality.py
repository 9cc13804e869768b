"""Are online DPO's training pairs right? The annotator's verdict on the pairs `dpo --pairs-from` takes from scored
lists, and how well the reward model ranks the policy's own lists on the training requests.

    .venv/bin/python -m bench.pair_quality --taste reasons \
        --runs rm1=bench/out/rejection-reasons-rm1 rm2=bench/out/rescored-reasons-rm2

Online DPO (`python -m core train rejection --sample-only`, then `python -m core train dpo --pairs-from RUN`) learns
each training request's best finished list over its worst, as the reward model scored them. bench/best_of_n.py
measures the reward model on the held-out requests; this reads the very pairs a DPO run trained on:
1. Each run's scored lists (rejection.read_candidates with the run's own missing-EOS penalty, as DPO reads them) and
   the pairs rejection.best_over_worst makes of them: exactly dpo's --pairs-from. Each list's utility (step 2) once.
2. The taste's noiseless utility (bench/annotator.utility, not the product's parser) of both lists of each pair:
   right when the chosen list is ahead by at least the taste's tie band, wrong when behind by it, else a tie.
   Share right of the decided pairs with its 95 % Wilson interval (one pair per request, so they are independent).
   The same by quarter of the reward model's gap, closest calls first (what `dpo --pairs-top` leaves out).
3. Over all lists of each request, every pair the annotator decides: how often the reward model orders it the same
   way (bench/best_of_n.pair_agreement), 95 % bootstrap over requests. Beside it the mean utility of the chosen and
   the rejected lists and of all lists.
`--draws 4` adds each run cut to its first 4 lists of each request: whether more samples a request make better
pairs, on the very same lists. Runs over the same lists (a re-scoring run, `rejection --candidates-from RUN
--reward-model NEWER`) compare pair by pair on step 3's orders: right only with one reward model, only with the
other.
"""
from __future__ import annotations

import random
import statistics
import sys
from dataclasses import dataclass

from bench.annotator import TASTES, Taste, utility
from bench.best_of_n import bootstrap_interval, pair_agreement, paired_orders
from bench.loop import entry_point
from core.config import command_config, knob
from core.train.rejection import best_over_worst, read_candidates
from core.win_rate import wilson_interval


@dataclass
class PairQualityConfig:
    runs: list[str] = knob([], "LABEL=RUN for each finished rejection run (its scored lists); required")
    taste: str = knob("form", "the annotator's taste that judges the pairs", choices=tuple(TASTES))
    seed: int = knob(0, "the bootstrap's seed")
    resamples: int = knob(2000, "bootstrap resamples over requests")
    draws: list[int] = knob([], "also judge each run with only its first N lists of each request, for each N given "
                                "(draw d is seeded alike whatever n, so the first 4 of 8 are what n = 4 samples)")


def verdicts(pairs: list[dict], taste: Taste) -> dict:
    """Step 2: right / wrong / tie counts of the pairs under the taste's utility, the share right of the decided ones
    with its Wilson interval, and the mean utility of the chosen and of the rejected lists."""
    chosen = [utility(p["prompt"], p["chosen"], taste.name) for p in pairs]
    rejected = [utility(p["prompt"], p["rejected"], taste.name) for p in pairs]
    gaps = [c - r for c, r in zip(chosen, rejected)]
    right, wrong = sum(g >= taste.tie_band for g in gaps), sum(g <= -taste.tie_band for g in gaps)
    low, high = wilson_interval(right, right + wrong)
    return {"pairs": len(pairs), "right": right, "wrong": wrong, "ties": len(pairs) - right - wrong,
            "share_right": right / (right + wrong) if right + wrong else float("nan"), "low": low, "high": high,
            "chosen_utility": statistics.fmean(chosen), "rejected_utility": statistics.fmean(rejected),
            "by_gap_quarter": gap_quarters([p["gap"] for p in pairs], gaps, taste.tie_band)}


def gap_quarters(reward_gaps: list[float], utility_gaps: list[float], tie_band: float) -> list[dict]:
    """Step 2 by quarter of the reward model's gap, smallest first (the last quarter takes the remainder): the
    quarter's gap range and its right / wrong / tie counts."""
    rows = sorted(zip(reward_gaps, utility_gaps))
    size = len(rows) // 4
    quarters = [rows[i * size:(i + 1) * size] for i in range(3)] + [rows[3 * size:]]
    return [{"gap_low": q[0][0], "gap_high": q[-1][0], "right": sum(u >= tie_band for _, u in q),
             "wrong": sum(u <= -tie_band for _, u in q), "ties": sum(abs(u) < tie_band for _, u in q)}
            for q in quarters if q]


def with_utilities(per_request: list[list[dict]], taste: Taste) -> list[list[dict]]:
    """Each scored list with the taste's noiseless utility under "utility"."""
    return [[c | {"utility": utility(c["prompt"], c["text"], taste.name)} for c in group] for group in per_request]


def run_quality(per_request: list[list[dict]], taste: Taste, seed: int, resamples: int) -> dict:
    """Steps 1-3 for one run's scored lists ([request][draw] as with_utilities leaves them)."""
    utilities = [[c["utility"] for c in group] for group in per_request]
    orders = [pair_agreement([c["reward"] for c in group], u, taste.tie_band)
              for group, u in zip(per_request, utilities)]
    agree, decided = sum(a for a, _ in orders), sum(d for _, d in orders)
    low, high = bootstrap_interval(orders, random.Random(seed), resamples)
    return {"requests": len(per_request), **verdicts(best_over_worst(per_request), taste),
            "all_utility": statistics.fmean(u for group in utilities for u in group),
            "orders": {"agree": agree, "decided": decided, "rate": agree / decided if decided else float("nan"),
                       "low": low, "high": high}}


def paired_runs(first: list[list[dict]], second: list[list[dict]], taste: Taste) -> dict | None:
    """Step 3 pair by pair when both runs scored the same lists: right only with the first's scores, only with the
    second's; None when the lists differ."""
    texts = [[(c["prompt"], c["text"]) for c in group] for group in first]
    if texts != [[(c["prompt"], c["text"]) for c in group] for group in second]:
        return None
    counts = [paired_orders([c["reward"] for c in a], [c["reward"] for c in b], [c["utility"] for c in a],
                            taste.tie_band)
              for a, b in zip(first, second)]
    return {"only_first": sum(c[0] for c in counts), "only_second": sum(c[1] for c in counts),
            "decided": sum(c[2] for c in counts)}


def markdown(results: dict[str, dict]) -> str:
    lines = ["| scored lists | requests | best over worst: annotator agrees [95 % Wilson] (right-wrong-tie) | "
             "mean utility: chosen / rejected / all lists | reward model orders the lists' decided pairs right "
             "[95 % bootstrap] |", "|---|---|---|---|---|"]
    for label, r in results.items():
        o = r["orders"]
        lines.append(f"| {label} | {r['requests']} | {r['share_right']:.1%} [{r['low']:.1%}, {r['high']:.1%}] "
                     f"({r['right']}-{r['wrong']}-{r['ties']} of {r['pairs']}) | {r['chosen_utility']:+.2f} / "
                     f"{r['rejected_utility']:+.2f} / {r['all_utility']:+.2f} | {o['agree']}/{o['decided']} = "
                     f"{o['rate']:.1%} [{o['low']:.1%}, {o['high']:.1%}] |")
    lines += ["", "| scored lists | best over worst by quarter of the reward gap, closest first: gap range, "
              "right-wrong-tie |", "|---|---|"]
    lines += [f"| {label} | " + "; ".join(f"{q['gap_low']:.2f}-{q['gap_high']:.2f}: {q['right']}-{q['wrong']}-"
                                          f"{q['ties']}" for q in r["by_gap_quarter"]) + " |"
              for label, r in results.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    cfg = command_config(PairQualityConfig, sys.argv[1:] if argv is None else argv, prog="python -m bench.pair_quality",
                         description=__doc__.split("\n")[0])
    specs = dict(spec.split("=", 1) for spec in cfg.runs if "=" in spec)
    if not specs or len(specs) != len(cfg.runs):
        raise SystemExit("pass --runs LABEL=RUN ...: finished `python -m core train rejection` runs.")
    taste = Taste(name=cfg.taste)
    lists = {label: with_utilities(read_candidates(run), taste) for label, run in specs.items()}
    lists |= {f"{label}, first {n} lists": [group[:n] for group in groups]
              for label, groups in list(lists.items()) for n in cfg.draws}
    results = {label: run_quality(groups, taste, cfg.seed, cfg.resamples) for label, groups in lists.items()}
    print(markdown(results))
    labels = list(lists)
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            both = paired_runs(lists[a], lists[b], taste)
            if both is not None:
                results[f"{a} vs {b}"] = both
                print(f"the same lists, decided pairs ordered right only by {a}: {both['only_first']}, only by {b}: "
                      f"{both['only_second']} (of {both['decided']})")
    return results


if __name__ == "__main__":
    entry_point(main)
