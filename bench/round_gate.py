"""The gate's extra votes in bench/rounds.py (its step 2b): when the gate (core.train.best) would keep the incumbent
while the challenger leads, the annotator votes on in the same round, a batch at a time, as a person does when the
dashboard says how many more decided votes would put the challenger through.

    .venv/bin/python -m bench.rounds --previous R2 --reuse-round2 R3 --gate-votes 60 ...
"""
from __future__ import annotations

import math
from typing import Callable

from core.store.database import Store
from core.train.best import Standing, challenger_wins
from core.win_rate import votes_to_pass


def vote_at_the_gate(budget: int, read: Callable[[], Standing | None], cast: Callable[[int, int], object],
                     decided_share: Callable[[], float], first_batch: int = 1) -> dict:
    """Step 2b: while the gate keeps the incumbent but the challenger leads (`read`: the head-to-head now), cast
    votes in batches (`cast(batch number, votes)`), each the decided votes votes_to_pass says are missing over the
    round's share of votes that count as decided (`decided_share`, read again after each batch), at least 10; until
    the gate passes, the lead is gone or a batch no longer fits in what is left of `budget` (round 4 on `ontopic` led
    58 to 50, which needs 593 more decided votes at that share: no person casts those, so neither does this).
    Returns what it cast and the head-to-head (incumbent's, challenger's decided votes) before and after. Looking
    again after each batch is optional stopping (core.win_rate.votes_to_pass says what it costs); the report
    keeps the head-to-head before the gate's votes so a reader can see it."""
    now = read()
    before, spent, batches = (now.kept, now.won) if now else None, 0, 0
    while now and now.served and not challenger_wins(now.kept, now.won):
        missing = votes_to_pass(now.won, now.kept + now.won)
        votes = None if missing is None else max(10, math.ceil(missing / max(decided_share(), 0.1)))
        if votes is None or votes > budget - spent:
            break
        cast(first_batch + batches, votes)
        spent, batches, now = spent + votes, batches + 1, read()
    return {"cast": spent, "batches": batches, "before": before, "after": (now.kept, now.won) if now else None,
            "passed": bool(now and challenger_wins(now.kept, now.won))}


def decided_share(store: Store, round_name: str) -> float:
    """The share of a round's votes that count at the gate: left or right, not a repeat (core.store's
    votes_between leaves repeats out)."""
    votes = store.votes()
    votes = votes[votes["round"] == round_name]
    return float((votes.choice.isin(["left", "right"]) & (votes.chosen_by != "repeat")).mean()) if len(votes) else 1.0


def merged_gate(earlier: dict | None, now: dict) -> dict:
    """The gate's votes of a reused run (--reuse-round2) and of this one, as one record."""
    if not (earlier or {}).get("cast"):
        return now
    if not now["cast"]:
        return earlier
    return {**now, "cast": earlier["cast"] + now["cast"], "batches": earlier["batches"] + now["batches"],
            "before": earlier["before"]}
