"""The score head as a probe first (LP-FT, core/train/reward_probe.py): the Bradley–Terry fit, folds, the head's
weights in raw feature units, the head set on a tiny reward model, and `train reward --head-init probe`."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from core.runs import read_jsonl, read_status
from core.train.reward_probe import (
    L2_GRID,
    fit_bt,
    folds,
    init_head_from_probe,
    one_standard_error_l2,
    probe_head,
)
from tests.helpers import run_cli


def test_the_bradley_terry_probe_recovers_a_known_direction():
    rng = np.random.default_rng(0)
    truth = np.array([2.0, -1.0, 0.0])
    diff = rng.normal(size=(400, 3))
    diff *= np.where(diff @ truth > 0, 1, -1)[:, None]  # every row oriented chosen - rejected under `truth`
    w = fit_bt(diff, np.zeros(400), l2=1e-3)
    assert np.dot(w, truth) / np.linalg.norm(w) / np.linalg.norm(truth) > 0.95
    assert (diff @ w > 0).mean() > 0.95


def test_a_margin_pushes_the_fitted_gap_past_it():
    # one feature, every pair chosen by +1 in it: the fit's gap for a pair grows with the margin it must clear
    diff = np.ones((20, 1))
    w0, w1 = fit_bt(diff, np.zeros(20), l2=0.1), fit_bt(diff, np.ones(20), l2=0.1)
    assert w1[0] > w0[0] > 0


def test_folds_keep_a_request_whole():
    groups = pd.Series(["a", "a", "b", "c", "c", "d", "e", "f"])
    fold = folds(groups, k=3)
    assert fold[0] == fold[1] and fold[3] == fold[4]
    assert set(fold) == {0, 1, 2}


def test_the_head_scores_raw_features_as_the_standardised_probe_does():
    # features on wildly different scales (a 135M model's last state has a few huge dimensions); the taste reads the
    # small second feature, so the head must undo the standardisation exactly
    rng = np.random.default_rng(1)
    features = rng.normal(size=(60, 4)) * np.array([1000.0, 0.01, 1.0, 50.0]) + np.array([5.0, 0.0, -3.0, 0.0])
    chosen, rejected = np.arange(0, 60, 2), np.arange(1, 60, 2)
    flip = features[chosen, 1] < features[rejected, 1]
    chosen[flip], rejected[flip] = rejected[flip], chosen[flip].copy()  # chosen: the larger second feature
    groups = pd.Series([f"request {i % 6}" for i in range(30)])
    weights, found = probe_head(features, chosen, rejected, np.zeros(30), groups)
    assert found["probe/l2"] in L2_GRID and 0 <= found["probe/cv_accuracy"] <= 1
    raw_gap = (features[chosen] - features[rejected]) @ weights
    spread = features.std(0) + 1e-6
    z = features / spread  # unit spread (differences need no centre)
    refit = fit_bt(z[chosen] - z[rejected], np.zeros(30), found["probe/l2"])
    assert raw_gap == pytest.approx((z[chosen] - z[rejected]) @ refit, rel=1e-6, abs=1e-9)
    assert found["probe/train_accuracy"] == np.mean(raw_gap > 0) >= 0.9
    assert abs(weights[1]) * spread[1] == max(abs(weights) * spread)  # the deciding feature carries the most weight


def test_the_centring_penalty_pulls_the_scores_toward_zero():
    # every list's features sit far from zero: without a bias, only the penalty keeps the scores near 0
    rng = np.random.default_rng(2)
    features = rng.normal(size=(40, 3)) + np.array([10.0, 0.0, 0.0])
    chosen, rejected = np.arange(0, 40, 2), np.arange(1, 40, 2)
    flip = features[chosen, 1] < features[rejected, 1]
    chosen[flip], rejected[flip] = rejected[flip], chosen[flip].copy()
    groups = pd.Series([f"request {i % 5}" for i in range(20)])
    _, free = probe_head(features, chosen, rejected, np.zeros(20), groups)
    _, centred = probe_head(features, chosen, rejected, np.zeros(20), groups, center=1.0)
    assert abs(centred["probe/mean_score"]) < 0.1 < abs(free["probe/mean_score"])
    assert centred["probe/train_accuracy"] == 1.0


def test_the_one_standard_error_rule_takes_the_largest_lambda_near_the_best():
    # means .70 .74 .72 .60; the best (.74) has fold accuracies .70 .78 (sd .04, se .04/√2 ≈ .028): floor ≈ .712
    by_l2 = {0.01: [0.70, 0.70], 0.1: [0.70, 0.78], 1.0: [0.71, 0.73], 10.0: [0.60, 0.60]}
    assert one_standard_error_l2(by_l2) == 1.0
    by_l2[1.0] = [0.70, 0.70]  # .70 < floor: the best itself
    assert one_standard_error_l2(by_l2) == 0.1


def test_the_tiny_reward_model_starts_scoring_as_its_probe(tiny_model_dir):
    from core.model import load_causal_lm, load_tokenizer
    from core.train.reward_model import RewardScorer

    tok = load_tokenizer(tiny_model_dir)
    model = load_causal_lm(tiny_model_dir, torch.device("cpu"), dtype=torch.float32, head="reward")
    model.config.pad_token_id = tok.pad_token_id
    topics = ["fruits", "films", "books", "games", "parks", "songs"]
    pairs = pd.DataFrame({"prompt": [f"Top 5 {t}" for t in topics for _ in range(2)],
                          "chosen": [f"1. {t} {k}\n2. more {t}" for t in topics for k in range(2)],
                          "rejected": [f"Some {t}! Enjoy {k}" for t in topics for k in range(2)],
                          "margin": [1.0, 0.0] * len(topics)})
    before = model.score.weight.detach().clone()
    found = init_head_from_probe(model, RewardScorer(model, tok), pairs, use_margin=True, swap_labels=False)
    assert not torch.equal(before, model.score.weight)
    scorer = RewardScorer(model, tok)
    gap = np.array(scorer.score(list(pairs.prompt), list(pairs.chosen))) - \
        np.array(scorer.score(list(pairs.prompt), list(pairs.rejected)))
    assert np.mean(gap > 0) == pytest.approx(found["probe/train_accuracy"])
    swapped = init_head_from_probe(model, scorer, pairs, use_margin=True, swap_labels=True)
    assert swapped["probe/train_accuracy"] == pytest.approx(found["probe/train_accuracy"])
    after_swap = np.array(scorer.score(list(pairs.prompt), list(pairs.chosen))) - \
        np.array(scorer.score(list(pairs.prompt), list(pairs.rejected)))
    assert np.mean(after_swap < 0) == pytest.approx(found["probe/train_accuracy"])  # the head now prefers the rejected


def test_train_reward_with_a_probe_head_logs_the_fit_and_keeps_the_head(tiny_model_dir, preference_db, tmp_path):
    # at a learning rate of ~0 the trained model is its start: held-out votes come out as the probe ordered them.
    # A random head cannot fake this: it orders these clear-cut pairs one way whatever the labels, while the probe
    # fitted on swapped labels must order the held-out votes backwards.
    accuracy = {}
    for swap in ("false", "true"):
        out = tmp_path / f"swap-{swap}"
        run_cli("train", "reward", "--base-model", tiny_model_dir, "--db", preference_db, "--max-steps", "2",
                "--batch-size", "8", "--eval-fraction", "0.4", "--learning-rate", "1e-9", "--head-init", "probe",
                "--swap-labels", swap, "--output-dir", out)
        rows = read_jsonl(out / "metrics.jsonl")
        fit = rows[0]
        assert fit["step"] == 0 and fit["probe/l2"] in L2_GRID and fit["probe/train_accuracy"] >= 0.9
        assert abs(fit["probe/mean_score"]) < 3 * fit["probe/score_std"]
        assert read_status(out)["state"] == "finished"
        accuracy[swap] = rows[-1]["eval/accuracy"]
    assert accuracy["false"] >= 0.9 and accuracy["true"] <= 0.1, accuracy
    bad = run_cli("train", "reward", "--head-init", "zeros", check=False)
    assert bad.returncode == 2 and "head-init" in bad.stderr and "Traceback" not in bad.stderr


def test_a_single_request_has_nothing_to_cross_validate_and_still_gets_a_head():
    features = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.5]])
    weights, found = probe_head(features, np.array([0, 2]), np.array([1, 1]), np.zeros(2), pd.Series(["only", "only"]))
    assert found["probe/l2"] == L2_GRID[len(L2_GRID) // 2] and found["probe/cv_accuracy"] is None
    assert np.all(np.isfinite(weights)) and found["probe/train_accuracy"] == 1.0
