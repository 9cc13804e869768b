"""Where the arena collects: every library category evenly, or more where the challenger is weak.

    python -m core weak-spots [--policy NAME]    # the table below, for the arena's challenger by default
    python -m apps.arena --focus weak            # or the dashboard's Arena page (admins)

The loop's fourth step is "collect more where it is weak": after a round, the requests on which the tuned policy
loses are where the person's votes can still teach the reward model, and the policy, something about it. The
library's 12 categories (data/prompts.jsonl: food, travel, ...) are the unit: 24 train requests each, enough votes
per category after a round for a rough reading, where a single request has one or two.

Weak spots (`weak_spots`), for one policy (the arena's challenger, the pairing's second side: `--challenger RUN` is
`--pairing base,RUN`), from every standing vote with it on either side (repeats and votes flagged as noise left
out, as in every count): per category, the votes it won, lost and tied, and those where both lists were bad;
its score, (won + tied / 2) / votes, a "both bad" counting as a loss (its own list was bad), with a 95 % Wilson
interval. A pair of the policy against itself counts as a tie when decided (one of its lists won, one lost).

Focus "weak" (`focus_weights`), recomputed from those counts as votes arrive:
    1. weakness w_c = 1 − (won_c + tied_c / 2 + 1) / (votes_c + 2): the posterior mean of "not good" under a
       uniform Beta(1, 1) prior, so a category with no votes reads 0.5 and a single loss does not take over
    2. p_c = (1 − ε) w_c / Σ_c' w_c' + ε / C, ε = EXPLORE: a quarter of the requests stay spread evenly, so a
       category that looks strong is still checked and the votes keep covering every category
    3. the next library request: a category drawn from p, then the next request of that category's own shuffled
       cycle (every request of a category comes up before any comes again)
Why weights and not a bandit that picks the worst category: the point is training votes where the policy loses,
spread over its weak categories, not finding the single worst one and spending every vote there.
Focus "even" (the default) is the plain shuffled cycle over every library request.

Held-out numbers stay unbiased: the arena's library is the train split, and typed requests are not steered. Votes
on requests without a library category (typed ones, imported ones; a typed request with a library text is that
library request, category and all) show as their own last row (TYPED) and take no part in the focus. The setting
lives in the store (`arena.focus`) like the arena's other settings (core/collect/chooser.py): the latest writer
wins, and the arena follows it from its next background pair; the pairs already queued are served first.
"""
from __future__ import annotations

import random

import numpy as np
import pandas as pd

from core.collect.chooser import read_serving, read_setting
from core.collect.library import PromptCycle, load_prompts
from core.records import InputError, Prompt
from core.win_rate import wilson_interval, winners

FOCUSES = ("even", "weak")
DEFAULT_FOCUS = "even"
FOCUS_KEY = "arena.focus"  # a key of the store's meta table
EXPLORE = 0.25  # ε: the share of library requests that stay spread evenly under focus "weak"
TYPED = "(typed requests)"  # the row of requests that are not in the library
OUTCOMES = ["won", "lost", "tied", "both_bad"]  # a vote from one policy's side
COLUMNS = ["votes", *OUTCOMES, "score", "low", "high", "weakness", "focus"]


# ---- the setting --------------------------------------------------------------------------------------------------
def check_focus(value: object) -> str:
    if value not in FOCUSES:
        raise InputError(f"focus is one of {', '.join(FOCUSES)}, not {value!r}")
    return value


def save_focus(store, focus: str | None) -> None:
    """Write the focus (None: leave as stored), checked first."""
    if focus is not None:
        store.set_setting(FOCUS_KEY, check_focus(focus))


def read_focus(store) -> str:
    return read_setting(store, FOCUS_KEY, check_focus, DEFAULT_FOCUS)


# ---- weak spots ---------------------------------------------------------------------------------------------------
def outcomes(votes: pd.DataFrame, policy: str) -> pd.Series:
    """Each vote (left_policy, right_policy, choice) from `policy`'s side: won, lost, tied or both_bad."""
    winner = winners(votes)
    decided_against_itself = (votes.left_policy == votes.right_policy) & winner.notna()
    return pd.Series(np.select([votes.choice == "both_bad", (votes.choice == "tie") | decided_against_itself,
                                winner == policy], ["both_bad", "tied", "won"], "lost"), index=votes.index)


def weak_spots(votes: pd.DataFrame, policy: str, categories: list[str] | None = None) -> pd.DataFrame:
    """The table in the module docstring, one row a category (`categories`, the library's, listed even without
    votes), weakest first, then TYPED when requests without a category were voted on; `focus` is each library
    category's share of the next requests under focus "weak"."""
    votes = votes[(votes.left_policy == policy) | (votes.right_policy == policy)]
    category = votes.category.where(votes.category.notna(), TYPED) if len(votes) else votes.category
    counts = pd.crosstab(category, outcomes(votes, policy)) if len(votes) else pd.DataFrame()
    counts = counts.reindex(columns=OUTCOMES, fill_value=0)
    names = list(dict.fromkeys([*(categories or []), *sorted(set(counts.index) - {TYPED}),
                                *([TYPED] if TYPED in counts.index else [])]))
    table = counts.reindex(names, fill_value=0).astype(int)
    table.insert(0, "votes", table.sum(axis=1))
    good = table.won + table.tied / 2  # a "both bad" is a loss: the policy's own list was bad
    table["score"] = (good / table.votes).where(table.votes > 0)
    bounds = [wilson_interval(g, n) if n else (float("nan"), float("nan")) for g, n in zip(good, table.votes)]
    table["low"], table["high"] = [b[0] for b in bounds], [b[1] for b in bounds]
    table["weakness"] = 1 - (good + 1) / (table.votes + 2)  # step 1
    table["focus"] = pd.Series(focus_weights(table), dtype=float)  # TYPED: NaN, never steered
    table.index.name, table.columns.name = "category", None
    library = table.drop(TYPED, errors="ignore").sort_values(["weakness", "votes"], ascending=[False, False])
    return pd.concat([library, table.loc[table.index == TYPED]])[COLUMNS]


def readable(table: pd.DataFrame) -> pd.DataFrame:
    """The weak-spots table as a person reads it: counts, the score with its interval and the focus share in %."""
    def percent(x: float) -> str:
        return "" if pd.isna(x) else f"{100 * x:.0f}"

    shown = table[["votes", *OUTCOMES]].copy()
    shown["score % [95 %]"] = [f"{percent(s)} [{percent(lo)}, {percent(hi)}]" if n else "no votes"
                               for s, lo, hi, n in zip(table.score, table.low, table.high, table.votes)]
    shown["focus %"] = [percent(f) or "-" for f in table.focus]
    return shown


def library_categories() -> list[str]:
    """The categories of the library the arena serves (data/prompts.jsonl, train split), sorted."""
    return sorted({prompt.category for prompt in load_prompts(split="train")})


def weak_spots_in(store, policy: str | None = None) -> tuple[str, pd.DataFrame]:
    """(the policy, its weak-spots table over the library's categories) from the store's votes: what
    `python -m core weak-spots` and the dashboard's Arena page show. `policy` None: the arena's challenger
    (default_policy); a name no vote carries is refused with the names that are there."""
    name = policy or default_policy(store)
    votes = store.votes_with(name)
    if policy and votes.empty:  # a mistyped name
        names = store.voted_policies()
        raise InputError(f"no votes name the policy {policy!r}: pass one of {', '.join(names)}" if names else
                         "no votes yet: vote in the arena first")
    return name, weak_spots(votes, name, library_categories())


def default_policy(store) -> str:
    """The arena's challenger (the pairing's second side) as the votes name it, from what the arena last said it
    serves; InputError when no arena has said so yet."""
    policies = read_serving(store).get("policies") or []
    if len(policies) != 2:
        raise InputError("no arena has said what it serves yet: pass --policy NAME (as the votes name it, e.g. "
                         "SmolLM2-135M-Instruct+sft-20261208-101500)")
    return policies[1]


def focus_weights(table: pd.DataFrame, explore: float = EXPLORE) -> dict[str, float]:
    """Step 2: each library category's probability of serving the next request, from the table's weakness."""
    weakness = table.weakness.drop(TYPED, errors="ignore")
    if weakness.empty:
        return {}
    shares = weakness / weakness.sum()  # > 0: a weakness is never 0 under the prior
    return {str(c): float((1 - explore) * s + explore / len(weakness)) for c, s in shares.items()}


# ---- which request next ---------------------------------------------------------------------------------------------
class CategoryCycle:
    """The library's requests in a shuffled cycle (`next()`, focus "even"), or a category drawn by `weights` first
    and then the next of that category's own cycle (`next(weights)`, step 3)."""

    def __init__(self, prompts: list[Prompt], seed: int | None = None):
        self._all = PromptCycle(prompts, seed)
        groups: dict[str, list[Prompt]] = {}
        for prompt in prompts:
            groups.setdefault(prompt.category or TYPED, []).append(prompt)
        self._cycles = {name: PromptCycle(group, None if seed is None else seed + k)
                        for k, (name, group) in enumerate(sorted(groups.items()))}
        self._rng = random.Random(seed)

    @property
    def categories(self) -> list[str]:
        return list(self._cycles)

    def next(self, weights: dict[str, float] | None = None) -> Prompt:
        usable = {c: w for c, w in (weights or {}).items() if c in self._cycles and w > 0}
        if not usable:
            return self._all.next()
        names = list(usable)
        return self._cycles[self._rng.choices(names, weights=[usable[c] for c in names])[0]].next()
