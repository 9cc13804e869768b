"""Win rates with honest intervals: how often one policy's list is preferred to another's.

A win rate counts ties as half a win and always comes with its count and a 95 % Wilson score interval
(Wilson 1927), which stays inside [0, 1] and keeps a sensible width at small n, where the normal approximation
does neither. The same interval serves any proportion, such as a well-formed rate.

At core's top level because training uses it as well as judging (Next round's gate, core/train/best.py).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for `successes` out of `n` (successes may be fractional: ties count half)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def votes_to_pass(wins: int, n: int, z: float = 1.96) -> int | None:
    """How many more decided votes, at the present share `wins / n`, put the Wilson interval's lower end above one
    half: 0 when it already is, None when the share is not above one half (no number of votes would).

    Not a normal approximation: the Wilson interval is the set of p0 a score test keeps, so its lower end passes one
    half exactly when the share passes it by z·sqrt(1/4 / n), that is when n > z² / (4 (share - 1/2)²). That bound
    is the first guess; the answer is then checked with wilson_interval itself, as the gate computes it, because at
    a whole-number bound floating point can land either side of one half. A projection, not a promise: the next
    votes may split otherwise. Whoever votes on until the gate passes looks more than once, which raises the chance
    that an equal policy gets through (2.5 % at one look, under 5 % at two); the figure tells a close lead (a few
    votes) from a far one (hundreds), where more votes are not worth their clicks."""
    if n <= 0 or 2 * wins <= n:
        return None
    if wilson_interval(wins, n)[0] > 0.5:
        return 0

    def passes(total: int) -> bool:
        return wilson_interval(wins / n * total, total)[0] > 0.5

    needed = max(n + 1, math.floor(z * z / (4 * (wins / n - 0.5) ** 2)) + 1)
    while needed > n + 1 and passes(needed - 1):
        needed -= 1
    while not passes(needed):
        needed += 1
    return needed - n


@dataclass(frozen=True)
class WinRate:
    wins: int
    losses: int
    ties: int

    @property
    def n(self) -> int:
        return self.wins + self.losses + self.ties

    @property
    def rate(self) -> float | None:
        return (self.wins + 0.5 * self.ties) / self.n if self.n else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.wins + 0.5 * self.ties, self.n)

    def as_dict(self) -> dict:
        low, high = self.interval
        return {**asdict(self), "n": self.n, "rate": self.rate, "low": low, "high": high}

    def __str__(self) -> str:
        if not self.n:
            return "no comparisons"
        low, high = self.interval
        return (f"{self.rate:.1%} [{low:.1%}, {high:.1%}] over {self.n} "
                f"({self.wins} wins, {self.losses} losses, {self.ties} ties counted half)")


def winners(votes):
    """The winning policy of each vote (a DataFrame of left_policy, right_policy, choice): the left or right side's
    name for a decided vote, missing for a tie or "both bad"."""
    return votes.left_policy.where(votes.choice == "left", votes.right_policy.where(votes.choice == "right"))


def win_rate(outcomes: list[str]) -> WinRate:
    """Outcomes "win" / "loss" / "tie", from the first policy's side."""
    unknown = set(outcomes) - {"win", "loss", "tie"}
    if unknown:
        raise ValueError(f"outcomes must be win, loss or tie, not {sorted(unknown)}")
    return WinRate(outcomes.count("win"), outcomes.count("loss"), outcomes.count("tie"))


def position_bias(left_wins: int, right_wins: int) -> dict:
    """Share of decided votes that went to the left list, with its 95 % interval: with sides shuffled at random an
    unbiased annotator sits at 0.5, so an interval that excludes 0.5 says the position sways the votes."""
    n = left_wins + right_wins
    low, high = wilson_interval(left_wins, n)
    verdict = ("no sign of position bias (sides are shuffled, so 50 % is unbiased)" if low <= 0.5 <= high else
               f"the {'left' if low > 0.5 else 'right'} list is favoured beyond chance")
    return {"left_share": left_wins / n if n else None, "low": low, "high": high, "n": n, "verdict": verdict}
