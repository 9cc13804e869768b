"""Informative pair choice (core/collect/design.py): the greedy optimal design against hand-worked values and
against recomputing V⁻¹ from scratch, one pick a request, and the pairs it builds from candidate features."""
from __future__ import annotations

import numpy as np
import pytest

from core.collect.design import informative_pairs, pair_differences


def test_the_first_pick_is_the_newest_direction_and_the_second_is_worked_by_hand():
    # candidates' mean squared difference per dimension: (1 + 1 + 2) / 3 / 2 = 2/3, so ridge 1.5 gives λ = 1.
    # V = I + [1, 0]ᵀ[1, 0] = diag(2, 1): values 1/2, 1, 3/2 -> [1, 1] first.
    # Then V = [[3, 1], [1, 2]], V⁻¹ = [[2, -1], [-1, 3]] / 5: [1, 0] -> 0.4, [0, 1] -> 0.6.
    candidates = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    picks = informative_pairs(candidates, np.array([[1.0, 0.0]]), k=3, ridge=1.5)
    assert [row for row, _ in picks] == [2, 1, 0]
    assert [value for _, value in picks][:2] == pytest.approx([1.5, 0.6])


def test_greedy_updates_equal_recomputing_the_inverse():
    rng = np.random.default_rng(0)
    candidates, voted = rng.normal(size=(40, 6)), rng.normal(size=(5, 6))
    picks = informative_pairs(candidates, voted, k=8, ridge=0.7)
    lam = 0.7 * (candidates ** 2).sum(axis=1).mean() / 6
    chosen = []
    for row, value in picks:
        design = np.vstack([voted, candidates[chosen]]) if chosen else voted
        inverse = np.linalg.inv(lam * np.eye(6) + design.T @ design)
        fresh = np.einsum("ph,hk,pk->p", candidates, inverse, candidates)
        fresh[chosen] = -np.inf
        assert row == int(np.argmax(fresh)) and value == pytest.approx(fresh[row])
        chosen.append(row)


def test_one_pick_a_request_a_batch_and_no_voted_pairs_needed():
    candidates = np.array([[3.0, 0.0], [2.9, 0.1], [0.0, 1.0]])  # the two biggest belong to request "a"
    picks = informative_pairs(candidates, np.zeros((0, 2)), k=3, groups=["a", "a", "b"])
    assert [row for row, _ in picks] == [0, 2]
    assert informative_pairs(np.zeros((0, 2)), np.zeros((0, 2)), k=3) == []


def test_pairs_stay_within_a_request_and_skip_what_is_not_allowed():
    features = np.array([[1.0], [4.0], [9.0], [0.0], [2.0]])
    diffs, pairs = pair_differences(features, [[0, 1, 2], [3, 4]], allowed=lambda i, j: (i, j) != (0, 2))
    assert pairs == [(0, 1), (1, 2), (3, 4)]
    assert diffs[:, 0].tolist() == [-3.0, -5.0, -2.0]


def test_unit_differences_choose_by_direction_not_size():
    # raw: λ = (100 + 1) / 2 / 2 = 25.25; V = 25.25 I + e1 e1ᵀ: 100 / 26.25 = 3.81 beats 1 / 25.25, the big pair wins.
    # unit: both length 1, λ = 1/2: e1 (already voted) 1 / 1.5 = 0.67, e2 1 / 0.5 = 2: the new direction wins.
    candidates, voted = np.array([[10.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.0]])
    assert informative_pairs(candidates, voted, k=1)[0][0] == 0
    (row, value), = informative_pairs(candidates, voted, k=1, unit=True)
    assert row == 1 and value == pytest.approx(2.0)
