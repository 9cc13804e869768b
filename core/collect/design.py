"""Informative pair choice: the pairs that teach a Bradley–Terry reward model most about directions it has not seen.

Active Preference Optimization (Das et al. 2024, "Active Preference Optimization for Sample Efficient RLHF") and
Mehta et al. 2023 ("Sample Efficient RLHF via Active Exploration") choose the request and the two lists whose
feature difference d = φ(x, a) − φ(x, b) is largest in the norm of the inverse design matrix: dᵀ V⁻¹ d, with
V = λI + Σ_n d_n d_nᵀ over the pairs already voted on. For a reward that is linear in φ this is, up to the noise
scale, the posterior variance of the predicted reward gap: what the model does not know yet. The uncertain choice
(chooser.py, σ(Δr) closest to 0.5) instead asks for the pairs it finds close, which are also the annotator's
noisiest votes (bench/README.md, "Does choosing the uncertain pair save votes?").

    1. φ: pooled features of every candidate list, (N, H) (RewardScorer.features; bench/label_efficiency.py uses
       the frozen base model's, so the choice needs no reward model and works from the first vote)
    2. differences: d for every eligible pair of one request's candidates, (P, H); voted pairs' D_voted, (V, H)
    3. V⁻¹ = (λI + D_votedᵀ D_voted)⁻¹, (H, H); λ = ridge × the candidates' mean squared difference per dimension,
       so the choice does not depend on the features' scale
    4. greedy batch: take the pair with the largest dᵀ V⁻¹ d (at most one a request per batch, so a batch covers
       requests); fold it into V⁻¹ by Sherman–Morrison, V⁻¹ − u uᵀ / (1 + dᵀu) with u = V⁻¹ d, which lowers every
       other pair's value by (d_pᵀ u)² / (1 + dᵀu): the next pick covers another direction. Repeat.

With `unit`, every d is scaled to length 1 first, so a pair counts by its direction alone, not by how unlike its two
lists are. Measured (bench/README.md, "Choosing the request too"): on `terse` neither way saved votes against random
pairs (the raw design asks for far-apart pairs, easy calls for the annotator; by direction, close ones), so the
arena does not offer it.

Why by hand: none of the stack's libraries does optimal design over a pool, and the whole method is the ten lines
of `informative_pairs`.
"""
from __future__ import annotations

import itertools
from typing import Callable, Hashable, Sequence

import numpy as np


def pair_differences(features: np.ndarray, groups: Sequence[Sequence[int]],
                     allowed: Callable[[int, int], bool] | None = None) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """(P, H) differences φ_i − φ_j and their (i, j), for every pair i < j within each group of candidate rows
    (one group a request) that `allowed` accepts."""
    pairs = [(i, j) for group in groups for i, j in itertools.combinations(group, 2)
             if allowed is None or allowed(i, j)]
    if not pairs:
        return np.zeros((0, features.shape[1])), []
    left, right = zip(*pairs)
    return features[list(left)] - features[list(right)], pairs


def informative_pairs(candidates: np.ndarray, voted: np.ndarray, k: int, groups: Sequence[Hashable] | None = None,
                      ridge: float = 1.0, unit: bool = False) -> list[tuple[int, float]]:
    """Greedy batch optimal design: up to k rows of `candidates` (pair differences, (P, H)) as (row, dᵀV⁻¹d at its
    pick), V built from `voted` ((V, H) differences, possibly none) and each earlier pick. With `groups` (one label
    per row, e.g. its request) at most one row a group. `unit` scales every difference to length 1 first, so only
    its direction counts: the largest differences are two very unlike lists, which the annotator finds easy."""
    if len(candidates) == 0 or k <= 0:
        return []
    d = np.asarray(candidates, dtype=np.float64)  # (P, H)
    h = d.shape[1]
    voted = np.asarray(voted, dtype=np.float64).reshape(-1, h)
    if unit:
        d, voted = (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12) for x in (d, voted))
    lam = ridge * max(float((d ** 2).sum(axis=1).mean()) / h, 1e-12)  # 3. the prior's scale: the candidates' own
    inverse = np.linalg.inv(lam * np.eye(h) + voted.T @ voted)  # (H, H)
    values = np.einsum("ph,hk,pk->p", d, inverse, d)  # (P,) dᵀ V⁻¹ d for every candidate
    open_ = np.ones(len(d), dtype=bool)
    picks = []
    for _ in range(min(k, len(d))):  # 4. greedy, one Sherman–Morrison update a pick
        if not open_.any():
            break
        best = int(np.argmax(np.where(open_, values, -np.inf)))
        picks.append((best, float(values[best])))
        u = inverse @ d[best]  # (H,)
        shrink = (d @ u) ** 2 / (1.0 + d[best] @ u)  # (P,)
        inverse -= np.outer(u, u) / (1.0 + d[best] @ u)
        values -= shrink
        open_[best] = False
        if groups is not None:
            open_ &= np.asarray([g != groups[best] for g in groups])
    return picks
