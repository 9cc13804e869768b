"""Rounds of collection, and the Next-round loop that trains the next policy and puts it in the arena.

    python -m core next-round [--method online-dpo|ppo|dpo|rloo|rejection] [--best RUN] [--preset quick] [--plan-only]

A round is a named period of collection with its pairing ("round 2: ppo-20261121-101500 vs sft-20261120-090000"):
the arena's stored pairing and round name (core/collect/chooser.py; set on the dashboard's Arena page, with
`python -m apps.arena --pairing A,B --round NAME`, or by step 3 below). Every pair records the round it was shown in;
the Data page counts the votes of each round and a run's data/lineage.json says how many of each it trained on.

Next round, three steps, each an ordinary run (visible and stoppable on the Train and Runs pages):
    1. train a reward model on every vote so far
    2. tune a new policy (ppo, dpo, rloo or rejection) starting from the current best; all but dpo score with step
       1's model. online-dpo takes two runs here: rejection --sample-only (the best's own lists, scored by step 1's
       model), then dpo --pairs-from that run (each request's best list over its worst, RPO's --sft-weight 1)
    3. put it in the arena against the current best: the pairing (best, new) and a new round's name
`plan()` writes the steps out, pure: the run folders are named in advance, so step 2 can name step 1's output and the
dashboard can show exactly what will run before it starts. `run_plan()` is the orchestrator, a process of its own
(`start_next_round` is how the dashboard starts it): it launches each step through core/train/launcher.py, waits for
it to finish, stops at the first that does not, and only then sets the pairing and round.

The current best (`current_best`): of the arena's stored pairing, the side that is a run (the base never is). When
both are, the incumbent stays unless the challenger won the head-to-head votes between them beyond chance: the
95 % Wilson interval of its share of the decided votes lies above one half. The incumbent is the side the other was
tuned from (its config.json's `sft_adapter`, followed back through earlier rounds), else the first side (step 3
stores (best, new)). Why a gate and not "whoever won more": a tuned policy and its start are close, so 150 votes
often split 51/49, and in the terse two-round benchmark that coin flip sent round 2 on from a PPO policy the
annotator preferred to its SFT start only 35 % of the time on held-out requests (bench/README.md). AlphaGo
Zero gates a new player the same way (it must win 55 % of 400 games before it becomes the one that generates data).
With no run in the pairing: the newest finished SFT run.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import pandas as pd

from core.collect.chooser import (
    BASE,
    read_pairing,
    read_round,
    read_serving,
    save_pairing,
)
from core.judge.win_rate import wilson_interval
from core.paths import REPO_ROOT
from core.records import USER_ERRORS, InputError, StoreBusy, utc_now
from core.train.runs import (
    FINAL_STATES,
    RunFolder,
    RunInfo,
    RunState,
    adapter_config,
    list_runs,
    pid_alive,
    read_adapter_config,
    read_json,
    read_status,
    run_folder,
    runs_root,
)
from core.train.stages import STAGES, config_class

METHODS = ("ppo", "dpo", "rloo", "rejection", "online-dpo")  # how step 2 tunes the new policy
# the default: the method that beat SFT by the most on every scripted taste (bench/README.md, four draws a request:
# `reasons` 68.4 %, `ontopic` 64.4 %, `terse` 60.6 %), where PPO's best over SFT on any taste was 61.8 %
RECOMMENDED = "online-dpo"
# online DPO: the policy's own lists, sampled and scored by the new reward model (rejection --sample-only), then DPO on
# each request's best over its worst, with the recipe measured on `reasons` (bench/README.md, "Online DPO, and
# rejection sampling again, on `reasons`"), plus RPO's NLL term on the chosen lists: without it online DPO on `terse`
# fell to 43.6 % against SFT, with it 60.6 % ("Online DPO with round 2's reward model, on `terse`, ..."); on `reasons`
# it did no harm, 68.4 % against plain DPO's 67.4 % ("RPO on `reasons`, a second round on `terse`, ...")
ONLINE_DPO = {"epochs": "1", "max_steps": "-1", "batch_size": "8", "learning_rate": "2e-4", "sft_weight": "1"}
SCORED = ("ppo", "rloo", "rejection")  # the methods that take --reward-model (DPO learns from the votes themselves)
NEXT_ROUND_KEY = "next_round.status"  # meta: what the orchestrator is doing (state, step, message, pid)
MADE_BY = "python -m core train sft (or ppo, dpo, rloo, rejection)"


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
    read_adapter_config(side, "CAUSAL_LM", MADE_BY)
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
    winner = votes.left_policy.where(votes.choice == "left", votes.right_policy.where(votes.choice == "right"))
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


def best_and_why(store, runs: list[RunInfo] | None = None) -> tuple[str, str]:
    """The side a new policy starts from (the rule is in the module docstring) and one line saying why; InputError
    when there is none."""
    sides = [side for side in read_pairing(store) if side != BASE and adapter_config(side)]
    if len(sides) == 2 and sides[0] != sides[1]:
        order = (1, 0) if run_of(sides[1]) in tuned_from(sides[0]) else (0, 1)  # (incumbent, challenger)
        incumbent, challenger = (sides[i] for i in order)
        serving = read_serving(store)  # the arena knows the policies' names, which the votes carry
        if serving.get("pairing") != sides or len(serving.get("policies") or []) != 2:
            return incumbent, f"{label(incumbent)}, the incumbent: the arena has not served this pairing yet"
        names = [serving["policies"][i] for i in order]
        kept, won = head_to_head(store.votes_between(*names), *names)
        if not kept + won:
            return incumbent, f"{label(incumbent)}, the incumbent: no decided head-to-head votes yet"
        low, high = wilson_interval(won, kept + won)
        share = (f"{label(challenger)} won {won} of {kept + won} decided head-to-head votes "
                 f"({100 * won / (kept + won):.0f} %, 95 % [{100 * low:.0f} %, {100 * high:.0f} %])")
        if challenger_wins(kept, won):
            return challenger, f"{share}: beyond chance, so it replaces {label(incumbent)}"
        return incumbent, f"{share}: not beyond chance, so {label(incumbent)}, the incumbent, stays"
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


def round_title(number: int, challenger: str, incumbent: str) -> str:
    """A round's name as the store keeps it, e.g. "round 2: ppo-20261204-1618 vs sft-20261204-1618"
    (next_round_number reads the number back)."""
    return f"round {number}: {label(challenger)} vs {label(incumbent)}"


def next_round_number(names) -> int:
    """One more than the highest "round N" among `names` (1 when none is numbered)."""
    numbers = [int(m.group(1)) for name in names if name and (m := re.match(r"round (\d+)", str(name)))]
    return max(numbers, default=0) + 1


# ---- the plan (pure) ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One step of a plan: a training run (`stage`, its preset and settings, into `run_dir`), or, with no stage, the
    arena's new pairing and round."""
    title: str
    stage: str | None = None
    preset: str | None = None
    settings: dict[str, str] = field(default_factory=dict)  # config field -> value, as typed on the command line
    pairing: tuple[str, str] | None = None
    round_name: str | None = None

    @property
    def run_dir(self) -> Path | None:
        return Path(self.settings["output_dir"]) if self.stage else None

    @property
    def command(self) -> list[str] | None:
        """What `python -m core` runs for a training step; None for the arena step (a setting, no process)."""
        if not self.stage:
            return None
        flags = [token for name, value in self.settings.items() for token in (f"--{name.replace('_', '-')}", value)]
        return ["python", "-m", "core", "train", self.stage, *(["--preset", self.preset] if self.preset else []),
                *flags]

    def describe(self) -> str:
        if self.stage:
            return f"{self.title}\n    {' '.join(self.command)}"
        return (f"{self.title}\n    arena pairing: {' vs '.join(map(label, self.pairing))}; "
                f"round: {self.round_name}")


def plan(method: str, best: str, root: Path, stamp: str, round_number: int = 1, preset: str | None = None
         ) -> list[Step]:
    """The steps of a next round from `best` ("base" or a run folder) with run folders <root>/<stage>-<stamp>."""
    if method not in METHODS:
        raise InputError(f"the new policy is tuned with one of {', '.join(METHODS)}, not {method!r}")
    reward_dir = Path(root) / f"reward-{stamp}"
    tuned = {"sft_adapter": best} if best != BASE else {}
    if method == "online-dpo":
        candidates_dir, policy_dir = Path(root) / f"rejection-{stamp}", Path(root) / f"dpo-{stamp}"
        tune = [Step(f"2. sample {label(best)}'s lists and score them with the new reward model", "rejection", preset,
                     {**tuned, "reward_model": str(reward_dir), "sample_only": "true",
                      "output_dir": str(candidates_dir)}),
                Step(f"3. tune a new policy with DPO on each request's best list over its worst, from {label(best)}",
                     "dpo", preset, {**tuned, "pairs_from": str(candidates_dir), **ONLINE_DPO,
                                     "output_dir": str(policy_dir)})]
    else:
        policy_dir = Path(root) / f"{method}-{stamp}"
        scored = {"reward_model": str(reward_dir)} if method in SCORED else {}
        tune = [Step(f"2. tune a new policy with {method} from {label(best)}", method, preset,
                     {**tuned, **scored, "output_dir": str(policy_dir)})]
    return [
        Step("1. train a reward model on every vote so far", "reward", preset, {"output_dir": str(reward_dir)}),
        *tune,
        Step(f"{len(tune) + 2}. put it in the arena against {label(best)}", pairing=(best, str(policy_dir)),
             round_name=round_title(round_number, str(policy_dir), best)),
    ]


def plan_for(store, method: str, best: str | None = None, preset: str | None = None, stamp: str | None = None
             ) -> list[Step]:
    """The plan from what is stored now: the current best unless `best` is given, the next round's number."""
    best = check_policy(best) if best else current_best(store)
    stored = store.table("pairs")["round"].dropna().unique().tolist() + [read_round(store)]
    return plan(method, best, runs_root(), stamp or datetime.now().strftime("%Y%m%d-%H%M%S"),
                next_round_number(stored), preset)


# ---- the orchestrator ------------------------------------------------------------------------------------------------
def configure(step: Step):
    """The step's stage config, checked (ConfigError saying what to change)."""
    if step.stage not in STAGES:
        raise InputError(f"this checkout has no {step.stage} stage (`python -m core train --help` lists them); "
                         f"pick another method.")
    # lazy: core.config loads transformers, and config_class the stage's module (torch, TRL)
    from core.config import build

    try:
        cls = config_class(step.stage)
    except ImportError as err:  # a stage listed before its module is in place
        raise InputError(f"the {step.stage} stage could not be loaded ({err}); pick another method.") from None
    return build(cls, step.preset, **step.settings)


def launch(step: Step, cfg) -> Path:
    # lazy, as above: the launcher imports core.config (transformers)
    from core.train import launcher

    return launcher.launch(step.stage, cfg).run_dir


def wait_for(run_dir: Path, poll_s: float = 5.0) -> dict:
    """The run's status once it is final (finished, stopped, failed, killed; damaged: its files are gone)."""
    while (status := read_status(run_dir)).get("state") not in (*FINAL_STATES, RunState.DAMAGED):
        time.sleep(poll_s)
    return status


def run_plan(steps: list[Step], store, configure: Callable = configure, launch: Callable = launch,
             wait: Callable = wait_for, say: Callable[[str], None] = print) -> None:
    """Run the steps in order, each training step as its own run, then set the arena's pairing and round. Every
    step's settings are checked before the first starts; a step that does not finish stops the round with one line
    (an InputError), and the arena keeps what it serves."""
    where = "checking the plan"
    try:
        configs = {n: configure(step) for n, step in enumerate(steps) if step.stage}
        for n, step in enumerate(steps):
            where = f"step {n + 1} of {len(steps)}"
            report(store, "running", f"{where}: {step.title}")
            say(step.describe())
            if not step.stage:
                save_pairing(store, step.pairing, step.round_name)
                continue
            run_dir = launch(step, configs[n])
            status = wait(run_dir)
            if status.get("state") != RunState.FINISHED:
                raise InputError(f"{Path(run_dir).name} {status.get('state')}"
                                 + (f" ({status['message']})" if status.get("message") else ""))
    except USER_ERRORS as err:
        line = f"next round stopped at {where}: {err}"
        report(store, "failed", line)
        raise InputError(line) from None
    report(store, "finished", f"done: the arena now collects {steps[-1].round_name}")


def report(store, state: str, message: str) -> None:
    """What the orchestrator is doing, for the dashboard (meta NEXT_ROUND_KEY); a busy database does not stop it."""
    try:
        store.set_setting(NEXT_ROUND_KEY, json.dumps({"state": state, "message": message, "pid": os.getpid(),
                                                      "updated_at": utc_now().isoformat(timespec="seconds")}))
    except StoreBusy:
        pass


def read_report(store) -> dict:
    """The orchestrator's last report ({} if none); a running one whose process is gone reads "killed"."""
    try:
        said = json.loads(store.setting(NEXT_ROUND_KEY) or "{}")
    except ValueError:
        return {}
    if said.get("state") in ("starting", "running") and not pid_alive(said.get("pid")):
        said = {**said, "state": "killed", "message": f"the orchestrator ended without a word ({said.get('message')})"}
    return said


def next_round(store, method: str, best: str | None = None, preset: str | None = None, stamp: str | None = None,
               plan_only: bool = False, say: Callable[[str], None] = print) -> list[Step]:
    """`python -m core next-round`: print the plan, then (unless `plan_only`) run it."""
    if not best:  # say why the current best is the start, and plan from it (one reading of the votes)
        best, why = best_and_why(store)
        say(f"start: {why}")
    steps = plan_for(store, method, best, preset, stamp)
    if plan_only:
        for step in steps:
            say(step.describe())
        return steps
    os.environ["RLHF_DB"] = str(store.path)  # the steps' runs inherit it: they train on this database's votes
    run_plan(steps, store, say=say)
    return steps


def start_next_round(store, method: str, best: str, preset: str | None, stamp: str) -> int:
    """Start the orchestrator as a process of its own (what the dashboard does: it never trains itself); returns its
    pid. Its output goes to <runs>/next-round-<stamp>.log."""
    said = read_report(store)
    if said.get("state") in ("starting", "running"):
        raise InputError(f"a next round is already running ({said.get('message')}); wait for it or stop its run.")
    command = [sys.executable, "-m", "core", "next-round", "--method", method, "--best", best, "--stamp", stamp,
               "--db", str(store.path), *(["--preset", preset] if preset else [])]
    root = runs_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"next-round-{stamp}.log", "ab") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    store.set_setting(NEXT_ROUND_KEY, json.dumps({"state": "starting", "message": "checking the plan",
                                                  "pid": process.pid}))
    threading.Thread(target=process.wait, daemon=True, name=f"reap-{process.pid}").start()  # never a zombie
    return process.pid
