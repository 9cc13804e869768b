"""How far to trust a reward model's preferences: accuracy, calibration (ECE) and accuracy against score margin.

For a pair the model's probability that the first list is better is σ(r₁ − r₂) (Bradley–Terry). Its confidence is
the probability of the side it prefers, max(p, 1 − p) ∈ [0.5, 1]; it is right when that side is the human's choice.
A calibrated model is right 70 % of the time when it is 70 % confident. ECE (Naeini et al. 2015; Guo et al. 2017)
is the gap between confidence and accuracy, averaged over confidence bins weighted by how many pairs fall in each.

At core's top level because the reward stage writes it (calibration.json) and the judges read it.
"""
from __future__ import annotations

import numpy as np

from core.win_rate import wilson_interval


def preference_probability(score_first, score_second) -> np.ndarray:
    """σ(r₁ − r₂): the Bradley–Terry probability that the first response is preferred."""
    return 1.0 / (1.0 + np.exp(-(np.asarray(score_first, float) - np.asarray(score_second, float))))


def reliability_bins(p_first, first_won, n_bins: int = 5) -> list[dict]:
    """Pairs grouped by confidence into equal-width bins over [0.5, 1]: count, mean confidence, accuracy."""
    p_first, first_won = np.asarray(p_first, float), np.asarray(first_won, bool)
    confidence = np.maximum(p_first, 1 - p_first)
    correct = (p_first > 0.5) == first_won
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        inside = which == b
        bins.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": int(inside.sum()),
                     "confidence": float(confidence[inside].mean()) if inside.any() else None,
                     "accuracy": float(correct[inside].mean()) if inside.any() else None})
    return bins


def expected_calibration_error(p_first, first_won, n_bins: int = 5) -> float:
    """Σ_b (n_b / N) · |accuracy_b − confidence_b|."""
    bins = [b for b in reliability_bins(p_first, first_won, n_bins) if b["count"]]
    total = sum(b["count"] for b in bins)
    if not total:
        return float("nan")
    return float(sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins))


def accuracy_by_margin(score_first, score_second, first_won, edges=(0.0, 0.5, 1.0, 2.0)) -> list[dict]:
    """Accuracy of pairs grouped by the model's score gap |r₁ − r₂|: a useful reward model is more often right
    where it is more decided. The last bin is open-ended."""
    gap = np.abs(np.asarray(score_first, float) - np.asarray(score_second, float))
    correct = (np.asarray(score_first, float) > np.asarray(score_second, float)) == np.asarray(first_won, bool)
    bounds = list(edges) + [np.inf]
    rows = []
    for low, high in zip(bounds[:-1], bounds[1:]):
        inside = (gap >= low) & (gap < high)
        rows.append({"low": float(low), "high": float(high), "count": int(inside.sum()),
                     "accuracy": float(correct[inside].mean()) if inside.any() else None})
    return rows


NO_ROUND = "(no round)"


def accuracy_by_round(rounds, correct) -> list[dict]:
    """Accuracy of decided pairs grouped by the round of collection they were voted in (None: no round; `rounds`
    None: none has one, as in scores written before rounds were recorded), with
    counts and 95 % Wilson intervals, in order of first appearance. The newest round's pairs compare the policies
    being tuned, so its accuracy, not the pooled one, says whether the model can rank what a reinforcement stage
    samples (bench/README.md, "Can the reward model tell the policy's own lists apart?")."""
    correct = [bool(c) for c in correct]
    rounds = [None] * len(correct) if rounds is None else rounds
    names = [NO_ROUND if r is None or r != r else str(r) for r in rounds]  # r != r: NaN
    rows = []
    for name in dict.fromkeys(names):
        hits = [c for n, c in zip(names, correct) if n == name]
        low, high = wilson_interval(sum(hits), len(hits))
        rows.append({"round": name, "pairs": len(hits), "correct": sum(hits), "accuracy": sum(hits) / len(hits),
                     "low": low, "high": high})
    return rows
