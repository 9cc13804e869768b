"""Every kind of feedback the arena collects, as reward-model training pairs.

    python -m core train reward --from-edits true --from-both-bad true --from-ratings true --from-ties false

TRL's RewardTrainer takes (chosen, rejected[, margin]) rows and minimises the Bradley–Terry loss
−log σ(r⁺ − r⁻ − m). Each source becomes such rows (our decisions; bench/feedback_ablation.py measures each one on
and off on the same votes, bench/README.md quotes the table):

| source (knob)               | becomes                                                     | margin m          |
|-----------------------------|-------------------------------------------------------------|-------------------|
| left/right votes (always)   | the chosen list over the other                              | strength 1/3, 2/3, 1 (Llama 2's small-margin scale), 0 without |
| edits (`from_edits`)        | the person's edited list over the list it was edited from   | 0                 |
| both bad + a demonstration (`from_both_bad`) | a list the annotator wrote for the request over both lists of each of their "both bad" votes on it | 0 |
| ratings (`from_ratings`)    | of two lists of one request rated by one annotator, the one with more stars over the other | min(gap, 3) / 3 |
| ties (`from_ties`)          | (a, b) and (b, a): −log σ(Δ) − log σ(−Δ) is twice the cross-entropy to a 0.5 target, least at Δ = 0 | 0 |

What is left out, and why:
- "Both bad" with no demonstration on that request: it says both lists fall below a bar this person holds, not
  which is better, and a Bradley–Terry model only learns differences, so there is no pair to make.
- A self-consistency repeat's vote (`repeat_of` set): the original vote trains once; whether the two agree is
  reported by core/judge/agreement.py.
- A pair whose two texts are the same after stripping says nothing; nor does a list saved from a shown one with
  nothing changed but its numbering or line breaks (`only_reformatted`: the arena saves the canonical "1. item"
  form, so "1) item" lines saved unchanged would otherwise read as an edit), as an edit or over a "both bad" side.
- The same (request, chosen, rejected) from two sources is kept once, from the first source in the table's order
  (within one source every row counts: two people casting the same vote is twice the evidence).

Every row keeps its request's split (resolved before this module sees it), so a held-out request's edits and
ratings stay out of training like its votes.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import pandas as pd

from core.lists import format_list, parse_list
from core.store.preferences import is_repeat, preference_pairs

COLUMNS = ["source", "comparison_id", "prompt_id", "split", "prompt", "chosen", "rejected", "margin"]
SOURCES = ("votes", "edits", "both_bad", "ratings", "ties")


@dataclass(frozen=True)
class FeedbackSources:
    """Which sources beyond left/right votes train the reward model (RewardConfig's from_* knobs)."""
    edits: bool = True
    both_bad: bool = True
    ratings: bool = True
    ties: bool = False


def _rows(source: str, frame: pd.DataFrame, chosen: pd.Series, rejected: pd.Series, margin) -> pd.DataFrame:
    return pd.DataFrame({"source": source, "comparison_id": frame.get("comparison_id"),
                         "prompt_id": frame.prompt_id.to_numpy(), "split": frame.split.to_numpy(),
                         "prompt": frame.prompt.to_numpy(), "chosen": chosen.to_numpy(),
                         "rejected": rejected.to_numpy(), "margin": margin}, columns=COLUMNS)


def vote_pairs(votes: pd.DataFrame, use_margin: bool = True) -> pd.DataFrame:
    """Standing left/right votes, repeats left out; margin from the vote's strength."""
    pairs, _ = preference_pairs(votes, with_ids=True)
    margin = pairs["margin"].to_numpy() if use_margin and "margin" in pairs else 0.0
    return _rows("votes", pairs, pairs.chosen, pairs.rejected, margin)


def only_reformatted(saved: str, shown: str) -> bool:
    """Whether a saved list is `shown` in the arena's canonical "1. item" form and nothing else: the same items, and
    no text around them to delete (the arena refuses a list with a preamble, so deleting one is the person's edit)."""
    parsed = parse_list(shown)
    return not parsed.preamble and not parsed.closing and saved.strip() == format_list(parsed.items)


def edit_pairs(demos: pd.DataFrame) -> pd.DataFrame:
    """Each demonstration edited from a shown list, over that list, unless it only reformatted it."""
    edited = demos[demos.edited_from_text.notna()] if len(demos) else demos
    if len(edited):
        edited = edited[[not only_reformatted(text, shown)
                         for text, shown in zip(edited.text, edited.edited_from_text)]]
    return _rows("edits", edited, edited.text, edited.edited_from_text, 0.0) if len(edited) else _empty()


def both_bad_pairs(votes: pd.DataFrame, demos: pd.DataFrame) -> pd.DataFrame:
    """For every "both bad" vote, each demonstration its annotator wrote for that request, over both lists."""
    both_bad = votes[(votes.choice == "both_bad") & ~is_repeat(votes)]
    if not len(both_bad) or not len(demos):
        return _empty()
    written = demos[["prompt_id", "annotator", "text"]].rename(columns={"text": "demo"})
    joined = both_bad.merge(written, on=["prompt_id", "annotator"])
    if not len(joined):
        return _empty()
    sides = []
    for side in ("left_text", "right_text"):  # a list saved from one side unchanged is no better than that side
        over = joined[[not only_reformatted(demo, shown) for demo, shown in zip(joined.demo, joined[side])]]
        sides.append(_rows("both_bad", over, over.demo, over[side], 0.0))
    return pd.concat(sides, ignore_index=True)


def rating_pairs(ratings: pd.DataFrame, use_margin: bool = True) -> pd.DataFrame:
    """Every two lists of one request rated by one annotator with different stars: more stars over fewer."""
    rows = []
    for _, group in ratings.groupby(["prompt_id", "annotator"], sort=False):
        for a, b in combinations(group.itertuples(), 2):
            if a.stars == b.stars:
                continue
            high, low = (a, b) if a.stars > b.stars else (b, a)
            margin = min(high.stars - low.stars, 3) / 3 if use_margin else 0.0
            rows.append({"source": "ratings", "comparison_id": None, "prompt_id": high.prompt_id,
                         "split": high.split, "prompt": high.prompt, "chosen": high.text, "rejected": low.text,
                         "margin": margin})
    return pd.DataFrame(rows, columns=COLUMNS)


def tie_pairs(votes: pd.DataFrame) -> pd.DataFrame:
    """Each standing tie (repeats left out) as two rows, one in each direction (see the module docstring)."""
    ties = votes[(votes.choice == "tie") & ~is_repeat(votes)]
    return pd.concat([_rows("ties", ties, ties.left_text, ties.right_text, 0.0),
                      _rows("ties", ties, ties.right_text, ties.left_text, 0.0)], ignore_index=True)


def feedback_pairs(votes: pd.DataFrame, demos: pd.DataFrame, ratings: pd.DataFrame,
                   sources: FeedbackSources = FeedbackSources(), use_margin: bool = True
                   ) -> tuple[pd.DataFrame, dict[str, int]]:
    """(pairs with COLUMNS, counts): every switched-on source's pairs, deduplicated, and how many each gave.

    votes: Store.votes() with a resolved `split`; demos: Store.demonstrations() and ratings: Store.ratings(), each
    with a resolved `split`.
    """
    parts = [vote_pairs(votes, use_margin)]
    if sources.edits:
        parts.append(edit_pairs(demos))
    if sources.both_bad:
        parts.append(both_bad_pairs(votes, demos))
    if sources.ratings:
        parts.append(rating_pairs(ratings, use_margin))
    if sources.ties:
        parts.append(tie_pairs(votes))
    kept, seen = [], set()
    for part in parts:  # a source's rows that an earlier source already gave are dropped; within one, all count
        part = part[part.chosen.str.strip() != part.rejected.str.strip()] if len(part) else part
        triples = list(zip(part.prompt, part.chosen, part.rejected))
        kept.append(part[[t not in seen for t in triples]])
        seen.update(triples)
    pairs = pd.concat([p for p in kept if len(p)] or [_empty()], ignore_index=True)
    pairs = pairs.reset_index(drop=True)
    pairs["margin"] = pairs.margin.astype(float)
    counts = {f"pairs_from_{name}": int((pairs.source == name).sum()) for name in SOURCES}
    return pairs, counts


def _empty() -> pd.DataFrame:
    return pd.DataFrame(columns=COLUMNS)
