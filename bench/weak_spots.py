"""Do a policy's votes differ by category? What the arena's `--focus weak` has to work with, on a loop's votes.

    .venv/bin/python -m bench.weak_spots --db bench/out/loop-ontopic/loop.duckdb [--policy NAME] \\
        --out bench/out/weak-spots-ontopic                                       # seconds: no model is loaded
    .venv/bin/python -m bench.weak_spots --samples-from bench/results/rejudge_....json --taste ontopic \\
        --out bench/out/weak-spots-ontopic-r2                                    # a tuned policy against SFT

`--focus weak` (core/collect/focus.py) serves more requests from the categories where the arena's challenger loses
or gets "both bad". That can only steer votes somewhere useful when the categories differ beyond the noise of a
few dozen votes each; this measures whether they do, on votes already cast (`--db`), or on a tuned policy's lists
against its reference's (`--samples-from`, bench/rejudge.py's report: every draw of each held-out request, 6 a
category, judged by the taste without the annotator's noise, `bench.annotator.noiseless_choice`).

1. The weak-spots table of `--policy` (default: the arena's challenger as the database last said; with
   --samples-from, the report's only policy) over the library's categories: votes won, lost, tied and both bad,
   the score (won + tied / 2) / votes with its 95 % Wilson interval, and the focus shares it gives.
2. Homogeneity: Pearson's chi-square test on the (category x {won, lost, tied, both bad}) counts, categories
   without votes and outcomes no vote had left out: χ² = Σ (O − E)² / E with E = row total x column total / n,
   (rows − 1)(columns − 1) degrees of freedom, no continuity correction; p from the regularised upper incomplete
   gamma function (torch.special.gammaincc: the project does not install scipy). p < 0.05 says the categories'
   outcomes differ beyond chance. Requests without a library category are left out. With --samples-from a
   request's draws are not independent votes, so a permutation test also reports p: the 72 requests' categories
   shuffled among them, each request's draws kept together (`permutation_p`, 2000 shuffles).
3. The spread the focus acts on: the lowest and highest focus share, against the even share 1 / 12.
Report: weak_spots.json and .md in --out.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.annotator import Taste, noiseless_choice, utility
from bench.loop import entry_point
from bench.tastes import TASTES
from core.collect.focus import (
    OUTCOMES,
    TYPED,
    library_categories,
    outcomes,
    readable,
    weak_spots,
    weak_spots_in,
)
from core.collect.library import load_prompts
from core.config import check, command_config, knob
from core.store.database import Store


@dataclass
class WeakSpotsConfig:
    db: str = knob("", "the loop's database (its --out/loop.duckdb); or --samples-from")
    policy: str = knob("", "the policy as the votes name it; empty: the arena's challenger as the database last said."
                           " With --samples-from: the report's label of one policy (empty: its first)")
    samples_from: str = knob("", "bench/rejudge.py's report (rejudge.json) of one policy against a reference: judge "
                                 "its lists by --taste instead of reading votes")
    taste: str = knob("ontopic", "the taste that judges --samples-from's lists", choices=tuple(TASTES))
    out: str = knob("bench/out/weak-spots", "folder for weak_spots.json and .md")

    def __post_init__(self):
        check(bool(self.db) != bool(self.samples_from), "pass --db (a loop's database) or --samples-from (a "
              "rejudge.json), one of the two.")
        source = self.db or self.samples_from
        check(Path(source).is_file(), f"no file at {source}: pass an existing loop.duckdb or rejudge.json.")


def chi_square(observed: np.ndarray) -> tuple[float, int]:
    """Pearson's χ² of an (rows, columns) table of counts whose rows and columns all have totals, and its dof."""
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    return float(((observed - expected) ** 2 / expected).sum()), (observed.shape[0] - 1) * (observed.shape[1] - 1)


def homogeneity(table) -> dict:
    """Step 2: chi-square test of the library categories' outcome counts (categories with votes only)."""
    counts = table.drop(TYPED, errors="ignore")
    counts = counts.loc[counts.votes > 0, OUTCOMES]
    counts = counts.loc[:, counts.sum() > 0]
    if len(counts) < 2 or counts.shape[1] < 2:
        return {"chi2": None, "dof": None, "p": None, "categories": len(counts)}
    chi2, dof = chi_square(counts.to_numpy(dtype=float))
    half_dof, half_chi2 = (torch.tensor(v / 2, dtype=torch.float64) for v in (dof, chi2))
    p = float(torch.special.gammaincc(half_dof, half_chi2))  # P(χ²_dof > chi2)
    return {"chi2": round(chi2, 3), "dof": dof, "p": round(p, 4), "categories": len(counts)}


def permutation_p(votes: pd.DataFrame, policy: str, rounds: int = 2000, seed: int = 0) -> float:
    """Step 2 when one request has several votes (--samples-from: its draws), which the χ² test takes for
    independent: the requests' categories shuffled among the requests, each request's votes kept together, and
    p = (1 + #{χ² of a shuffle >= the observed χ²}) / (1 + rounds)."""
    per_request = pd.crosstab(votes.request, outcomes(votes, policy)).reindex(columns=OUTCOMES, fill_value=0)
    per_request = per_request.loc[:, per_request.sum() > 0].to_numpy(dtype=float)  # (requests, outcomes)
    codes = pd.factorize(votes.groupby("request").category.first().sort_index())[0]  # crosstab sorts its rows too

    def chi2_of(labels: np.ndarray) -> float:
        counts = np.zeros((codes.max() + 1, per_request.shape[1]))
        np.add.at(counts, labels, per_request)  # (categories, outcomes)
        return chi_square(counts)[0]

    observed, rng = chi2_of(codes), np.random.default_rng(seed)
    hits = sum(chi2_of(rng.permutation(codes)) >= observed - 1e-9 for _ in range(rounds))
    return (1 + hits) / (1 + rounds)


def judged_samples(report: dict, taste: Taste, label: str = "") -> tuple[pd.DataFrame, str]:
    """A rejudge report's lists of the policy `label` (empty: its first) as votes (left: the policy, right: the
    reference, each draw a vote, the taste's own noiseless choice) with each held-out request's library category;
    and the policy's label."""
    policies = list(report["policies"])
    check(not label or label in policies, f"the report judges {', '.join(policies)}, not {label!r}: pass one")
    policy, reference = label or policies[0], report["reference"]
    category = {prompt.text: prompt.category for prompt in load_prompts()}
    rows = []
    for sample in report["samples"]:
        request = sample["prompt"]
        for draw in range(report["config"]["samples"]):
            mine, theirs = sample[f"{policy}@{draw}"], sample[f"{reference}@{draw}"]
            choice = noiseless_choice(utility(request, mine, taste.name), utility(request, theirs, taste.name), taste)
            rows.append((policy, reference, choice, category.get(request), request))
    return pd.DataFrame(rows, columns=["left_policy", "right_policy", "choice", "category", "request"]), policy


def markdown(shown) -> list[str]:
    """A table's lines in Markdown (pandas' to_markdown needs tabulate, which the project does not install)."""
    header = ["category", *shown.columns]
    rows = [[str(name), *map(str, row)] for name, row in zip(shown.index, shown.itertuples(index=False))]
    return [f"| {' | '.join(header)} |", "|" + "---|" * len(header), *(f"| {' | '.join(r)} |" for r in rows)]


def main(argv: list[str] | None = None) -> dict:
    cfg = command_config(WeakSpotsConfig, sys.argv[1:] if argv is None else argv, prog="python -m bench.weak_spots",
                         description=(__doc__ or "").split("\n\n")[0])
    if cfg.samples_from:  # step 1
        votes, policy = judged_samples(json.loads(Path(cfg.samples_from).read_text()), Taste(name=cfg.taste), cfg.policy)
        table = weak_spots(votes, policy, library_categories())
        test = {**homogeneity(table), "permutation_p": round(permutation_p(votes, policy), 4)}  # step 2
    else:  # what `python -m core weak-spots` prints
        policy, table = weak_spots_in(Store.existing(cfg.db), cfg.policy or None)
        test = homogeneity(table)  # step 2
    focus = table.focus.drop(TYPED, errors="ignore")  # step 3
    result = {"config": asdict(cfg), "policy": policy, "votes": int(table.votes.sum()), "homogeneity": test,
              "focus_min": round(float(focus.min()), 4), "focus_max": round(float(focus.max()), 4),
              "even_share": round(1 / len(focus), 4), "table": table.round(4).reset_index().to_dict("records")}
    lines = [f"# Weak spots of `{policy}`", "", f"{result['votes']} standing votes with it on either side, "
             f"from {cfg.db or cfg.samples_from}" + (f", judged by `{cfg.taste}`" if cfg.samples_from else "") + ".",
             "", *markdown(readable(table)), "",
             f"Homogeneity of the categories' outcomes (chi-square): {test}", "",
             f"Focus shares under `--focus weak`: {result['focus_min']:.3f} to {result['focus_max']:.3f} "
             f"(even: {result['even_share']:.3f})."]
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "weak_spots.md").write_text("\n".join(lines) + "\n")
    (out / "weak_spots.json").write_text(json.dumps(result, indent=1))
    print("\n".join(lines))
    print(json.dumps({k: result[k] for k in ("policy", "votes", "homogeneity", "focus_min", "focus_max")}))
    return result


if __name__ == "__main__":
    entry_point(main)
