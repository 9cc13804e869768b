"""Reward models judged on another database's held-out votes: more held-out votes of the same taste, other lists.

    .venv/bin/python -m bench.heldout_transfer --db bench/out/ablation-ontopic/ablation.duckdb \
        --runs votes=RUN_A,+ratings=RUN_B,default=RUN_C [--eval-fraction 0.5]

A loop's 300 votes hold out about 60 decided votes, so two reward models trained on them differ measurably only by
~10 points or more. The annotator's own requests are split train/held-out by a hash of their text, the same in
every database, so the held-out votes another benchmark collected on the same requests (the feedback ablation's:
every pair of four base-model lists of each held-out request) are held out for a loop's reward models too.

1. The database's standing votes, split as the reward stage splits them (core.train.snapshot.resolved_splits,
   --eval-fraction); the held-out left/right votes, repeats left out (core.train.reward_model.held_out_votes).
   A run that trained on any of those requests is refused (its data/pairs.parquet names what it trained on).
2. Each run's reward model (RewardScorer.from_folder) scores both lists of every such vote (score_votes).
3. Accuracy with counts and 95 % Wilson intervals; each run against the first, paired on the same votes (how many
   only one of the two gets right, exact McNemar p). Printed; --out writes the rows as JSON.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from bench.feedback_ablation import correct_by_texts, discordant
from bench.loop import entry_point
from core.runs import RunFolder
from core.store.database import Store
from core.train.reward_model import RewardScorer, held_out_votes, score_votes
from core.train.snapshot import resolved_splits
from core.win_rate import wilson_interval


def held_out(db: Path, eval_fraction: float) -> pd.DataFrame:
    """Step 1: the decided held-out votes of `db`, split as the reward stage splits them."""
    votes = Store.existing(db).votes()
    votes["split"] = resolved_splits(votes, eval_fraction)
    return held_out_votes(votes)


def leaked(run: Path, votes: pd.DataFrame) -> int:
    """How many of the held-out requests `run` trained on (0 for a fair judgement)."""
    pairs = pd.read_parquet(RunFolder(run).snapshot("pairs.parquet"))
    return len(set(pairs[pairs.split == "train"].prompt) & set(votes.prompt))


def judge(runs: dict[str, Path], votes: pd.DataFrame) -> list[dict]:
    """Steps 2-3: one row per run, the first run the paired comparisons' reference."""
    rows, correct = [], {}
    for name, run in runs.items():
        scored = score_votes(RewardScorer.from_folder(run), votes)
        correct[name] = correct_by_texts(scored)
        hits, n = int(scored.correct.sum()), len(scored)
        low, high = wilson_interval(hits, n)
        rows.append({"run": name, "folder": str(run), "accuracy": hits / n if n else None, "correct": hits,
                     "pairs": n, "ci95": [round(low, 3), round(high, 3)]})
    first = next(iter(runs))
    for row in rows[1:]:
        row["vs_first"] = discordant(correct[row["run"]], correct[first])
        row["vs_first"]["points"] = round(100 * (row["accuracy"] - rows[0]["accuracy"]), 1)
    return rows


def table(rows: list[dict], db: Path) -> str:
    lines = [f"Reward models on the held-out votes of {db}", "",
             f"| run | accuracy [95 % Wilson] | vs {rows[0]['run']}: points, right only here / only there "
             "(McNemar p) |",
             "|---|---|---|"]
    for r in rows:
        v = r.get("vs_first")
        vs = f"{v['points']:+.1f} points: {v['only_this_right']} / {v['only_votes_right']} (p = {v['mcnemar_p']:.2f})" \
            if v else "-"
        lines.append(f"| {r['run']} | {r['accuracy']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] "
                     f"({r['correct']}/{r['pairs']}) | {vs} |")
    return "\n".join(lines)


def parse_runs(parser: argparse.ArgumentParser, text: str) -> dict[str, Path]:
    runs = {}
    for item in text.split(","):
        name, _, folder = item.partition("=")
        if not folder or not (Path(folder) / "adapter").is_dir():
            parser.error(f"--runs: {item!r} is not NAME=FOLDER of a finished reward run; e.g. votes=models/runs/r1.")
        runs[name] = Path(folder)
    return runs


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", required=True, help="the database whose held-out votes judge the runs")
    parser.add_argument("--runs", required=True, help="NAME=FOLDER,... finished reward runs; the first is the "
                                                      "reference of the paired comparisons")
    parser.add_argument("--eval-fraction", type=float, default=0.5, help="the held-out share the runs trained with")
    parser.add_argument("--out", default="", help="write the rows here as JSON")
    args = parser.parse_args(argv)
    runs = parse_runs(parser, args.runs)
    if not Path(args.db).is_file():
        parser.error(f"--db {args.db}: no such database; pass a benchmark's .duckdb file.")
    votes = held_out(Path(args.db), args.eval_fraction)
    if not len(votes):
        parser.error(f"--db {args.db} holds no decided held-out votes at --eval-fraction {args.eval_fraction}.")
    for name, run in runs.items():
        if n := leaked(run, votes):
            parser.error(f"--runs: {name} trained on {n} of the requests held out here; judge it on another database.")
    rows = judge(runs, votes)
    print(table(rows, Path(args.db)))
    if args.out:
        Path(args.out).write_text(json.dumps({"db": args.db, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    entry_point(main)
