"""The policies an arena can serve, and the current best: the one a new round's policy starts from.

    python -m core next-round --plan-only      # prints the current best and why, then the plan from it

The current best (`current_best`, where core/train/rounds.py's Next round starts): of the arena's stored pairing,
the side that is a run (the base never is). When both are, the incumbent stays unless the challenger won the
head-to-head votes between them beyond chance: the 95 % Wilson interval of its share of the decided votes lies above
one half. The incumbent is the side the other was tuned from (its config.json's `sft_adapter`, followed back through
earlier rounds), else the first side (Next round stores (best, new)). Why a gate and not "whoever won more": a tuned
policy and its start are close, so 150 votes often split 51/49, and in the terse two-round benchmark that coin flip
sent round 2 on from a PPO policy the annotator preferred to its SFT start only 35 % of the time on held-out requests
(bench/README.md). AlphaGo Zero gates a new player the same way (it must win 55 % of 400 games before it becomes the
one that generates data). With no run in the pairing: the newest finished SFT run.

What the gate costs is rounds held back by a close call: on `ontopic` a round-2 policy that won 69 of 117 decided
votes stayed out, three votes short, and round 3 re-tuned SFT to no gain (bench/README.md, "A third round on
`ontopic`"). So when the challenger leads but not yet beyond chance, the reason says how many more decided votes at
its share would put it through (core.win_rate.votes_to_pass): vote on in the round before starting the next.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.collect.chooser import BASE, read_pairing, read_serving, save_pairing
from core.paths import REPO_ROOT
from core.records import InputError
from core.runs import (
    RunFolder,
    RunInfo,
    RunState,
    adapter_config,
    list_runs,
    read_adapter_config,
    read_json,
    run_folder,
)
from core.stages import POLICY_MADE_BY
from core.win_rate import votes_to_pass, wilson_interval, winners


# ---- the policies an arena can serve --------------------------------------------------------------------------------
def is_policy_run(run: RunInfo) -> bool:
    """A finished run whose adapter is a causal-LM LoRA (SFT, PPO, DPO, RLOO: not a reward model)."""
    saved = adapter_config(run.path)
    return run.status.get("state") == RunState.FINISHED and bool(saved) and \
        saved.get("task_type") in ("CAUSAL_LM", None)


def policy_runs(runs: list[RunInfo] | None = None) -> list[RunInfo]:
    """Every finished policy run, newest first."""
    return [run for run in (list_runs() if runs is None else runs) if is_policy_run(run)]


def check_policy(side: str) -> str:
    """A pairing's side as stored: "base", or the absolute path of a run (or adapter) folder holding a causal-LM
    adapter; ModelLoadError saying what to pass otherwise."""
    if side.strip() == BASE:
        return BASE
    read_adapter_config(side, "CAUSAL_LM", POLICY_MADE_BY)
    return str(Path(side).expanduser().absolute())


def label(side: str) -> str:
    """What a person calls a side: "base" or the run's folder name."""
    return side if side == BASE else Path(side).name


def set_pairing(store, first: str, second: str, round_name: str | None) -> tuple[str, str]:
    """What the Arena page's Switch does: store the pairing (first: the incumbent, second: the challenger) and the
    round's name (empty: no round). The arena follows from its next pair, dropping the pairs it had ready."""
    pairing = (check_policy(first), check_policy(second))
    save_pairing(store, pairing, round_name, keep_round=False)
    return pairing


# ---- the current best -----------------------------------------------------------------------------------------------
def head_to_head(votes: pd.DataFrame, first: str, second: str) -> tuple[int, int]:
    """(wins of `first`, wins of `second`) among decided votes (left_policy, right_policy, choice); ties and both-bad
    count for neither."""
    winner = winners(votes)
    return int((winner == first).sum()), int((winner == second).sum())


def run_of(side: str) -> Path:
    """The run folder of a side given as a run or as the adapter folder inside one; a relative path is the repo's."""
    path = Path(side).expanduser()
    return run_folder(path if path.is_absolute() else REPO_ROOT / path)


def tuned_from(side: str, steps: int = 20) -> list[Path]:
    """The runs `side` was tuned from, nearest first, read from each run's config.json `sft_adapter`; stops at the
    base (no adapter), a folder without a config or after `steps`."""
    chain, here = [], run_of(side)
    for _ in range(steps):
        start = read_json(RunFolder(here).config).get("sft_adapter")
        if not start:
            break
        here = run_of(start)
        chain.append(here)
    return chain


def challenger_wins(first_wins: int, second_wins: int) -> bool:
    """Whether the second side's share of the decided votes is above one half beyond chance (95 % Wilson)."""
    return wilson_interval(second_wins, first_wins + second_wins)[0] > 0.5


@dataclass(frozen=True)
class Standing:
    """The arena's two run sides as the gate reads them (the rule is in the module docstring)."""
    incumbent: str
    challenger: str
    kept: int  # decided head-to-head votes for the incumbent
    won: int  # ... for the challenger
    served: bool  # whether the arena has served this pairing: only then do the votes carry its policies' names


def run_sides(store) -> list[str]:
    """The stored pairing's sides that are runs holding an adapter (the base never is), in the pairing's order."""
    return [side for side in read_pairing(store) if side != BASE and adapter_config(side)]


def standing(store, sides: list[str] | None = None) -> Standing | None:
    """The head-to-head of the stored pairing when both sides are distinct runs (`sides`: run_sides, when the caller
    has read them already); None otherwise."""
    sides = run_sides(store) if sides is None else sides
    if len(sides) != 2 or sides[0] == sides[1]:
        return None
    order = (1, 0) if run_of(sides[1]) in tuned_from(sides[0]) else (0, 1)  # (incumbent, challenger)
    incumbent, challenger = (sides[i] for i in order)
    serving = read_serving(store)  # the arena knows the policies' names, which the votes carry
    if serving.get("pairing") != sides or len(serving.get("policies") or []) != 2:
        return Standing(incumbent, challenger, 0, 0, served=False)
    names = [serving["policies"][i] for i in order]
    return Standing(incumbent, challenger, *head_to_head(store.votes_between(*names), *names), served=True)


def best_and_why(store, runs: list[RunInfo] | None = None) -> tuple[str, str]:
    """The side a new policy starts from (the rule is in the module docstring) and one line saying why; InputError
    when there is none. When the challenger leads but not beyond chance, the line says how many more decided votes
    at that share would put it through (core.win_rate.votes_to_pass), so the person can vote on first."""
    sides = run_sides(store)
    now = standing(store, sides)
    if now and not (now.served and now.kept + now.won):
        why = "the arena has not served this pairing yet" if not now.served else "no decided head-to-head votes yet"
        return now.incumbent, f"{label(now.incumbent)}, the incumbent: {why}"
    if now:
        kept, won = now.kept, now.won
        low, high = wilson_interval(won, kept + won)
        share = (f"{label(now.challenger)} won {won} of {kept + won} decided head-to-head votes "
                 f"({100 * won / (kept + won):.0f} %, 95 % [{100 * low:.0f} %, {100 * high:.0f} %])")
        if challenger_wins(kept, won):
            return now.challenger, f"{share}: beyond chance, so it replaces {label(now.incumbent)}"
        more = votes_to_pass(won, kept + won)
        hint = "no number of votes would" if more is None else f"about {more} more decided votes would put it through"
        return now.incumbent, f"{share}: not beyond chance, so {label(now.incumbent)}, the incumbent, stays; at " \
                              f"this share {hint}"
    if sides:
        return sides[0], f"{label(sides[0])}: the pairing's run side"
    sft = [run for run in policy_runs(runs) if run.stage == "sft"]  # policy_runs lists the runs when None
    if not sft:
        raise InputError("no policy to start from: train one first (`python -m core train sft --preset quick`, or "
                         "the Train page) or pass --best RUN.")
    return str(sft[0].path), f"{sft[0].path.name}: the newest finished SFT run (no run in the arena's pairing)"


def current_best(store, runs: list[RunInfo] | None = None) -> str:
    """The side a new policy starts from (best_and_why without the why)."""
    return best_and_why(store, runs)[0]
