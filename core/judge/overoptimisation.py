"""The over-optimisation view of a PPO run: proxy reward and a judge's win rate against sqrt(KL) (Gao et al. 2022).

    from core.judge.overoptimisation import curve
    curve(Path("models/runs/ppo-20261121-101500"))   # one row per held-out evaluation

Data, both read from the run folder (missing or torn files give fewer rows, never an exception):
1. metrics.jsonl: the rows PPO logs with `--eval-every K`, before training and every K updates: eval/scores (the
   reward model's mean score on the held-out answers), eval/kl, eval/sqrt_kl, eval/well_formed.
2. judgements.jsonl (optional; bench/loop.py writes it): one row per evaluation step with a second judge's win rate
   of that step's held-out answers against a reference's answers to the same requests: `step, win_rate, low, high,
   n` (bench/loop.py: the scripted annotator, against the answers at step 0, i.e. the policy PPO started from).
   Without it the judge_* columns are NaN.
Reward hacking shows as the two curves parting: the reward-model score keeps rising while the judge's win rate
flattens or falls as the policy moves away from its reference.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from core.runs import RunFolder, read_jsonl

COLUMNS = ["step", "sqrt_kl", "kl", "rm_score", "well_formed", "judge_win_rate", "judge_low", "judge_high", "judge_n"]
_FROM_METRICS = {"eval/sqrt_kl": "sqrt_kl", "eval/kl": "kl", "eval/scores": "rm_score", "eval/well_formed": "well_formed"}
_FROM_JUDGEMENTS = {"win_rate": "judge_win_rate", "low": "judge_low", "high": "judge_high", "n": "judge_n"}


def _rows(path: Path, keys: dict[str, str], required: str) -> pd.DataFrame:
    """Rows of a JSONL file that carry `required` and a step, renamed by `keys`; the last row per step wins
    (a resumed run logs an evaluation again)."""
    rows = [{"step": row["step"], **{new: row.get(old) for old, new in keys.items()}}
            for row in read_jsonl(path) if row.get(required) is not None and isinstance(row.get("step"), int)]
    frame = pd.DataFrame(rows, columns=["step", *keys.values()])
    return frame.drop_duplicates("step", keep="last")


def curve(run_dir: Path) -> pd.DataFrame:
    """One row per held-out evaluation of a PPO run, by step: COLUMNS (judge_* NaN without judgements.jsonl)."""
    folder = RunFolder(run_dir)
    evals = _rows(folder.metrics, _FROM_METRICS, "eval/sqrt_kl")
    judged = _rows(folder.judgements, _FROM_JUDGEMENTS, "win_rate")
    merged = evals.merge(judged, on="step", how="left")
    numeric = [c for c in COLUMNS if c != "step"]
    merged[numeric] = merged[numeric].apply(pd.to_numeric, errors="coerce").astype(float)
    return merged[COLUMNS].sort_values("step").reset_index(drop=True).astype({"step": int})
