"""Do a policy's votes differ by category? What the arena's `--focus weak` has to work with, on a loop's votes.

    .venv/bin/python -m bench.weak_spots --db bench/out/loop-ontopic/loop.duckdb [--policy NAME] \\
        --out bench/out/weak-spots-ontopic                                       # seconds: no model is loaded

`--focus weak` (core/collect/focus.py) serves more requests from the categories where the arena's challenger loses
or gets "both bad". That can only steer votes somewhere useful when the categories differ beyond the noise of a
few dozen votes each; this measures whether they do, on votes already cast.

1. The weak-spots table of `--policy` (default: the arena's challenger as the database last said) over the
   library's categories: votes won, lost, tied and both bad, the score (won + tied / 2) / votes with its 95 %
   Wilson interval, and the focus shares it gives.
2. Homogeneity: Pearson's chi-square test on the (category x {won, lost, tied, both bad}) counts, categories
   without votes and outcomes no vote had left out: χ² = Σ (O − E)² / E with E = row total x column total / n,
   (rows − 1)(columns − 1) degrees of freedom, no continuity correction; p from the regularised upper incomplete
   gamma function (torch.special.gammaincc: the project does not install scipy). p < 0.05 says the categories'
   outcomes differ beyond chance. Requests without a library category are left out.
3. The spread the focus acts on: the lowest and highest focus share, against the even share 1 / 12.
Report: weak_spots.json and .md in --out.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from bench.loop import entry_point
from core.collect.focus import TYPED, default_policy, readable, weak_spots
from core.collect.library import load_prompts
from core.config import check, command_config, knob
from core.store.database import Store


@dataclass
class WeakSpotsConfig:
    db: str = knob("", "the loop's database (its --out/loop.duckdb); required")
    policy: str = knob("", "the policy as the votes name it; empty: the arena's challenger as the database last said")
    out: str = knob("bench/out/weak-spots", "folder for weak_spots.json and .md")

    def __post_init__(self):
        check(bool(self.db), "pass --db, a loop's database (e.g. bench/out/loop-ontopic/loop.duckdb).")
        check(Path(self.db).is_file(), f"no database at {self.db}: pass a loop's --out/loop.duckdb.")


def homogeneity(table) -> dict:
    """Step 2: chi-square test of the library categories' outcome counts (categories with votes only)."""
    counts = table.drop(TYPED, errors="ignore")
    counts = counts.loc[counts.votes > 0, ["won", "lost", "tied", "both_bad"]]
    counts = counts.loc[:, counts.sum() > 0]
    if len(counts) < 2 or counts.shape[1] < 2:
        return {"chi2": None, "dof": None, "p": None, "categories": len(counts)}
    observed = counts.to_numpy(dtype=float)  # (categories, outcomes)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    dof = (observed.shape[0] - 1) * (observed.shape[1] - 1)
    half_dof, half_chi2 = (torch.tensor(v / 2, dtype=torch.float64) for v in (dof, chi2))
    p = float(torch.special.gammaincc(half_dof, half_chi2))  # P(χ²_dof > chi2)
    return {"chi2": round(chi2, 3), "dof": dof, "p": round(p, 4), "categories": len(counts)}


def markdown(shown) -> list[str]:
    """A table's lines in Markdown (pandas' to_markdown needs tabulate, which the project does not install)."""
    header = ["category", *shown.columns]
    rows = [[str(name), *map(str, row)] for name, row in zip(shown.index, shown.itertuples(index=False))]
    return [f"| {' | '.join(header)} |", "|" + "---|" * len(header), *(f"| {' | '.join(r)} |" for r in rows)]


def main(argv: list[str] | None = None) -> dict:
    cfg = command_config(WeakSpotsConfig, sys.argv[1:] if argv is None else argv, prog="python -m bench.weak_spots",
                         description=(__doc__ or "").split("\n\n")[0])
    store = Store.existing(cfg.db)
    policy = cfg.policy or default_policy(store)
    categories = sorted({prompt.category for prompt in load_prompts()})  # every split: typed held-out ones too
    table = weak_spots(store.votes_with(policy), policy, categories)  # step 1
    test = homogeneity(table)  # step 2
    focus = table.focus.drop(TYPED, errors="ignore")  # step 3
    result = {"config": asdict(cfg), "policy": policy, "votes": int(table.votes.sum()), "homogeneity": test,
              "focus_min": round(float(focus.min()), 4), "focus_max": round(float(focus.max()), 4),
              "even_share": round(1 / len(focus), 4), "table": table.round(4).reset_index().to_dict("records")}
    lines = [f"# Weak spots of `{policy}`", "", f"{result['votes']} standing votes with it on either side, "
             f"from {cfg.db}.", "", *markdown(readable(table)), "",
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
