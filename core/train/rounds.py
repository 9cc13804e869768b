"""Rounds of collection, and the Next-round loop that trains the next policy and puts it in the arena.

    python -m core next-round [--method online-dpo|ppo|dpo|rloo|rejection] [--best RUN] [--preset quick] [--lists 8]
                              [--plan-only]

A round is a named period of collection with its pairing ("round 2: ppo-20261121-101500 vs sft-20261120-090000"):
the arena's stored pairing and round name (core/collect/chooser.py; set on the dashboard's Arena page, with
`python -m apps.arena --pairing A,B --round NAME`, or by step 3 below). Every pair records the round it was shown in;
the Data page counts the votes of each round and a run's data/lineage.json says how many of each it trained on.

Next round, three steps, each an ordinary run (visible and stoppable on the Train and Runs pages):
    1. train a reward model on every vote so far
    2. tune a new policy (ppo, dpo, rloo or rejection) starting from the current best; all but dpo score with step
       1's model. online-dpo takes two runs here: rejection --sample-only (--lists of the best's own lists for every
       training request, scored by step 1's model), then dpo --pairs-from that run (each request's best list over its
       worst, RPO's --sft-weight 1)
    3. put it in the arena against the current best: the pairing (best, new) and a new round's name
`plan()` writes the steps out, pure: the run folders are named in advance, so step 2 can name step 1's output and the
dashboard can show exactly what will run before it starts. `run_plan()` is the orchestrator, a process of its own
(`start_next_round` is how the dashboard starts it): it launches each step through core/train/launcher.py, waits for
it to finish, stops at the first that does not, and only then sets the pairing and round.

The current best, the start of step 2, and the policies an arena can serve: core/train/best.py.
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

from core.collect.chooser import (
    BASE,
    read_round,
    save_pairing,
)
from core.paths import REPO_ROOT
from core.records import USER_ERRORS, InputError, StoreBusy, utc_now
from core.runs import (
    FINAL_STATES,
    RunState,
    pid_alive,
    read_status,
    runs_root,
)
from core.stages import STAGES, config_class
from core.train.best import best_and_why, check_policy, current_best, label

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
# lists online DPO samples for each training request (all of them, whatever the preset): its pair is the best of them
# over the worst. On the same `terse` votes, reward model and lists, 8 gave 64.4 % over SFT and the first 4 of those
# 8 gave 53.3 % (8 over 4 directly: 56.4 %; bench/README.md, "Online DPO on 4 or 8 lists a request, side by side");
# 8 x 288 requests cost 26 min of sampling and scoring on 2 cores, against ~7 for 4 x 160
ONLINE_DPO_LISTS = 8
SCORED = ("ppo", "rloo", "rejection")  # the methods that take --reward-model (DPO learns from the votes themselves)
NEXT_ROUND_KEY = "next_round.status"  # meta: what the orchestrator is doing (state, step, message, pid)


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


def plan(method: str, best: str, root: Path, stamp: str, round_number: int = 1, preset: str | None = None,
         lists: int = ONLINE_DPO_LISTS) -> list[Step]:
    """The steps of a next round from `best` ("base" or a run folder) with run folders <root>/<stage>-<stamp>;
    online-dpo samples `lists` lists for each training request."""
    if method not in METHODS:
        raise InputError(f"the new policy is tuned with one of {', '.join(METHODS)}, not {method!r}")
    if method == "online-dpo" and lists < 2:
        raise InputError(f"online DPO needs at least 2 lists a request to pair the best with the worst, not {lists}; "
                         f"e.g. {ONLINE_DPO_LISTS}.")
    reward_dir = Path(root) / f"reward-{stamp}"
    tuned = {"sft_adapter": best} if best != BASE else {}
    if method == "online-dpo":
        candidates_dir, policy_dir = Path(root) / f"rejection-{stamp}", Path(root) / f"dpo-{stamp}"
        tune = [Step(f"2. sample {label(best)}'s lists and score them with the new reward model", "rejection", preset,
                     {**tuned, "reward_model": str(reward_dir), "sample_only": "true", "num_samples": str(lists),
                      "max_prompts": "0", "output_dir": str(candidates_dir)}),
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


def plan_for(store, method: str, best: str | None = None, preset: str | None = None, stamp: str | None = None,
             lists: int = ONLINE_DPO_LISTS) -> list[Step]:
    """The plan from what is stored now: the current best unless `best` is given, the next round's number."""
    best = check_policy(best) if best else current_best(store)
    stored = store.table("pairs")["round"].dropna().unique().tolist() + [read_round(store)]
    return plan(method, best, runs_root(), stamp or datetime.now().strftime("%Y%m%d-%H%M%S"),
                next_round_number(stored), preset, lists)


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
               plan_only: bool = False, say: Callable[[str], None] = print, lists: int = ONLINE_DPO_LISTS
               ) -> list[Step]:
    """`python -m core next-round`: print the plan, then (unless `plan_only`) run it."""
    if not best:  # say why the current best is the start, and plan from it (one reading of the votes)
        best, why = best_and_why(store)
        say(f"start: {why}")
    steps = plan_for(store, method, best, preset, stamp, lists)
    if plan_only:
        for step in steps:
            say(step.describe())
        for n, step in enumerate(steps, start=1):  # the check a real round makes before its first step
            if step.stage:
                try:
                    configure(step)
                except USER_ERRORS as err:
                    raise InputError(f"step {n} of the plan would be refused: {err}") from None
        return steps
    os.environ["RLHF_DB"] = str(store.path)  # the steps' runs inherit it: they train on this database's votes
    run_plan(steps, store, say=say)
    return steps


def start_next_round(store, method: str, best: str, preset: str | None, stamp: str, lists: int = ONLINE_DPO_LISTS
                     ) -> int:
    """Start the orchestrator as a process of its own (what the dashboard does: it never trains itself); returns its
    pid. Its output goes to <runs>/next-round-<stamp>.log."""
    said = read_report(store)
    if said.get("state") in ("starting", "running"):
        raise InputError(f"a next round is already running ({said.get('message')}); wait for it or stop its run.")
    command = [sys.executable, "-m", "core", "next-round", "--method", method, "--best", best, "--stamp", stamp,
               "--lists", str(lists), "--db", str(store.path), *(["--preset", preset] if preset else [])]
    root = runs_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"next-round-{stamp}.log", "ab") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    store.set_setting(NEXT_ROUND_KEY, json.dumps({"state": "starting", "message": "checking the plan",
                                                  "pid": process.pid}))
    threading.Thread(target=process.wait, daemon=True, name=f"reap-{process.pid}").start()  # never a zombie
    return process.pid
