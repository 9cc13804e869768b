"""Figures of finished training runs, read from their folders (what bench/README.md quotes for the quick-preset runs).

    .venv/bin/python bench/run_summary.py models/runs/sft-... models/runs/reward-... models/runs/ppo-...

Per run: stage, state, steps, wall time (status.json's started_at -> finished_at), training loss or reward as
the mean of the first and of the last few steps (up to 10), the final held-out figures (`eval/*`; a reward model's
held-out accuracy per round of collection too), a rejection run's candidates and picks (`rejection/*`), the pairs it
trained on and held out (`data/*`, from its lineage), and for PPO the range of val/ratio and clipfrac (and clipfrac
and approxkl as first/last means), the median seconds per update and peak RSS; the trainer's own training seconds
(`summary/runtime`) where it logs them. Reward runs given together that share held-out votes are then compared vote
by vote: right only in each, exact McNemar p.
"""
from __future__ import annotations

import json
import statistics
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd

from core.runs import RunFolder, read_json, read_jsonl, read_status


def summarise(run: Path) -> dict:
    folder = RunFolder(run)
    status, metrics = read_status(run), read_jsonl(folder.metrics)
    row = {"run": run.name, "stage": folder.stage, "state": status.get("state"),
           "steps": status.get("step")}
    if status.get("started_at") and status.get("finished_at"):
        wall = datetime.fromisoformat(status["finished_at"]) - datetime.fromisoformat(status["started_at"])
        row["wall_min"] = round(wall.total_seconds() / 60, 1)
    for key in ("train/loss", "objective/scores", "objective/kl", "objective/well_formed", "policy/clipfrac_avg",
                "policy/approxkl_avg", "train/rewards/chosen", "train/rewards/rejected"):  # DPO: β·log(π/π_ref)
        series = [m[key] for m in metrics if m.get(key) is not None]
        if series:  # per-step values are noisy: the mean of the first and of the last few steps
            window = max(1, min(10, len(series) // 4))
            digits = 5 if "approxkl" in key else 3  # approxkl lives around 1e-3
            row[key] = [round(statistics.mean(part), digits) for part in (series[:window], series[-window:])]
    for key in ("val/ratio", "policy/clipfrac_avg"):  # PPO health: their range over the run
        series = [m[key] for m in metrics if m.get(key) is not None]
        if series:
            row[f"{key} range"] = [round(min(series), 3), round(max(series), 3)]
    for m in metrics:
        row.update({k: round(v, 3) if isinstance(v, float) else v for k, v in m.items()
                    if k.startswith(("eval/", "rejection/")) or k == "summary/runtime"})  # the trainer's own
    # training seconds; rejection/*: what a rejection run's sampling found (its candidates and picks, step 0)
    lineage = read_json(folder.lineage)  # what it trained on: the votes split into train and held-out pairs
    row.update({f"data/{k}": lineage[k] for k in ("train_pairs", "eval_pairs") if k in lineage})
    by_round = read_json(folder.calibration).get("accuracy_by_round")  # a reward model's held-out pairs per round
    if by_round:
        row["eval/by_round"] = {r["round"]: f"{r['correct']}/{r['pairs']}" for r in by_round}
    update_s = [m["time/update_s"] for m in metrics if "time/update_s" in m]
    if update_s:
        row["median_update_s"] = round(statistics.median(update_s), 1)
        row["peak_rss_mb"] = round(max(m["memory/peak_rss_mb"] for m in metrics if "memory/peak_rss_mb" in m))
    return row


def paired_held_out(first: Path, second: Path) -> dict | None:
    """Two reward runs judged on the same held-out votes (a repeat counted once): right only in each, exact McNemar
    p; None when they share no held-out vote (other databases or splits)."""
    # lazy: these import TRL's trainers (~10 s), which only this comparison needs
    from bench.feedback_ablation import mcnemar_p
    from core.train.reward_model import held_out_votes

    def correct(run: Path) -> pd.Series:
        return held_out_votes(pd.read_parquet(RunFolder(run).scores)).set_index("comparison_id").correct

    a, b = correct(first), correct(second)
    shared = a.index.intersection(b.index)
    if shared.empty:
        return None
    a, b = a[shared].astype(bool), b[shared].astype(bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    return {"pair": [first.name, second.name], "votes": len(shared), "correct": [int(a.sum()), int(b.sum())],
            "right_only_in_each": [only_a, only_b], "mcnemar_p": round(mcnemar_p(only_a, only_b), 3)}


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    runs = [Path(folder) for folder in sys.argv[1:]]
    for run in runs:
        print(json.dumps(summarise(run)))
    rewards = [run for run in runs if RunFolder(run).stage == "reward" and RunFolder(run).scores.exists()]
    for i, first in enumerate(rewards):
        for second in rewards[i + 1:]:
            paired = paired_held_out(first, second)
            if paired:
                print(json.dumps(paired))


if __name__ == "__main__":
    main()
