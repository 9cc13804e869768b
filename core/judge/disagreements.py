"""Where a reward model and the human disagree: the pairs to look at first when a reward model disappoints.

A reward run scores every labelled pair it snapshotted (scores.parquet: score_left/right and p_left = σ(Δ)). A
decided vote (left or right) is a disagreement when the model prefers the other side; the most confident ones come
first, since a confident model against a human is either a reward-model error worth understanding or a human slip
worth fixing. Reviews written since (store.review_vote) show beside each pair: relabelled, flagged as noise (kept
out of the next export and training snapshot), or confirmed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.calibration import (
    accuracy_by_margin,
    accuracy_by_round,
    reliability_bins,
)
from core.runs import RunFolder, read_json

COLUMNS = ["comparison_id", "split", "prompt", "choice", "model_prefers", "confidence", "score_left", "score_right",
           "left_text", "right_text", "annotator", "review"]


def load_scores(reward_run: Path) -> pd.DataFrame:
    """A reward run's scores.parquet, or an empty frame when the run has none (still training, failed, damaged)."""
    try:
        return pd.read_parquet(RunFolder(reward_run).scores)
    except (OSError, ValueError):
        return pd.DataFrame(columns=["comparison_id", "split", "prompt", "choice", "p_left", "score_left",
                                     "score_right", "left_text", "right_text", "annotator", "correct"])


def latest_reviews(reviews: pd.DataFrame) -> pd.DataFrame:
    """The newest review of each vote, as one word: confirmed, noise, or "relabelled: <choice>"."""
    if reviews.empty:
        return pd.DataFrame(columns=["comparison_id", "review"])
    newest = reviews.sort_values("created_at").drop_duplicates("comparison_id", keep="last")
    newest["review"] = np.where(newest.action == "relabel", "relabelled: " + newest.choice.fillna(""),
                                np.where(newest.action == "confirm", "confirmed", newest.action))
    return newest[["comparison_id", "review"]]


def disagreements(scores: pd.DataFrame, reviews: pd.DataFrame, split: str | None = None) -> pd.DataFrame:
    """Decided votes the model gets wrong, most confident first. `split` keeps only "train" or "eval" pairs."""
    decided = scores[scores.choice.isin(["left", "right"])].copy()
    if split:
        decided = decided[decided.split == split]
    decided["model_prefers"] = np.where(decided.p_left > 0.5, "left", np.where(decided.p_left < 0.5, "right", "tie"))
    wrong = decided[decided.model_prefers != decided.choice].copy()
    wrong["confidence"] = np.maximum(wrong.p_left, 1 - wrong.p_left)
    wrong = wrong.merge(latest_reviews(reviews), on="comparison_id", how="left")
    wrong["review"] = wrong.review.fillna("open")
    return wrong.sort_values("confidence", ascending=False)[COLUMNS].reset_index(drop=True)


def calibration(reward_run: Path, scores: pd.DataFrame | None = None, split: str = "eval") -> dict:
    """Reliability bins, accuracy by score gap and by round of collection: from calibration.json for held-out pairs
    (what training reported), recomputed from scores.parquet for any other split ("train" or "all")."""
    if split == "eval":
        saved = read_json(RunFolder(reward_run).calibration)
        return {"reliability": pd.DataFrame(saved.get("reliability", [])),
                "by_margin": pd.DataFrame(saved.get("accuracy_by_margin", [])),
                "by_round": pd.DataFrame(saved.get("accuracy_by_round", [])),
                "accuracy": saved.get("accuracy"), "pairs": saved.get("pairs", 0), "ece": saved.get("ece")}
    scores = load_scores(reward_run) if scores is None else scores
    decided = scores[scores.choice.isin(["left", "right"])]
    if split != "all":
        decided = decided[decided.split == split]
    left_won = (decided.choice == "left").to_numpy()
    return {"reliability": pd.DataFrame(reliability_bins(decided.p_left.to_numpy(float), left_won)),
            "by_margin": pd.DataFrame(accuracy_by_margin(decided.score_left.to_numpy(float),
                                                         decided.score_right.to_numpy(float), left_won)),
            "by_round": pd.DataFrame(accuracy_by_round(decided.get("round"), decided.correct)),
            "accuracy": float(decided.correct.astype(bool).mean()) if len(decided) else None,
            "pairs": len(decided), "ece": None}
