"""How close a reward model comes to what its votes allow: the annotator's own taste, without its noise, on the same
held-out votes.

    .venv/bin/python -m bench.reward_ceiling --taste ontopic --runs models/runs/reward-...-loop [RUN ...] \\
        --out bench/out/reward-ceiling-ontopic                                   # seconds: no model is loaded

The reward model's goal (held-out accuracy >= 0.85) is measured against votes the scripted annotator cast with
noise, as people vote (bench/annotator.py `judge`: P(left) = σ(gap / temperature), a slip rate of random votes). No
reward model can predict that noise. The best possible one orders each pair by the taste's own noiseless utility
(the Bayes-optimal rule for this annotator), so its accuracy on the same held-out votes is the ceiling of any reward
model's; the gap between the two is what a better reward model could still win.

1. Each run's held-out decided votes: core.train.reward_model.held_out_votes on its scores.parquet, the votes its
   held-out accuracy counts, with its score of each side.
2. The oracle: a vote is right when the side with the higher utility under the taste won; a gap inside the
   annotator's tie band (decided only by a slip) counts half.
3. The expected ceiling: each vote's probability, given that it was decided, of agreeing with the oracle under the
   annotator's noise model (slip, tie band, temperature: bench.annotator.agreement_given_decided, beside `judge`),
   averaged over the votes: what the oracle would score on average over the annotator's coin flips on these pairs.
4. Per run, with 95 % Wilson intervals: the reward model's accuracy, the oracle's, the expected ceiling; and the
   votes the reward model gets wrong split by whether the oracle gets them right (what it could still learn) or not
   (the annotator's noise). Report: reward_ceiling.json and .md in --out.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from bench.annotator import TASTES, Taste, agreement_given_decided, utility
from bench.loop import entry_point
from core.config import check, command_config, knob
from core.judge.evaluate import proportion
from core.runs import RunFolder
from core.train.reward_model import held_out_votes


@dataclass
class CeilingConfig:
    taste: str = knob("form", "the taste that cast the votes (bench/annotator.py TASTES)", choices=tuple(TASTES))
    runs: list[str] = knob([], "reward-model run folders trained on votes of that taste; required")
    out: str = knob("bench/out/reward-ceiling", "folder for the report")

    def __post_init__(self):
        check(bool(self.runs), "pass --runs with one or more reward-model run folders (models/runs/reward-...).")
        for run in self.runs:
            check(RunFolder(Path(run)).scores.is_file(),
                  f"{run} holds no scores.parquet: pass a finished `train reward` run folder.")


def oracle_credit(gap: float, taste: Taste) -> float:
    """Step 2: 1 when the higher-utility side won (`gap` = winner's utility - loser's), 0 when it lost, 1/2 inside
    the tie band, where only a slip decides a vote."""
    return 0.5 if abs(gap) < taste.tie_band else float(gap > 0)


def ceiling(held: pd.DataFrame, taste: Taste) -> dict:
    """Steps 2-4 on one run's held-out decided votes (prompt, left_text, right_text, choice, correct)."""
    u_left = [utility(p, t, taste.name) for p, t in zip(held.prompt, held.left_text)]
    u_right = [utility(p, t, taste.name) for p, t in zip(held.prompt, held.right_text)]
    won_left = (held.choice == "left").to_numpy()
    oracle = [oracle_credit((ul - ur) if left else (ur - ul), taste) for ul, ur, left in zip(u_left, u_right, won_left)]
    expected = [agreement_given_decided(ul, ur, taste) for ul, ur in zip(u_left, u_right)]
    model = held.correct.astype(bool).to_numpy()
    n = len(held)
    return {"reward_model": proportion(int(model.sum()), n), "oracle": proportion(sum(oracle), n),  # halves: Wilson
            "expected_ceiling": sum(expected) / n if n else None,
            "model_wrong_oracle_right": sum(o for o, m in zip(oracle, model) if not m),
            "model_wrong_oracle_wrong": sum(1 - o for o, m in zip(oracle, model) if not m),
            "model_right_oracle_wrong": sum(1 - o for o, m in zip(oracle, model) if m)}


def markdown(cfg: CeilingConfig, rows: dict[str, dict]) -> str:
    lines = [f"# What the held-out votes allow, taste `{cfg.taste}`", "",
             "| run | held-out votes | reward model [95 %] | oracle: the taste's noiseless utility [95 %] | expected "
             "ceiling | wrong, oracle right / oracle wrong too | right, oracle wrong |",
             "|---|---|---|---|---|---|---|"]
    for run, r in rows.items():
        m, o = r["reward_model"], r["oracle"]
        lines.append(f"| {Path(run).name} | {m['n']} | {m['rate']:.3f} [{m['low']:.3f}, {m['high']:.3f}] | "
                     f"{o['rate']:.3f} [{o['low']:.3f}, {o['high']:.3f}] | {r['expected_ceiling']:.3f} | "
                     f"{r['model_wrong_oracle_right']:g} / {r['model_wrong_oracle_wrong']:g} | "
                     f"{r['model_right_oracle_wrong']:g} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    cfg = command_config(CeilingConfig, sys.argv[1:] if argv is None else argv, prog="python -m bench.reward_ceiling",
                         description=__doc__.split("\n")[0])
    taste = Taste(name=cfg.taste)
    rows = {run: ceiling(held_out_votes(pd.read_parquet(RunFolder(Path(run)).scores)), taste) for run in cfg.runs}
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reward_ceiling.json").write_text(json.dumps({"config": asdict(cfg), "runs": rows}, indent=2))
    (out / "reward_ceiling.md").write_text(markdown(cfg, rows))
    print(markdown(cfg, rows))
    return rows


if __name__ == "__main__":
    entry_point(main)
