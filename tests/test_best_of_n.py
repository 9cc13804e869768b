"""bench/best_of_n.py's maths against hand-worked values (the run on the tiny loop is in tests/test_loop.py)."""
from __future__ import annotations

import math
import random

import pytest

from bench.annotator import Taste, utility
from bench.best_of_n import (
    best_of,
    bootstrap_interval,
    kl_bound,
    ks,
    pair_agreement,
    paired,
    paired_orders,
    pick,
)

GOOD = "1. Turkey\n2. Stuffing\n3. Gravy\n4. Pie\n5. Rolls"  # what the terse taste likes
CHATTY = ("Sure! Here are some ideas you might enjoy for the holiday, each one explained at length because every "
          "family is different and there is a lot to say about it.")


def test_ks_are_powers_of_two_up_to_n_and_n_itself():
    assert ks(8) == [1, 2, 4, 8] and ks(6) == [1, 2, 4, 6] and ks(2) == [1, 2]


def test_kl_bound_is_log_k_minus_k_minus_one_over_k():
    assert kl_bound(1) == 0
    assert kl_bound(2) == pytest.approx(math.log(2) - 0.5)  # 0.193
    assert kl_bound(8) == pytest.approx(2.0794415 - 0.875)  # 1.204


def test_pick_takes_the_highest_of_the_first_k_and_the_first_of_equals():
    values = [0.1, 0.7, 0.7, 2.0]
    assert pick(values, 1) == 0 and pick(values, 2) == 1 and pick(values, 3) == 1 and pick(values, 4) == 3


def test_pair_agreement_counts_only_the_pairs_the_annotator_decides():
    # utilities 0, 1, 1.1: pairs (0,1) and (0,2) decided (gap >= 0.15), (1,2) a tie (gap 0.1) and left out.
    # (0,1): score 0.5 > 0.2 but utility 0 < 1 -> wrong; (0,2): 0.5 < 0.9 and 0 < 1.1 -> right.
    assert pair_agreement([0.5, 0.2, 0.9], [0.0, 1.0, 1.1], tie_band=0.15) == (1, 2)
    assert pair_agreement([1.0, 1.0], [0.0, 2.0], tie_band=0.15) == (0, 1)  # equal scores are not agreement
    assert pair_agreement([1.0, 2.0], [3.0, 3.0], tie_band=0.15) == (0, 0)


def test_bootstrap_interval_brackets_the_pooled_rate_and_is_a_point_when_every_request_agrees():
    rng = random.Random(0)
    assert bootstrap_interval([(3, 3), (2, 2), (1, 1)], rng, 200) == (1.0, 1.0)
    per_request = [(1, 2)] * 20 + [(3, 4)] * 20  # pooled 80 / 120 = 0.667
    low, high = bootstrap_interval(per_request, rng, 500)
    assert low < 80 / 120 < high and 0.55 < low and high < 0.75
    assert all(math.isnan(x) for x in bootstrap_interval([(0, 0)], rng, 10))


def test_best_of_judges_each_pick_against_the_reference():
    """Two requests, two candidates each: the reward model prefers the chatty list, the annotator its own pick."""
    requests = ["top 5 thanksgiving dishes", "top 5 thanksgiving sides"]
    candidates = [[GOOD, CHATTY], [CHATTY, GOOD]]
    scores = [[0.0, 1.0], [1.0, 0.0]]  # the reward model always picks CHATTY
    taste = Taste(name="terse", slip=0.0)
    utilities = [[utility(r, t, "terse") for t in c] for r, c in zip(requests, candidates)]
    assert utilities[0][0] > utilities[0][1] + 1  # the taste really prefers GOOD
    rows = best_of(requests, candidates, [GOOD, GOOD], scores, utilities, taste, n=2, seed=0)
    assert [r["k"] for r in rows] == [1, 2]
    best2 = rows[1]
    assert best2["annotator_vs_reference"]["ties"] == 2  # GOOD against GOOD
    assert best2["rm_vs_reference"]["losses"] == 2 and best2["rm_vs_reference"]["rate"] == 0
    assert best2["annotator_utility"]["mean"] == pytest.approx(utilities[0][0])
    assert best2["rm_utility"]["mean"] == pytest.approx(utilities[0][1])


def test_two_reward_models_are_compared_pair_by_pair_on_the_same_candidates():
    # utilities 0, 1, 1.1: pairs (0,1) and (0,2) decided, (1,2) a tie. Model A orders (0,1) right and (0,2) wrong;
    # model B orders (0,2) right and (0,1) wrong: one pair right only with each.
    a, b, u = [0.0, 1.0, -1.0], [0.0, -1.0, 1.0], [0.0, 1.0, 1.1]
    assert paired_orders(a, b, u, tie_band=0.15) == (1, 1, 2)
    assert paired_orders(a, a, u, tie_band=0.15) == (0, 0, 2)  # the same model: nothing right only in one
    assert paired_orders([0.0, 1.0, 2.0], [0.0, 0.0, 0.0], u, tie_band=0.15) == (2, 0, 2)  # equal scores: not right
    taste = Taste(name="terse")
    here = [{"candidates": ["x", "y", "z"], "rm_scores": [0.0, 1.0, 2.0], "utilities": u}] * 3
    there = [{"candidates": ["x", "y", "z"], "rm_scores": [0.0, 1.0, -1.0]}] * 3
    result = paired(here, there, taste, seed=0, resamples=200)
    assert (result["only_here"], result["only_there"], result["decided"]) == (3, 0, 6)
    assert result["difference"] == pytest.approx(0.5) and result["low"] == result["high"] == pytest.approx(0.5)
    with pytest.raises(SystemExit, match="other lists"):
        paired(here, [{**there[0], "candidates": ["x", "y", "w"]}] * 3, taste, seed=0, resamples=10)
