"""What each round's pairs asked the annotator: how they were chosen, how many came back ties, and how far apart the
two lists were in the annotator's own noiseless taste.

    .venv/bin/python -m bench.round_votes --db bench/out/rounds-terse-uncertain/rounds.duckdb --taste terse \
        --round "round 2"

Uncertain choice (core/collect/chooser.py) shows the reward model's closest call among a request's samples; whether
that makes better votes than a random pair depends on what the annotator saw. This reads a database's standing votes
and, per round, way of choosing and kind of request (a library request, or one the annotator typed), prints:
votes, ties, "both bad", and the mean |utility gap| between the two lists under the taste's noiseless utility
(bench/annotator.utility, not the product's parser) with how many pairs had no gap at all.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import pandas as pd

from bench.annotator import TASTES, utility
from bench.loop import entry_point
from core.config import command_config, knob
from core.store.database import Store


@dataclass
class RoundVotesConfig:
    db: str = knob("", "a DuckDB file the arena wrote (bench/rounds.py --out holds rounds.duckdb); required")
    taste: str = knob("form", "the annotator's taste whose utility measures the gaps", choices=tuple(TASTES))
    round: str = knob("", "only rounds whose name starts with this (e.g. 'round 2'); empty: every round")


def choice_table(votes: pd.DataFrame, library: set[str], taste: str) -> pd.DataFrame:
    """One row per (round, chosen_by, request kind): votes, ties, both_bad, mean_gap, zero_gap. `votes` are rows of
    the store's votes view; `library` the prompt ids that came from the library."""
    gaps = [abs(utility(p, left, taste) - utility(p, right, taste))
            for p, left, right in zip(votes.prompt, votes.left_text, votes.right_text)]
    frame = votes.assign(gap=gaps, request=votes.prompt_id.map(lambda i: "library" if i in library else "own"),
                         round=votes["round"].fillna("(no round)"))
    return (frame.groupby(["round", "chosen_by", "request"])
            .agg(votes=("gap", "size"), ties=("choice", lambda c: int((c == "tie").sum())),
                 both_bad=("choice", lambda c: int((c == "both_bad").sum())), mean_gap=("gap", "mean"),
                 zero_gap=("gap", lambda g: int((g < 1e-9).sum())))
            .reset_index())


def markdown(table: pd.DataFrame) -> str:
    lines = ["| round | chosen by | request | votes | ties | both bad | mean utility gap | no gap |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['round']} | {r.chosen_by} | {r.request} | {r.votes} | {r.ties} | {r.both_bad} | "
              f"{r.mean_gap:.2f} | {r.zero_gap} |" for _, r in table.iterrows()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    cfg = command_config(RoundVotesConfig, sys.argv[1:] if argv is None else argv, prog="python -m bench.round_votes",
                         description=__doc__.split("\n")[0])
    if not cfg.db:
        raise SystemExit("pass --db: the arena's DuckDB file (bench/rounds.py --out holds rounds.duckdb).")
    store = Store(cfg.db)
    votes = store.votes()
    votes = votes[votes["round"].fillna("").str.startswith(cfg.round)] if cfg.round else votes
    prompts = store.table("prompts")
    table = choice_table(votes, set(prompts.prompt_id[prompts.library_id.notna()]), cfg.taste)
    print(markdown(table))
    return table


if __name__ == "__main__":
    entry_point(main)
