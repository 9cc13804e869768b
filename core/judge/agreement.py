"""Agreement: how consistent each annotator is with themselves, and how far annotators agree with one another.

    python -m core stats      # vote counts, self-agreement with its 95 % interval, the inter-annotator kappa table

Intra-annotator (self-consistency). The arena re-shows a few voted pairs, unannounced and with the sides swapped
(`repeat_of` names the original pair, core/store/schema.py). A repeat counts when the annotator who holds the standing
vote on the original also holds one on the repeat. The repeat's choice is mapped back through the swap (left <-> right;
tie and both_bad unchanged) and compared with the original's; rates come with 95 % Wilson intervals (win_rate.py).

Why it is the yardstick for a reward model. Held-out accuracy is measured on decided votes (left or right), so the rate
that matters is over repeats decided both times. If the two showings of pair i are independent draws with
P(left) = p_i, they agree with probability a_i = p_i² + (1 − p_i)², and no predictor can expect more than
max(p_i, 1 − p_i) = (1 + √(2a_i − 1)) / 2 ≥ a_i on that pair. Averaged over pairs (Jensen: √ is concave) the ceiling on
this person's decided votes lies between the agreement a and (1 + √(2a − 1)) / 2: the low end when each pair is either
certain or a coin flip, the high end when the noise is the same on every pair. Remembering the pair inflates a. A
reward model above the high end is fitting something other than the person's taste (look for held-out pairs leaking
into training). Human agreement is the usual yardstick for reward-model accuracy (Stiennon et al. 2020; Ouyang et
al. 2022, InstructGPT §3.4, where training labelers agree with each other 72.6 ± 1.5 % of the time).

Inter-annotator. An item is the content of a comparison: the request and the two lists as an unordered pair. Every vote
is oriented to one canonical order (the lexicographically smaller list first), so a vote on the pair shown the other
way round has its left and right swapped. Each annotator's first standing vote on an item counts (later ones are their
repeats). Categories: left, right, tie, both_bad.
1. Cohen's kappa per annotator pair, on the items both rated (Cohen 1960): κ = (p_o − p_e) / (1 − p_e), with p_o the
   raw agreement and p_e = Σ_k p_1(k) p_2(k) the agreement expected from each one's own category shares.
2. Fleiss' kappa (Fleiss 1971) needs the same number of ratings on every item, though not by the same people. Items are
   grouped by how many annotators rated them (m = 2, 3, …) and κ is reported per group; nothing is imputed, nothing
   subsampled, so an item rated by 3 never mixes with items rated by 2.
κ is NaN when chance agreement is 1 (every rating in one category): agreement beyond chance is then undefined.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from core.records import CHOICES
from core.runs import RunInfo, read_json
from core.win_rate import wilson_interval

SWAPPED = {"left": "right", "right": "left", "tie": "tie", "both_bad": "both_bad"}  # a choice seen from the other side
DECIDED = ("left", "right")
EVERYONE = "(all)"  # the row that pools every annotator
INTRA_COLUMNS = ["annotator", "repeats", "agreed", "rate", "low", "high",
                 "decided", "decided_agreed", "decided_rate", "decided_low", "decided_high", "ceiling_high"]
KAPPA_COLUMNS = ["annotator_1", "annotator_2", "shared", "agreed", "raw_agreement", "kappa"]
FLEISS_COLUMNS = ["raters", "items", "kappa"]


# ---- votes that count ---------------------------------------------------------------------------------------------
def standing(votes: pd.DataFrame) -> pd.DataFrame:
    """Votes that stand: not retracted, not flagged as noise. Store.votes() returns only these by default (as export
    and training use them); this also accepts a frame read with include_retracted or include_noise."""
    keep = pd.Series(True, index=votes.index)
    if "retracted" in votes:
        keep &= ~votes.retracted.fillna(False).astype(bool)
    if "review" in votes:
        keep &= votes.review.ne("noise")  # a missing review (NULL) is not noise
    return votes[keep]


def vote_counts(votes: pd.DataFrame) -> pd.DataFrame:
    """Standing votes by annotator (rows, plus "(all)") and choice (columns, plus "total")."""
    table = _counts(standing(votes), "annotator")
    table.loc[EVERYONE] = table.sum()
    table["total"] = table.sum(axis=1)
    return table.rename_axis("annotator")


def _counts(votes: pd.DataFrame, by: str) -> pd.DataFrame:
    """How many votes of each choice per value of `by`: one column per choice, in CHOICES order, zeros filled."""
    counts = votes.groupby([by, "choice"]).size().unstack(fill_value=0)
    return counts.reindex(columns=list(CHOICES), fill_value=0).astype(int).rename_axis(columns=None)


# ---- intra-annotator: repeats ---------------------------------------------------------------------------------------
def repeat_outcomes(votes: pd.DataFrame) -> pd.DataFrame:
    """One row per repeat with a standing vote by the annotator who holds the standing vote on its original: the two
    choices, both from the original's side, whether they agree and whether both are decided (left or right)."""
    votes = standing(votes)
    repeats = votes[votes.repeat_of.notna()]
    originals = votes[["pair_id", "annotator", "choice"]].rename(
        columns={"pair_id": "repeat_of", "choice": "original_choice"})
    both = repeats.merge(originals, on=["repeat_of", "annotator"])  # a repeat by someone else finds no original
    out = pd.DataFrame({"annotator": both.annotator, "pair_id": both.pair_id, "repeat_of": both.repeat_of,
                        "original_choice": both.original_choice, "repeat_choice": both.choice.map(SWAPPED)})
    out["agreed"] = out.original_choice == out.repeat_choice
    out["decided"] = out.original_choice.isin(DECIDED) & out.repeat_choice.isin(DECIDED)
    return out


def accuracy_ceiling(decided_agreement: float) -> float:
    """The high end of the accuracy ceiling, (1 + √(2a − 1)) / 2, for self-agreement `a` on decided repeats (see the
    module docstring); an observed a below 0.5 (possible by chance at small n) gives 0.5."""
    return (1 + math.sqrt(max(0.0, 2 * decided_agreement - 1))) / 2


def _rate(agreed: int, n: int) -> tuple[float | None, float | None, float | None]:
    if not n:
        return None, None, None
    return (agreed / n, *wilson_interval(agreed, n))


def _intra_row(annotator: str, outcomes: pd.DataFrame) -> dict:
    agreed, decided = int(outcomes.agreed.sum()), outcomes[outcomes.decided]
    decided_agreed = int(decided.agreed.sum())
    rate, low, high = _rate(agreed, len(outcomes))
    d_rate, d_low, d_high = _rate(decided_agreed, len(decided))
    return {"annotator": annotator, "repeats": len(outcomes), "agreed": agreed, "rate": rate, "low": low, "high": high,
            "decided": len(decided), "decided_agreed": decided_agreed, "decided_rate": d_rate, "decided_low": d_low,
            "decided_high": d_high, "ceiling_high": None if d_rate is None else accuracy_ceiling(d_rate)}


def intra_agreement(votes: pd.DataFrame) -> pd.DataFrame:
    """Self-agreement per annotator, then "(all)" pooled (always present, with 0 repeats before any): agreed/repeats
    with its 95 % interval, the same over repeats decided both times, and the high end of the accuracy ceiling."""
    outcomes = repeat_outcomes(votes)
    rows = [_intra_row(name, group) for name, group in outcomes.groupby("annotator", sort=True)]
    return pd.DataFrame(rows + [_intra_row(EVERYONE, outcomes)], columns=INTRA_COLUMNS)


# ---- inter-annotator: kappas ----------------------------------------------------------------------------------------
def canonical_votes(votes: pd.DataFrame) -> pd.DataFrame:
    """Each annotator's first standing vote on each item (request + unordered pair of lists), its choice oriented to
    the canonical order (smaller text first): columns item (an integer id), annotator, choice."""
    votes = standing(votes).sort_values("created_at", kind="stable")
    flip = votes.left_text > votes.right_text  # shown the other way round from the canonical order
    oriented = pd.DataFrame({"prompt": votes.prompt, "first": votes.left_text.where(~flip, votes.right_text),
                             "second": votes.right_text.where(~flip, votes.left_text), "annotator": votes.annotator,
                             "choice": votes.choice.where(~flip, votes.choice.map(SWAPPED))})
    oriented = oriented.drop_duplicates(["prompt", "first", "second", "annotator"], keep="first")
    oriented["item"] = oriented.groupby(["prompt", "first", "second"], sort=False).ngroup()
    return oriented[["item", "annotator", "choice"]].reset_index(drop=True)


def cohen_kappa(first, second, categories=CHOICES) -> float:
    """Cohen's kappa of two raters' labels on the same items, in the same order (NaN when chance agreement is 1)."""
    first, second = np.asarray(first, dtype=object), np.asarray(second, dtype=object)
    if len(first) != len(second) or not len(first):
        raise ValueError(f"kappa needs two equally long, non-empty label lists, not {len(first)} and {len(second)}")
    if unknown := (set(first) | set(second)) - set(categories):
        raise ValueError(f"labels must be among {', '.join(categories)}, not {sorted(map(str, unknown))}")
    observed = float(np.mean(first == second))  # p_o
    chance = sum(float(np.mean(first == c)) * float(np.mean(second == c)) for c in categories)  # p_e
    return (observed - chance) / (1 - chance) if chance < 1 else math.nan


def pairwise_kappa(votes: pd.DataFrame) -> pd.DataFrame:
    """Cohen's kappa for every two annotators who rated at least one item in common, with the number of shared
    items and their raw agreement; most shared items first."""
    ratings = canonical_votes(votes).pivot(index="item", columns="annotator", values="choice")  # (items, annotators)
    rows = []
    for a, b in itertools.combinations(sorted(ratings.columns), 2):
        shared = ratings[[a, b]].dropna()
        if len(shared):
            agreed = int((shared[a] == shared[b]).sum())
            rows.append({"annotator_1": a, "annotator_2": b, "shared": len(shared), "agreed": agreed,
                         "raw_agreement": agreed / len(shared), "kappa": cohen_kappa(shared[a], shared[b])})
    table = pd.DataFrame(rows, columns=KAPPA_COLUMNS)
    return table.sort_values("shared", ascending=False, kind="stable").reset_index(drop=True)


def fleiss_kappa(counts) -> float:
    """Fleiss' kappa from an (items, categories) table of how many raters put each item in each category; every row
    must sum to the same number of raters n >= 2 (NaN when chance agreement is 1)."""
    counts = np.asarray(counts, dtype=float)
    raters = counts.sum(axis=1) if counts.ndim == 2 else np.array([])
    if not len(raters) or np.any(raters != raters[0]) or raters[0] < 2:
        raise ValueError("Fleiss' kappa needs a non-empty (items, categories) table whose rows all sum to the same "
                         "number of raters, at least 2")
    n = raters[0]
    per_item = ((counts ** 2).sum(axis=1) - n) / (n * (n - 1))  # P_i: agreeing rater pairs among n(n-1)
    shares = counts.sum(axis=0) / counts.sum()  # p_j: each category's share of all ratings
    observed, chance = per_item.mean(), float((shares ** 2).sum())  # P̄ and P̄_e
    return (observed - chance) / (1 - chance) if chance < 1 else math.nan


def fleiss_by_raters(votes: pd.DataFrame) -> pd.DataFrame:
    """Fleiss' kappa over the items rated by exactly m annotators, one row per m >= 2: raters, items, kappa."""
    counts = _counts(canonical_votes(votes), "item")  # (items, categories)
    raters = counts.sum(axis=1)
    rows = [{"raters": int(m), "items": int((raters == m).sum()), "kappa": fleiss_kappa(counts[raters == m])}
            for m in sorted(raters[raters >= 2].unique())]
    return pd.DataFrame(rows, columns=FLEISS_COLUMNS)


# ---- what the CLI and the dashboard show ---------------------------------------------------------------------------
def newest_reward_accuracy(runs: list[RunInfo]) -> dict | None:
    """The held-out accuracy of the newest reward run that reports one (its calibration.json): run, accuracy, correct,
    pairs and a 95 % interval; None before any. `runs` come newest first, as list_runs gives them."""
    for run in runs:
        report = read_json(run.folder.calibration) if run.stage == "reward" else {}
        if report.get("pairs") and report.get("correct") is not None:
            low, high = wilson_interval(report["correct"], report["pairs"])
            return {"run": run.name, "accuracy": report["correct"] / report["pairs"], "correct": report["correct"],
                    "pairs": report["pairs"], "low": low, "high": high}
    return None


def agreement_report(votes: pd.DataFrame, runs: list[RunInfo] = ()) -> dict:
    """Everything the Data page's Agreement section shows: intra (the table), overall (its "(all)" row), kappa,
    fleiss, annotators (how many hold a standing vote) and reward (newest_reward_accuracy)."""
    intra = intra_agreement(votes)
    return {"intra": intra, "overall": intra.iloc[-1].to_dict(), "kappa": pairwise_kappa(votes),
            "fleiss": fleiss_by_raters(votes), "annotators": standing(votes).annotator.nunique(),
            "reward": newest_reward_accuracy(list(runs))}


def ceiling_sentence(overall: dict) -> str:
    """What the pooled self-agreement on decided repeats says a reward model can reach ("" before any)."""
    if not overall["decided"]:
        return ""
    return (f"A reward model's held-out accuracy on these votes can be expected to top out between "
            f"{overall['decided_rate']:.1%} and {overall['ceiling_high']:.1%} (the annotators disagree with "
            "themselves the rest of the time).")


def headline(report: dict) -> list[tuple[str, str, str]]:
    """The Data page's three figures side by side, as (label, value, its 95 % interval in words): self-agreement on
    every repeat, on repeats decided both times, and the newest reward model's held-out accuracy."""
    def figure(label: str, rate, low, high, n, none: str) -> tuple[str, str, str]:
        return (label, "-", none) if not n else (label, f"{rate:.0%}", f"95 % interval {low:.0%}-{high:.0%}, n = {n}")

    o, reward = report["overall"], report["reward"] or {"accuracy": None, "low": None, "high": None, "pairs": 0}
    return [figure("self-agreement on repeats", o["rate"], o["low"], o["high"], o["repeats"], "no repeats voted yet"),
            figure("self-agreement, decided both times", o["decided_rate"], o["decided_low"], o["decided_high"],
                   o["decided"], "no repeat decided both times yet"),
            figure("reward model held-out accuracy", reward["accuracy"], reward["low"], reward["high"],
                   reward["pairs"], "no reward model yet")]


def _percent(rate, low, high, agreed, n) -> str:
    return "none" if not n else f"{rate:.1%} [{low:.1%}, {high:.1%}] ({agreed}/{n})"


def summary(votes: pd.DataFrame) -> str:
    """Plain text for `python -m core stats`: votes by annotator and choice, self-agreement, the kappa tables."""
    intra, kappa, fleiss = intra_agreement(votes), pairwise_kappa(votes), fleiss_by_raters(votes)
    lines = ["Standing votes by annotator and choice:", vote_counts(votes).to_string(), "",
             "Self-agreement on swapped repeats (95 % Wilson interval):"]
    for row in intra.itertuples():
        if not row.repeats:
            lines.append(f"  {row.annotator}: no repeat voted on by the same annotator yet")
            continue
        every = _percent(row.rate, row.low, row.high, row.agreed, row.repeats)
        decided = _percent(row.decided_rate, row.decided_low, row.decided_high, row.decided_agreed, row.decided)
        lines.append(f"  {row.annotator}: all choices {every}; decided both times {decided}")
    if ceiling := ceiling_sentence(intra.iloc[-1].to_dict()):
        lines.append(f"  {ceiling}")
    lines += ["", "Inter-annotator agreement (Cohen's kappa per pair, on the items both rated):"]
    lines.append(kappa.to_string(index=False, float_format="%.3f") if len(kappa) else
                 "  no item rated by two annotators yet")
    if len(fleiss):
        lines += ["", "Fleiss' kappa, items grouped by how many annotators rated them:",
                  fleiss.to_string(index=False, float_format="%.3f")]
    return "\n".join(lines)
