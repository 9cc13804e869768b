"""Rounds of collection: each pair records its round, votes are counted per round (Data page) and in a run's lineage;
Next round's plan for ppo, dpo and rloo, the current best, and the orchestrator (faked launcher) that stops at a step
that does not finish; the dashboard shows the plan before it starts one."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.collect.chooser import (
    BASE,
    PairingWatcher,
    read_pairing,
    read_round,
    save_pairing,
)
from core.records import Generation, InputError, Pair, Policy, Prompt
from core.runs import RunState, adapter_dir, list_runs, write_json
from core.store.database import Store
from core.train import best as policies
from core.train import rounds
from core.train.snapshot import take_preferences
from tests.helpers import run_cli

APP = str(Path(__file__).resolve().parent.parent / "apps" / "dashboard.py")
STAMP = "20261201-120000"


def policy_run(root: Path, name: str, stage: str = "sft", state: str = "finished") -> Path:
    """A run folder with a causal-LM adapter's config (nothing here loads its weights)."""
    run = root / name
    (run / "adapter").mkdir(parents=True)
    write_json(run / "adapter" / "adapter_config.json", {"task_type": "CAUSAL_LM", "peft_type": "LORA",
                                                          "base_model_name_or_path": "tiny"})
    write_json(run / "config.json", {"stage": stage})
    write_json(run / "status.json", {"state": state, "pid": os.getpid()})
    return run


def vote(store: Store, first: Policy, second: Policy, choice: str, round_name: str | None, n: int = 0) -> None:
    """One stored pair of `first` (left) and `second` (right) in `round_name`, and a vote on it."""
    prompt = Prompt(f"Top 5 rivers #{n}", source="library", split="train")
    pair = Pair(prompt, Generation(prompt, f"1. Nile {n}", first, False, 1),
                Generation(prompt, f"1. Amazon {n}", second, False, 1), round=round_name)
    store.record_pair(pair)
    store.record_vote(pair.pair_id, choice, "ann")


# ---- rounds in the store, the Data page and the lineage ------------------------------------------------------------
@pytest.fixture
def voted(store) -> Store:
    base, sft, ppo = Policy("tiny"), Policy("tiny", "/runs/sft-1/adapter"), Policy("tiny", "/runs/ppo-1/adapter")
    vote(store, base, base, "tie", None, 0)  # before any round
    for n, choice in enumerate(["left", "right", "left", "both_bad"], start=1):
        vote(store, sft, base, choice, "round 1: sft-1 vs base", n)
    vote(store, ppo, sft, "right", "round 2: ppo-1 vs sft-1", 5)
    vote(store, sft, ppo, "tie", "round 2: ppo-1 vs sft-1", 6)
    return store


def test_votes_are_counted_per_round_with_the_pairing_each_served(voted):
    table = voted.overview()["rounds"]
    assert list(table.columns) == ["round", "pairing", "votes", "left", "right", "tie", "both_bad"]
    assert list(table["round"].fillna("none")) == ["none", "round 1: sft-1 vs base", "round 2: ppo-1 vs sft-1"]
    assert list(table.pairing) == ["tiny vs tiny", "tiny vs tiny+sft-1", "tiny+ppo-1 vs tiny+sft-1"]
    assert table[["votes", "left", "right", "tie", "both_bad"]].values.tolist() == \
        [[1, 0, 0, 1, 0], [4, 2, 1, 0, 1], [2, 0, 1, 1, 0]]
    assert voted.votes()["round"].notna().sum() == 6  # the votes view carries the round


def test_a_runs_lineage_counts_the_votes_of_each_round_it_trained_on(voted, tmp_path):
    take_preferences(voted, tmp_path, eval_fraction=0.2)
    lineage = json.loads((tmp_path / "data" / "lineage.json").read_text())
    assert lineage["rounds"] == {"(no round)": 1, "round 1: sft-1 vs base": 4, "round 2: ppo-1 vs sft-1": 2}


def test_the_data_page_shows_votes_per_round(voted, monkeypatch, tmp_path):
    monkeypatch.setenv("RLHF_DB", str(voted.path))
    monkeypatch.setenv("RLHF_RUNS_DIR", str(tmp_path / "runs"))
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception, at.exception
    table = next(frame.value for frame in at.dataframe if "pairing" in frame.value.columns)
    assert list(table["round"]) == ["(no round)", "round 1: sft-1 vs base", "round 2: ppo-1 vs sft-1"]
    assert list(table.votes) == [1, 4, 2]


def test_the_round_number_follows_the_highest_numbered_round():
    assert rounds.next_round_number([None, "", "pilot"]) == 1
    assert rounds.next_round_number(["round 1: a vs b", "round 3: c vs a", "pilot round 9"]) == 4


# ---- the plan -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["ppo", "dpo", "rloo", "rejection"])
def test_the_plan_is_a_reward_model_a_policy_from_the_best_and_the_new_pairing(method):
    steps = rounds.plan(method, "/runs/sft-1", Path("/runs"), STAMP, round_number=2, preset="quick")
    head = ["python", "-m", "core", "train"]
    assert steps[0].command == [*head, "reward", "--preset", "quick", "--output-dir", f"/runs/reward-{STAMP}"]
    scored = ["--reward-model", f"/runs/reward-{STAMP}"] if method in ("ppo", "rloo", "rejection") else []
    assert steps[1].command == [*head, method, "--preset", "quick", "--sft-adapter", "/runs/sft-1", *scored,
                                "--output-dir", f"/runs/{method}-{STAMP}"]
    assert steps[2].command is None  # a setting in the database, not a process
    assert steps[2].pairing == ("/runs/sft-1", f"/runs/{method}-{STAMP}")
    assert steps[2].round_name == f"round 2: {method}-{STAMP} vs sft-1"
    assert [step.run_dir for step in steps] == [Path(f"/runs/reward-{STAMP}"), Path(f"/runs/{method}-{STAMP}"), None]


def test_online_dpo_plans_the_best_policys_scored_lists_then_dpo_on_them():
    steps = rounds.plan("online-dpo", "/runs/sft-1", Path("/runs"), STAMP, round_number=2, preset="quick")
    head = ["python", "-m", "core", "train"]
    assert [step.command[4] if step.command else None for step in steps] == ["reward", "rejection", "dpo", None]
    assert steps[1].command == [*head, "rejection", "--preset", "quick", "--sft-adapter", "/runs/sft-1",
                                "--reward-model", f"/runs/reward-{STAMP}", "--sample-only", "true",
                                "--num-samples", "8", "--max-prompts", "0", "--output-dir", f"/runs/rejection-{STAMP}"]
    assert steps[2].command == [*head, "dpo", "--preset", "quick", "--sft-adapter", "/runs/sft-1", "--pairs-from",
                                f"/runs/rejection-{STAMP}", "--epochs", "1", "--max-steps", "-1", "--batch-size", "8",
                                "--learning-rate", "2e-4", "--sft-weight", "1", "--output-dir", f"/runs/dpo-{STAMP}"]
    assert steps[3].pairing == ("/runs/sft-1", f"/runs/dpo-{STAMP}")
    assert steps[3].title.startswith("4. put it in the arena")
    assert steps[3].round_name == f"round 2: dpo-{STAMP} vs sft-1"


def test_online_dpo_samples_the_lists_asked_for_every_training_request_and_needs_two():
    steps = rounds.plan("online-dpo", "/runs/sft-1", Path("/runs"), STAMP, preset="quick", lists=3)
    sample = steps[1].command
    assert sample[sample.index("--num-samples") + 1] == "3" and sample[sample.index("--max-prompts") + 1] == "0"
    assert rounds.plan("ppo", "/runs/sft-1", Path("/runs"), STAMP, lists=1)[1].stage == "ppo"  # online-dpo's alone
    with pytest.raises(InputError, match="at least 2 lists a request"):
        rounds.plan("online-dpo", "/runs/sft-1", Path("/runs"), STAMP, lists=1)


def test_a_plan_from_the_base_has_no_sft_adapter_and_an_unknown_method_is_refused():
    steps = rounds.plan("ppo", BASE, Path("/runs"), STAMP)
    assert steps[1].command == ["python", "-m", "core", "train", "ppo", "--reward-model", f"/runs/reward-{STAMP}",
                                "--output-dir", f"/runs/ppo-{STAMP}"]
    assert steps[2].round_name == f"round 1: ppo-{STAMP} vs base"
    with pytest.raises(InputError, match="one of ppo, dpo, rloo"):
        rounds.plan("grpo", BASE, Path("/runs"), STAMP)


@pytest.mark.parametrize("method", ["ppo", "dpo", "rloo", "rejection", "online-dpo"])
def test_each_planned_step_is_a_config_its_stage_accepts(method, tmp_path):
    for step in [s for s in rounds.plan(method, str(tmp_path / "sft-1"), tmp_path, STAMP, preset="quick") if s.stage]:
        cfg = rounds.configure(step)
        assert cfg.output_dir == str(step.run_dir)


# ---- the current best -----------------------------------------------------------------------------------------------
def test_the_current_best_is_the_pairings_run_side_or_a_clear_head_to_head_winner_or_the_newest_sft(store, tmp_path):
    with pytest.raises(InputError, match="no policy to start from"):
        policies.current_best(store, [])
    policy_run(tmp_path, "sft-20260101-000001")
    newest_sft = policy_run(tmp_path, "sft-20260102-000001")
    policy_run(tmp_path, "sft-20260103-000001", state="running")
    ppo = policy_run(tmp_path, "ppo-20260104-000001", stage="ppo")
    runs = list_runs(tmp_path)
    assert policies.current_best(store, runs) == str(newest_sft)  # base vs base: the newest finished SFT run
    save_pairing(store, (BASE, str(ppo)))
    assert policies.current_best(store, runs) == str(ppo)  # the run side, never the base
    save_pairing(store, (str(newest_sft), str(ppo)))
    watcher = PairingWatcher(store, lambda side: Policy("tiny", str(adapter_dir(side))), (Policy("tiny"),) * 2)
    watcher.refresh()  # the arena says what it serves: the names the votes carry
    sft_policy, ppo_policy = watcher.policies
    assert policies.current_best(store, runs) == str(newest_sft)  # no votes yet: the incumbent
    vote(store, sft_policy, ppo_policy, "right", None, 1)
    vote(store, ppo_policy, sft_policy, "tie", None, 2)
    assert policies.current_best(store, runs) == str(newest_sft)  # 1-0 is no clear win: the incumbent stays
    assert policies.best_and_why(store, runs)[1] == ("ppo-20260104-000001 won 1 of 1 decided head-to-head votes "
                                                     "(100 %, 95 % [21 %, 100 %]): not beyond chance, so "
                                                     "sft-20260102-000001, the incumbent, stays; at this share "
                                                     "about 3 more decided votes would put it through")
    for n in range(3, 11):  # 8-0 more for the challenger: 9 of 9 decided, Wilson 95 % [0.70, 1]
        vote(store, ppo_policy, sft_policy, "left", None, n)
    assert policies.current_best(store, runs) == str(ppo)
    assert policies.best_and_why(store, runs)[1].endswith(": beyond chance, so it replaces sft-20260102-000001")
    for n in range(11, 14):  # 9-3: 75 %, yet Wilson's lower bound 0.47 is not above one half
        vote(store, ppo_policy, sft_policy, "right", None, n)
    assert policies.current_best(store, runs) == str(newest_sft)
    assert policies.best_and_why(store, runs)[1].endswith("about 4 more decided votes would put it through")  # 12-4
    for n in range(14, 20):  # 9-9: level, so more votes at this share never decide
        vote(store, ppo_policy, sft_policy, "right", None, n)
    assert policies.best_and_why(store, runs)[1].endswith("at this share no number of votes would")


def test_the_incumbent_is_the_side_the_other_was_tuned_from_whatever_the_pairings_order(store, tmp_path):
    sft = policy_run(tmp_path, "sft-1")
    ppo1 = policy_run(tmp_path, "ppo-1", stage="ppo")
    write_json(ppo1 / "config.json", {"stage": "ppo", "sft_adapter": str(sft / "adapter")})  # an adapter folder
    ppo2 = policy_run(tmp_path, "ppo-2", stage="ppo")
    write_json(ppo2 / "config.json", {"stage": "ppo", "sft_adapter": str(ppo1)})
    assert policies.tuned_from(str(ppo2)) == [ppo1, sft] and policies.tuned_from(str(sft)) == []
    runs = list_runs(tmp_path)
    for pairing, best in (((ppo2, sft), sft), ((sft, ppo2), sft), ((ppo1, ppo2), ppo1), ((ppo2, ppo1), ppo1)):
        save_pairing(store, (str(pairing[0]), str(pairing[1])))
        assert policies.current_best(store, runs) == str(best), pairing  # no votes: the ancestor, first or second
    # Wilson lower bounds 0.48 and 0.55
    assert policies.challenger_wins(42, 58) is False and policies.challenger_wins(35, 65) is True


def test_head_to_head_counts_decided_votes_only():
    votes = pd.DataFrame({"left_policy": ["a", "b", "a", "b"], "right_policy": ["b", "a", "b", "a"],
                          "choice": ["left", "left", "tie", "both_bad"]})
    assert policies.head_to_head(votes, "a", "b") == (1, 1)


# ---- the orchestrator -----------------------------------------------------------------------------------------------
def fake_launcher(outcomes: dict[str, str], launched: list[str]):
    """A launcher that 'runs' each step at once: its folder ends in outcomes[stage]."""
    def launch(step, cfg):
        launched.append(step.stage)
        step.run_dir.mkdir(parents=True)
        write_json(step.run_dir / "status.json", {"state": outcomes[step.stage], "message": "nan loss at step 3"})
        return step.run_dir
    return launch


def test_the_orchestrator_runs_each_step_then_sets_the_pairing_and_round(store, tmp_path):
    steps = rounds.plan("ppo", str(tmp_path / "sft-1"), tmp_path, STAMP, round_number=2, preset="quick")
    launched, said = [], []
    rounds.run_plan(steps, store, configure=lambda step: step.settings,
                    launch=fake_launcher({"reward": RunState.FINISHED, "ppo": RunState.FINISHED}, launched),
                    wait=lambda run_dir: rounds.wait_for(run_dir, poll_s=0.01), say=said.append)
    assert launched == ["reward", "ppo"] and len(said) == 3
    assert read_pairing(store) == (str(tmp_path / "sft-1"), str(tmp_path / f"ppo-{STAMP}"))
    assert read_round(store) == f"round 2: ppo-{STAMP} vs sft-1"
    assert rounds.read_report(store)["state"] == "finished"


def test_the_orchestrator_stops_at_a_step_that_fails_with_one_line(store, tmp_path):
    save_pairing(store, (BASE, str(tmp_path / "sft-1")), "round 1")
    steps = rounds.plan("rloo", str(tmp_path / "sft-1"), tmp_path, STAMP, round_number=2)
    launched = []
    with pytest.raises(InputError) as failure:
        rounds.run_plan(steps, store, configure=lambda step: step.settings,
                        launch=fake_launcher({"reward": RunState.FINISHED, "rloo": RunState.FAILED}, launched),
                        wait=lambda run_dir: rounds.wait_for(run_dir, poll_s=0.01), say=lambda line: None)
    line = str(failure.value)
    assert line == f"next round stopped at step 2 of 3: rloo-{STAMP} failed (nan loss at step 3)"
    assert "\n" not in line and launched == ["reward", "rloo"]
    assert (read_pairing(store), read_round(store)) == ((BASE, str(tmp_path / "sft-1")), "round 1")  # untouched
    assert rounds.read_report(store) | {"pid": None, "updated_at": None} == \
        {"state": "failed", "message": line, "pid": None, "updated_at": None}


def test_a_bad_setting_stops_the_round_before_any_step_runs(store, tmp_path):
    steps = rounds.plan("dpo", BASE, tmp_path, STAMP)

    def configure(step):
        if step.stage == "dpo":
            raise InputError("beta must be positive")
        return step.settings

    launched = []
    with pytest.raises(InputError, match="stopped at checking the plan: beta must be positive"):
        rounds.run_plan(steps, store, configure=configure, launch=fake_launcher({}, launched), say=lambda line: None)
    assert not launched


def test_a_second_next_round_is_refused_while_one_runs(store):
    rounds.report(store, "running", "step 1 of 3: train a reward model")  # this process: alive
    with pytest.raises(InputError, match="already running"):
        rounds.start_next_round(store, "ppo", BASE, "quick", STAMP)
    store.set_setting(rounds.NEXT_ROUND_KEY, json.dumps({"state": "running", "pid": 2**22 + 4321}))
    assert rounds.read_report(store)["state"] == "killed"  # its process is gone


def test_the_command_line_prints_the_plan(store, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setenv("RLHF_RUNS_DIR", str(runs))
    done = run_cli("next-round", "--method", "dpo", "--best", "base", "--preset", "quick", "--stamp", STAMP,
                   "--plan-only", "--db", store.path)
    assert f"python -m core train reward --preset quick --output-dir {runs}/reward-{STAMP}" in done.stdout
    assert f"python -m core train dpo --preset quick --output-dir {runs}/dpo-{STAMP}" in done.stdout
    assert f"round: round 1: dpo-{STAMP} vs base" in done.stdout
    assert "start:" not in done.stdout  # --best given: no current best to explain
    assert not runs.exists()  # nothing started
    default = run_cli("next-round", "--best", "base", "--stamp", STAMP, "--plan-only", "--db", store.path)
    assert "train rejection" in default.stdout and "--pairs-from" in default.stdout  # online-dpo: the default
    assert "--num-samples 8 --max-prompts 0" in default.stdout
    fewer = run_cli("next-round", "--best", "base", "--stamp", STAMP, "--lists", "4", "--plan-only", "--db", store.path)
    assert "--num-samples 4 --max-prompts 0" in fewer.stdout
    one = run_cli("next-round", "--best", "base", "--lists", "1", "--plan-only", "--db", store.path, check=False)
    assert one.returncode != 0 and "at least 2 lists a request" in one.stderr and "Traceback" not in one.stderr
    typo = run_cli("next-round", "--best", "base", "--preset", "quik", "--plan-only", "--db", store.path, check=False)
    assert typo.returncode == 2 and "train reward" in typo.stdout  # the plan, then why it would not run
    assert typo.stderr.strip() == ("error: step 1 of the plan would be refused: unknown preset 'quik'; choose one of "
                                   "quick.")
    assert not runs.exists()


# ---- the dashboard --------------------------------------------------------------------------------------------------
def test_the_arena_page_shows_the_plan_then_starts_the_orchestrator(store, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    sft = policy_run(runs, "sft-20260101-000001")
    monkeypatch.setenv("RLHF_DB", str(store.path))
    monkeypatch.setenv("RLHF_RUNS_DIR", str(runs))
    started = []
    monkeypatch.setattr(rounds, "start_next_round", lambda *args: started.append(args) or 4242)
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("dashboard_pages/arena.py").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="next_round_best").value == str(sft)  # the current best: the newest SFT run
    assert any(c.value.replace("\\", "").startswith("Current best: sft-20260101-000001: the newest finished SFT run")
               for c in at.caption)  # as_text escapes
    assert at.radio(key="next_round_method").value == rounds.RECOMMENDED == "online-dpo"  # the best measured
    assert f"python -m core train rejection --preset quick --sft-adapter {sft}" in at.code[0].value
    assert "--num-samples 8 --max-prompts 0" in at.code[0].value
    at.number_input(key="next_round_lists").set_value(4).run()
    assert "--num-samples 4 --max-prompts 0" in at.code[0].value
    at.radio(key="next_round_method").set_value("dpo").run()
    stamp = at.session_state["next_round_stamp"]
    plan = at.code[0].value
    assert f"python -m core train dpo --preset quick --sft-adapter {sft} --output-dir {runs}/dpo-{stamp}" in plan
    assert f"round 1: dpo-{stamp} vs sft-20260101-000001" in plan
    at.button(key="next_round_start").click().run()
    assert not at.exception and not at.error
    assert [args[1:] for args in started] == [("dpo", str(sft), "quick", stamp, 8)]


def test_the_arena_page_says_how_many_more_votes_a_close_challenger_needs(store, tmp_path, monkeypatch):
    """9-3 for the challenger is 75 %, yet not beyond chance: the page keeps the incumbent as the start and says that
    4 more decided votes at that share would put the challenger through (16 in all: 3.8416 / (4 · .25²) = 15.4)."""
    runs = tmp_path / "runs"
    sft, ppo = policy_run(runs, "sft-20260101-000001"), policy_run(runs, "ppo-20260102-000001", stage="ppo")
    write_json(ppo / "config.json", {"stage": "ppo", "sft_adapter": str(sft)})
    save_pairing(store, (str(sft), str(ppo)))
    watcher = PairingWatcher(store, lambda side: Policy("tiny", str(adapter_dir(side))), (Policy("tiny"),) * 2)
    watcher.refresh()
    sft_policy, ppo_policy = watcher.policies
    for n in range(12):
        vote(store, sft_policy, ppo_policy, "right" if n < 9 else "left", None, n)
    monkeypatch.setenv("RLHF_DB", str(store.path))
    monkeypatch.setenv("RLHF_RUNS_DIR", str(runs))
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("dashboard_pages/arena.py").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="next_round_best").value == str(sft)  # the incumbent stays the start
    said = [c.value.replace("\\", "") for c in at.caption if c.value.startswith("Current best:")]  # as_text escapes
    assert said == ["Current best: ppo-20260102-000001 won 9 of 12 decided head-to-head votes (75 %, 95 % [47 %, "
                    "91 %]): not beyond chance, so sft-20260101-000001, the incumbent, stays; at this share about 4 "
                    "more decided votes would put it through."]
