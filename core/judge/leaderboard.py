"""A leaderboard of every policy people have voted on: Bradley-Terry ratings with bootstrap intervals.

    python -m core leaderboard [--db PATH] [--reward-model RUN|newest|none] [--bootstrap 1000] [--seed 0]

The model (Bradley & Terry 1952): policy i beats policy j with probability σ(θ_i - θ_j). The strengths θ are fitted
by maximum likelihood over every kept vote, which is a logistic regression without intercept on a ±1 design (one
column per policy, +1 for one side, -1 for the other), as Chatbot Arena does (Chiang et al. 2024; FastChat's
fastchat/serve/monitor/rating_systems.py `compute_bt`, formerly elo_analysis.py `compute_mle_elo`). Ratings are
shown on the Elo scale: rating = 1000 + 400/ln(10) · (θ_i - θ_anchor), so 400 points are odds of 10 to 1.
Intervals come from the bootstrap: votes resampled with replacement B times, refitted, 2.5th-97.5th percentile
(FastChat's `compute_bootstrap_bt`, formerly `get_bootstrap_result`).

Decisions, where this departs from or pins down the textbook:
1. Kept votes: arena and blind demo votes, standing (not retracted, not flagged as noise: Store.votes), the first
   vote on a pair only (a self-consistency repeat, repeat_of set, would count one judgement twice). Imported votes
   (source "import", policy "imported") are left out: their lists have no known policy. A pair of one policy with
   itself says nothing about ratings and is left out too (the arena without a challenger shows only those).
2. A tie counts half a win to each side, and so does "both bad": neither says which list is better. FastChat does
   the same ("tie (bothbad)" is outcome 0.5 in `preprocess_for_bt`), and so does core/judge/demo.py's win rate.
3. Anchor: the base model (a policy without an adapter: no "+" in its name; the most-voted one if several) is
   1000, so a tuned policy's rating reads as its gain over the base and its interval as that gain's uncertainty
   (the anchor's own interval is then the point 1000). With no base among the policies, the mean is 1000.
4. A vanishing ridge (RIDGE) keeps the fit finite when a policy won or lost every vote, where the likelihood has
   no maximum; such a rating is marked, since only the prior bounds it. It moves other ratings by < 0.01 points.
5. Rank, after Chatbot Arena's: 1 + the number of policies rated above this one in at least 97.5 % of the
   resamples, so policies the votes cannot tell apart share a rank. FastChat (elo_analysis.py
   `report_elo_analysis_results`) counts the policies whose whole interval lies above; that test reads the
   anchor's point-interval as certainty, so here the interval is the gap's own, the same for any anchor.
6. Bootstrap by counts: the likelihood depends only on how often each (pair, outcome) occurs, so a resample is a
   multinomial draw of those counts (FastChat's trick), and all B fits run as one batched Newton iteration.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.records import InputError
from core.store.preferences import IMPORTED_POLICY

SCALE = 400 / math.log(10)  # Elo points per unit of log-odds
ANCHOR_RATING = 1000.0
RIDGE = 1e-6  # L2 weight on θ (log-odds units): finite ratings for unbeaten policies, negligible otherwise
KEPT_SOURCES = ("arena", "demo")
OUTCOME = {"left": 1.0, "right": 0.0, "tie": 0.5, "both_bad": 0.5}  # the left policy's share of the win
BOOTSTRAP = 1000
COLUMNS = ["rank", "policy", "rating", "low", "high", "votes", "mean_reward", "note"]


@dataclass
class Leaderboard:
    table: pd.DataFrame  # COLUMNS, best rating first
    win_rate: pd.DataFrame  # row policy's win rate against column policy (ties half); NaN where they never met
    counts: pd.DataFrame  # votes between each two policies (symmetric)
    anchor: str | None  # the policy rated ANCHOR_RATING, or None: the mean is
    groups: list[list[str]] = field(default_factory=list)  # policies linked by votes; >1: not comparable across


# ---- 1. the votes ---------------------------------------------------------------------------------------------------
def usable_votes(votes: pd.DataFrame) -> pd.DataFrame:
    """The votes a rating counts (decision 1), with `score`: the left policy's share of the win (decision 2)."""
    imported = IMPORTED_POLICY.name
    kept = votes[votes.source.isin(KEPT_SOURCES) & votes.repeat_of.isna() & votes.choice.isin(list(OUTCOME))
                 & (votes.left_policy != votes.right_policy)
                 & (votes.left_policy != imported) & (votes.right_policy != imported)]
    return kept.assign(score=kept.choice.map(OUTCOME).astype(float)).reset_index(drop=True)


def outcome_cells(kept: pd.DataFrame, policies: list[str]) -> pd.DataFrame:
    """Each distinct (first, second, score) with its count: policies by index in `policies`, first < second, score
    the first's share of the win. The likelihood depends on the votes only through these counts."""
    index = pd.Index(policies)
    left, right = index.get_indexer(kept.left_policy), index.get_indexer(kept.right_policy)
    score = np.where(left > right, 1 - kept.score, kept.score)
    keys = np.column_stack([np.minimum(left, right), np.maximum(left, right), np.rint(2 * score)]).astype(int)
    cells, count = np.unique(keys, axis=0, return_counts=True)  # sorted by (first, second, score)
    return pd.DataFrame({"first": cells[:, 0], "second": cells[:, 1], "score": cells[:, 2] / 2, "count": count})


def pair_tallies(cells: pd.DataFrame, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(first, second) (P,) of each compared pair, and n, won (R, P) from cell counts (R, C): votes between the two
    and the first's wins (ties half)."""
    pairs, pair_of_cell = np.unique(cells[["first", "second"]].to_numpy(), axis=0, return_inverse=True)
    to_pair = np.zeros((len(cells), len(pairs)))  # (C, P)
    to_pair[np.arange(len(cells)), pair_of_cell.ravel()] = 1.0
    return pairs[:, 0], pairs[:, 1], counts @ to_pair, (counts * cells.score.to_numpy()) @ to_pair


def resampled_counts(cells: pd.DataFrame, rounds: int, seed: int) -> np.ndarray:
    """Cell counts (rounds, C) of `rounds` resamples of the votes with replacement (decision 6)."""
    counts = cells["count"].to_numpy()
    return np.random.default_rng(seed).multinomial(counts.sum(), counts / counts.sum(), size=rounds).astype(float)


# ---- 2. the fit: maximum likelihood, many datasets at once ---------------------------------------------------------
def _loss(theta, first, second, n, won):
    """Negative log-likelihood plus the ridge, per dataset. theta (B, K); n, won (B, P)."""
    d = theta[:, first] - theta[:, second]  # (B, P)
    return (won * np.logaddexp(0, -d) + (n - won) * np.logaddexp(0, d)).sum(1) + RIDGE / 2 * (theta ** 2).sum(1)


def fit_strengths(first: np.ndarray, second: np.ndarray, n: np.ndarray, won: np.ndarray, k: int,
                  max_steps: int = 200, tol: float = 1e-8) -> np.ndarray:
    """Bradley-Terry strengths θ (B, K) in log-odds units for B datasets of pair tallies: pair p is policies
    first[p] vs second[p], n (B, P) votes of which first[p] won `won` (ties half). Newton's method with step
    halving; the gradient of the log-likelihood is X^T (won - n·σ(d)), its Hessian -X^T diag(n·σ(1-σ)) X."""
    rows, diagonal = np.arange(len(first)), np.arange(k)
    incidence = np.zeros((len(first), k))  # (P, K): |X|, where X is the ±1 design of the logistic regression
    incidence[rows, first] = incidence[rows, second] = 1.0
    design = incidence.copy()
    design[rows, second] = -1.0
    theta = np.zeros((n.shape[0], k))
    loss = _loss(theta, first, second, n, won)
    active = np.arange(n.shape[0])  # datasets still moving: a converged one costs nothing more
    for _ in range(max_steps):
        t, nn, ww = theta[active], n[active], won[active]
        p = 1 / (1 + np.exp(t[:, second] - t[:, first]))  # (A, P)
        grad = (nn * p - ww) @ design + RIDGE * t  # (A, K)
        curvature = nn * p * (1 - p)  # (A, P); X^T diag(c) X written out (pairs are distinct, first < second)
        hess = np.zeros((len(active), k, k))
        hess[:, first, second] = hess[:, second, first] = -curvature
        hess[:, diagonal, diagonal] = curvature @ incidence + RIDGE
        step = np.linalg.solve(hess, grad[..., None])[..., 0]  # (A, K)
        scale, old = np.ones(len(active)), loss[active]
        for _ in range(30):  # halve each dataset's step until its loss does not rise
            trial = t - scale[:, None] * step
            trial_loss = _loss(trial, first, second, nn, ww)
            worse = trial_loss > old + 1e-12 * np.abs(old)
            if not worse.any():
                break
            scale = np.where(worse, scale / 2, scale)
        theta[active], loss[active] = trial, np.minimum(trial_loss, old)
        active = active[np.abs(scale[:, None] * step).max(1) >= tol]
        if not active.size:
            break
    return theta


# ---- 3. the table ---------------------------------------------------------------------------------------------------
def default_anchor(kept: pd.DataFrame) -> str | None:
    """The most-voted policy without an adapter (decision 3), or None."""
    sides = pd.concat([kept.left_policy, kept.right_policy])
    bases = sides[~sides.str.contains("+", regex=False)]
    return bases.value_counts().sort_index().sort_values(ascending=False, kind="stable").index[0] \
        if len(bases) else None


def to_ratings(theta: np.ndarray, anchor: int | None) -> np.ndarray:
    """Elo-scale ratings from strengths (B, K): the anchor's column (or the mean) at ANCHOR_RATING."""
    centre = theta[:, [anchor]] if anchor is not None else theta.mean(1, keepdims=True)
    return ANCHOR_RATING + SCALE * (theta - centre)


def surely_above_rank(resampled: np.ndarray) -> np.ndarray:
    """1 + how many policies are above this one in at least 97.5 % of the resamples (decision 5). resampled (B, K)."""
    gaps = resampled[:, None, :] - resampled[:, :, None]  # (B, K, K): [b, i, j] = rating_j - rating_i
    return 1 + (np.percentile(gaps, 2.5, axis=0) > 0).sum(1)


def comparison_groups(policies: list[str], first: np.ndarray, second: np.ndarray) -> list[list[str]]:
    """Policies joined by at least one chain of votes (connected components of the comparison graph)."""
    parent = list(range(len(policies)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i
    for a, b in zip(first, second):
        parent[root(a)] = root(b)
    groups: dict[int, list[str]] = {}
    for i, name in enumerate(policies):
        groups.setdefault(root(i), []).append(name)
    return sorted(groups.values(), key=len, reverse=True)


def pair_matrices(policies: list[str], first, second, n, won) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(win rate of the row's policy against the column's, ties half, NaN where they never met; votes between the
    two) from pair tallies (P,)."""
    k = len(policies)
    counts, wins = np.zeros((k, k)), np.zeros((k, k))
    counts[first, second] = counts[second, first] = n
    wins[first, second], wins[second, first] = won, n - won
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(counts > 0, wins / counts, np.nan)
    index, columns = pd.Index(policies, name="policy"), pd.Index(policies, name="against")
    return pd.DataFrame(rate, index, columns), pd.DataFrame(counts.astype(int), index, columns)


def with_mean_rewards(board: Leaderboard, mean_rewards: dict[str, float] | None) -> Leaderboard:
    """The board with its mean_reward column filled from {policy: mean reward-model score} (NaN where absent)."""
    table = board.table.assign(mean_reward=board.table.policy.map(mean_rewards or {}).astype(float))[COLUMNS]
    return Leaderboard(table, board.win_rate, board.counts, board.anchor, board.groups)


def leaderboard(votes: pd.DataFrame, mean_rewards: dict[str, float] | None = None, bootstrap: int = BOOTSTRAP,
                seed: int = 0, anchor: str | None = None) -> Leaderboard:
    """The leaderboard of every policy in the kept votes (Store.votes() columns). `anchor`: the policy rated 1000
    (default: the base, decision 3). Raises InputError when no vote compares two policies."""
    kept = usable_votes(votes)
    if kept.empty:
        raise InputError("no arena or blind demo vote compares two different policies yet: vote on pairs of base vs "
                         "a tuned policy (python -m apps.arena --challenger RUN, or the dashboard's blind demo).")
    if bootstrap < 1:
        raise InputError(f"bootstrap must be at least 1 round (1000 is usual), not {bootstrap}")
    policies = sorted(set(kept.left_policy) | set(kept.right_policy))
    anchor = anchor or default_anchor(kept)
    if anchor not in (None, *policies):
        raise InputError(f"anchor {anchor!r} has no votes; pass one of {', '.join(policies)}")
    anchor_index = None if anchor is None else policies.index(anchor)
    # 1. tally: how often each (pair, outcome) occurs
    cells = outcome_cells(kept, policies)
    first, second, n, won = pair_tallies(cells, cells["count"].to_numpy(float)[None])
    # 2. fit the votes, then each resample
    point = to_ratings(fit_strengths(first, second, n, won, len(policies)), anchor_index)[0]
    boot_n, boot_won = pair_tallies(cells, resampled_counts(cells, bootstrap, seed))[2:]
    resampled = to_ratings(fit_strengths(first, second, boot_n, boot_won, len(policies)), anchor_index)
    low, high = np.percentile(resampled, [2.5, 97.5], axis=0)
    # 3. the table, best first
    votes_of = np.bincount(first, n[0], len(policies)) + np.bincount(second, n[0], len(policies))
    wins_of = np.bincount(first, won[0], len(policies)) + np.bincount(second, n[0] - won[0], len(policies))
    note = np.where(wins_of == votes_of, "won every vote: no upper bound",
                    np.where(wins_of == 0, "lost every vote: no lower bound", ""))
    table = pd.DataFrame({"rank": surely_above_rank(resampled), "policy": policies, "rating": point, "low": low,
                          "high": high, "votes": votes_of.astype(int), "note": note})
    table = table.sort_values(["rating", "policy"], ascending=[False, True], kind="stable").reset_index(drop=True)
    rate, counts = pair_matrices(policies, first, second, n[0], won[0])
    order = list(table.policy)
    board = Leaderboard(table, rate.loc[order, order], counts.loc[order, order], anchor,
                        comparison_groups(policies, first, second))
    return with_mean_rewards(board, mean_rewards)


# ---- 4. what the reward model thinks of each policy ---------------------------------------------------------------
def mean_reward_by_policy(votes: pd.DataFrame, scorer) -> dict[str, float]:
    """Each policy's mean reward-model score over the distinct (request, list) pairs it showed in the kept votes:
    beside the ratings, a gap between what the reward model likes and what people choose. `scorer` has
    `.score(prompts, texts) -> list[float]` (core.train.reward_model.RewardScorer)."""
    kept = usable_votes(votes)
    lists = pd.concat([kept[["prompt", f"{side}_text", f"{side}_policy"]].set_axis(["prompt", "text", "policy"], axis=1)
                       for side in ("left", "right")]).drop_duplicates().reset_index(drop=True)
    if lists.empty:
        return {}
    lists["reward"] = scorer.score(list(lists.prompt), list(lists.text))
    return {policy: float(mean) for policy, mean in lists.groupby("policy").reward.mean().items()}


def mean_reward_under(run: str, votes: pd.DataFrame, device: str | None = None) -> dict[str, float]:
    """`mean_reward_by_policy` under a finished reward run's model, loaded here (seconds: torch and PEFT)."""
    # lazy: fitting the ratings alone needs neither torch nor PEFT
    from core.train.reward_model import RewardScorer

    return mean_reward_by_policy(votes, RewardScorer.from_folder(run, device=device))


# ---- 5. as plain text -----------------------------------------------------------------------------------------------
def printable(name: object) -> str:
    """A policy name fit for a terminal: control characters (escape sequences) become '?'."""
    return "".join(ch if ch.isprintable() else "?" for ch in str(name))


def summary(board: Leaderboard) -> str:
    """The table and the win-rate matrix as plain text."""
    t = board.table
    width = max(6, *(len(printable(p)) for p in t.policy))
    anchor = f"{printable(board.anchor)} = {ANCHOR_RATING:.0f}" if board.anchor else f"mean = {ANCHOR_RATING:.0f}"
    lines = [f"Bradley-Terry ratings (Elo scale, {anchor}; ties and 'both bad' count half; 95 % bootstrap interval)",
             f"{'rank':>4}  {'policy':<{width}}  {'rating':>6}  {'95 % interval':>14}  {'votes':>5}  {'mean RM':>7}"]
    for r in t.itertuples():
        reward = "-" if pd.isna(r.mean_reward) else f"{r.mean_reward:+.3f}"
        lines.append(f"{r.rank:>4}  {printable(r.policy):<{width}}  {r.rating:>6.0f}  "
                     f"{f'[{r.low:.0f}, {r.high:.0f}]':>14}  {r.votes:>5}  {reward:>7}" + (f"  ({r.note})" if r.note
                                                                                            else ""))
    if len(board.groups) > 1:
        lines.append("warning: some policies never met, even through others; ratings compare only within: "
                     + " | ".join(", ".join(map(printable, g)) for g in board.groups))
    lines += ["", "Win rate of the row's policy against the column's (ties half), votes in brackets:"]
    names = [f"#{n}" for n in range(1, len(t) + 1)]
    lines.append(f"{'':<{width + 4}}" + "".join(f"{n:>12}" for n in names))
    for n, policy in enumerate(t.policy):
        cells = ["-" if not count else f"{rate:.0%} ({count})"
                 for rate, count in zip(board.win_rate.loc[policy], board.counts.loc[policy])]
        lines.append(f"{names[n]:<4}{printable(policy):<{width}}" + "".join(f"{c:>12}" for c in cells))
    return "\n".join(lines)
