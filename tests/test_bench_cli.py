"""The benchmarks' command lines without a loop to run: bad flags and settings stop in one line before any work, and
bench/run_summary.py reads a run folder's own figures."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("args, says", [(["--n", "1"], "--n must be at least 2"),
                                        (["--report-only", "--samples-from", "x"], "exclude each other")])
def test_best_of_n_refuses_bad_flags_in_one_line(tmp_path, capsys, args, says):
    from bench.best_of_n import main

    with pytest.raises(SystemExit) as stopped:
        main(["--loop", str(tmp_path), *args])
    stderr = capsys.readouterr().err
    assert stopped.value.code == 2 and says in stderr and len(stderr.strip().splitlines()) == 1


def test_seed_lists_refuses_a_folder_without_a_loop(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bench.seed_lists", "--loop", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "no finished loop" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("script, args, says", [
    ("bench.loop", ["--sft-args", "--epochs many"], "--sft-args: --epochs: 'many' is not a valid float"),
    ("bench.loop", ["--preset", "huge"], "--sft-args: unknown preset 'huge'; choose one of quick."),
    ("bench.loop", ["--ppo-args", "--no-such-flag 1"], "--ppo-args: unrecognized arguments: --no-such-flag 1"),
    ("bench.rounds", ["--dpo-args", "--beta x"], "--dpo-args: --beta: 'x' is not a valid float"),
    ("bench.rounds", ["--loop-args", "--votes none"], "--loop-args: --votes: 'none' is not a valid int"),
    ("bench.rounds", ["--reuse-round2", "SAME", "--out", "SAME"], "must name another rounds folder than --out"),
    ("bench.rounds", ["--methods", "online-dpo", "--rejection-args", "--num-samples x"],
     "--rejection-args: --num-samples: 'x' is not a valid int"),
    ("bench.rounds", ["--methods", "ppo,online-dpo", "--online-dpo-args", "--sft-weight y"],
     "--online-dpo-args: --sft-weight: 'y' is not a valid float"),
    ("bench.rounds", ["--methods", "ppo,sppo"], "methods must be some of ppo, dpo, rloo, online-dpo, not sppo"),
    ("bench.rounds", ["--previous", "SAME", "--round1", "SAME"], "pass --round1 (round 2 after a loop) or --previous"),
    ("bench.rounds", ["--previous", "NOWHERE"], "--previous NOWHERE holds no rounds.json"),
    ("bench.rounds", ["--gate-votes", "-5"], "gate-votes must be 0 (never) or more"),
])
def test_flags_for_later_stages_are_checked_before_any_vote(tmp_path, capsys, script, args, says):
    """A typo in flags passed on to a stage fails at once, in one line, not after an hour of votes (the script's
    main in this process: its entry point is the same call)."""
    import importlib

    same = tmp_path / "same"
    same.mkdir()
    (same / "rounds.json").write_text("{}")
    args = [str(same) if a == "SAME" else a for a in args]
    out = [] if "--out" in args else ["--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as stopped:
        importlib.import_module(script).main([*args, *out])
    stderr = capsys.readouterr().err
    assert stopped.value.code == 2 and says in stderr and "Traceback" not in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_the_gate_votes_on_while_the_challenger_leads_and_stops_when_it_passes_or_the_budget_is_spent():
    """bench/rounds.py --gate-votes against a scripted head-to-head: 69-48 at the gate (3 decided votes short, as on
    `ontopic`), 80 % of votes decided: a batch of max(10, ceil(3 / .8)) = 10; its votes all go to the challenger.
    It votes on only while the votes the gate needs fit in what is left of the budget."""
    from bench.round_gate import vote_at_the_gate
    from core.train.best import Standing

    now = {"kept": 48, "won": 69}
    cast = []

    def vote(batch, votes):
        cast.append((batch, votes))
        now["won"] += votes  # a challenger that wins every vote: one batch is enough

    read = lambda: Standing("sft", "r2", now["kept"], now["won"], served=True)  # noqa: E731
    gate = vote_at_the_gate(60, read, vote, decided_share=lambda: 0.8)
    assert cast == [(1, 10)] and gate == {"cast": 10, "batches": 1, "before": (48, 69), "after": (48, 79),
                                          "passed": True}
    now.update(kept=48, won=69)
    cast.clear()

    def split(batch, votes):  # a challenger that wins half: it never passes, so the budget ends it
        cast.append((batch, votes))
        now["won"], now["kept"] = now["won"] + votes // 2, now["kept"] + votes - votes // 2

    gate = vote_at_the_gate(30, read, split, decided_share=lambda: 0.8)
    # after 5-5: 74 of 127 (.583) needs 141 decided votes, 14 more, so 18 votes; the budget has 20 left, then 2
    assert [votes for _, votes in cast] == [10, 18] and gate["cast"] == 28 and not gate["passed"]
    now.update(kept=48, won=69)
    cast.clear()
    assert vote_at_the_gate(9, read, split, lambda: 0.8)["cast"] == 0 and not cast  # 10 votes needed do not fit in 9
    now.update(kept=60, won=60)
    assert vote_at_the_gate(60, read, split, lambda: 0.8)["cast"] == 0  # level: no number of votes would decide it
    assert vote_at_the_gate(60, lambda: None, split, lambda: 0.8) == {  # no two runs in the pairing
        "cast": 0, "batches": 0, "before": None, "after": None, "passed": False}


def test_the_gates_batches_follow_a_reused_runs_and_count_only_decided_votes_that_are_not_repeats(store):
    from bench.round_gate import decided_share, merged_gate, vote_at_the_gate
    from core.records import Generation, Pair, Policy, Prompt
    from core.train.best import Standing

    earlier = {"cast": 10, "batches": 1, "before": [48, 69], "after": [51, 75], "passed": False}
    none = {"cast": 0, "batches": 0, "before": [51, 75], "after": [51, 75], "passed": False}
    later = {"cast": 20, "batches": 1, "before": [51, 75], "after": [55, 90], "passed": True}
    assert merged_gate(None, later) == later and merged_gate(earlier, none) == earlier
    assert merged_gate(earlier, later) == {**later, "cast": 30, "batches": 2, "before": [48, 69]}
    cast = []
    state = {"won": 69}
    read = lambda: Standing("a", "b", 48, state["won"], True)  # noqa: E731
    vote_at_the_gate(60, read, lambda b, v: cast.append(b) or state.update(won=state["won"] + v), lambda: 0.8,
                     first_batch=2)
    assert cast == [2]  # a reused run's first batch was 1: this one's seed differs
    policy = Policy("tiny")
    for n, (choice, how) in enumerate([("left", "random"), ("right", "random"), ("tie", "random"),
                                       ("left", "repeat")]):
        prompt = Prompt(f"Top 5 rivers #{n}", source="library", split="train")
        pair = Pair(prompt, Generation(prompt, f"1. Nile {n}", policy, False, 1),
                    Generation(prompt, f"1. Amazon {n}", policy, False, 1), round="round 3", chosen_by=how)
        store.record_pair(pair)
        store.record_vote(pair.pair_id, choice, "ann")
    assert decided_share(store, "round 3") == 0.5  # 2 of 4: the tie and the repeat do not count at the gate
    assert decided_share(store, "round 9") == 1.0  # no votes yet: every vote assumed decided


def test_the_rounds_report_says_what_the_gate_cast_and_refuses_a_folder_without_a_result(tmp_path, capsys):
    from bench.rounds_report import gate_line, main

    assert gate_line({"cast": 0}) == ""  # no votes at the gate: nothing to say
    line = gate_line({"cast": 10, "batches": 1, "before": [48, 69], "after": [51, 75], "passed": True})
    assert line == ("; then 10 more at the gate in 1 batch(es): the challenger's decided votes 69 of 117 (at that "
                    "share 3 more decided votes would pass) -> 75 of 126, passed")
    with pytest.raises(SystemExit, match="holds no rounds.json: pass a finished bench/rounds.py --out folder"):
        main([str(tmp_path)])
    with pytest.raises(SystemExit, match="usage: python -m bench.rounds_report ROUNDS_OUT"):
        main([])


def test_rounds_starts_round_one_with_a_command_line_the_loop_accepts(tmp_path):
    from bench.loop import LoopConfig
    from bench.rounds import RoundsConfig, round_one_args
    from core.config import parse_config

    cfg = RoundsConfig(taste="terse", own_requests=0.6, preset="quick",
                       loop_args='"--sft-args=--eval-prompts 0 --seed-lists off"')
    loop_cfg = parse_config(LoopConfig, round_one_args(cfg, tmp_path / "round1"))
    assert (loop_cfg.taste, loop_cfg.own_requests, loop_cfg.preset, loop_cfg.out) == ("terse", 0.6, "quick",
                                                                                      str(tmp_path / "round1"))
    assert loop_cfg.sft_args == "--eval-prompts 0 --seed-lists off" and loop_cfg.votes == cfg.round1_votes


def test_a_failed_stage_or_a_bad_setting_is_one_line_not_a_traceback(tmp_path):
    from bench.loop import StageFailed, entry_point

    def fails():
        raise StageFailed("reward", 2, tmp_path / "logs" / "reward.log")

    with pytest.raises(SystemExit) as stopped:
        entry_point(fails)
    assert str(stopped.value.code) == f"error: reward failed (exit 2): see {tmp_path / 'logs' / 'reward.log'}"
    from core.records import ModelLoadError

    def will_not_load():  # e.g. a reward run whose adapter names a base model folder that is gone
        raise ModelLoadError("Model folder '/gone' does not exist: pass an existing folder")

    with pytest.raises(SystemExit) as stopped:
        entry_point(will_not_load)
    assert str(stopped.value.code) == "error: Model folder '/gone' does not exist: pass an existing folder"
    done = subprocess.run([sys.executable, "-m", "bench.loop", "--votes", "0", "--out", str(tmp_path / "loop")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "votes must be at least 1" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "loop").exists()


def test_run_summary_prints_what_a_run_trained_on_and_held_out(tmp_path):
    """bench/run_summary.py's figures come from the run folder's own files, the lineage's pair counts included."""
    from bench.run_summary import summarise

    run = tmp_path / "dpo-x"
    (run / "data").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"stage": "dpo"}))
    (run / "status.json").write_text(json.dumps({"state": "finished", "step": 2, "started_at": "2026-12-05T01:00:00",
                                                 "finished_at": "2026-12-05T01:03:00"}))
    (run / "metrics.jsonl").write_text(json.dumps({"train/loss": 0.7}) + "\n" + json.dumps(
        {"train/loss": 0.5, "eval/correct": 46, "eval/pairs": 81}) + "\n")
    (run / "data" / "lineage.json").write_text(json.dumps({"train_pairs": 286, "eval_pairs": 93, "votes": 450}))
    row = summarise(run)
    assert (row["stage"], row["state"], row["steps"], row["wall_min"]) == ("dpo", "finished", 2, 3.0)
    assert row["train/loss"] == [0.7, 0.5] and (row["eval/correct"], row["eval/pairs"]) == (46, 81)
    assert (row["data/train_pairs"], row["data/eval_pairs"]) == (286, 93) and "data/votes" not in row
    assert "eval/by_round" not in row  # a DPO run has no calibration.json
    (run / "calibration.json").write_text(json.dumps({"accuracy_by_round": [
        {"round": "(no round)", "pairs": 53, "correct": 45}, {"round": "round 2", "pairs": 28, "correct": 20}]}))
    assert summarise(run)["eval/by_round"] == {"(no round)": "45/53", "round 2": "20/28"}


def test_run_summary_compares_reward_runs_vote_by_vote_and_reads_ppo_health(tmp_path):
    """Two reward runs on the same held-out votes: right only in each (ties, train votes and repeats left out) and the
    exact McNemar p; a PPO run's clipfrac and approxkl as first/last means; the trainer's own training seconds."""
    import pandas as pd

    from bench.run_summary import paired_held_out, summarise

    def reward_run(name: str, correct: list[bool]) -> Path:
        run = tmp_path / name
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"stage": "reward"}))
        pd.DataFrame({"comparison_id": ["a", "b", "c", "d", "e", "t", "r"],
                      "split": ["eval"] * 5 + ["train", "eval"], "choice": ["left"] * 6 + ["right"],
                      "repeat_of": [None] * 6 + ["a"], "correct": correct}).to_parquet(run / "scores.parquet")
        return run

    first = reward_run("fp32", [True, True, True, False, True, False, False])
    second = reward_run("bf16", [True, False, False, False, True, True, True])
    assert paired_held_out(first, second) == {"pair": ["fp32", "bf16"], "votes": 5, "correct": [4, 2],
                                              "right_only_in_each": [2, 0], "mcnemar_p": 0.5}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"stage": "reward"}))
    pd.DataFrame({"comparison_id": ["z"], "split": ["eval"], "choice": ["left"], "correct": [True]}).to_parquet(
        tmp_path / "other" / "scores.parquet")
    assert paired_held_out(first, tmp_path / "other") is None  # no shared held-out vote: nothing to pair

    ppo = tmp_path / "ppo-x"
    ppo.mkdir()
    (ppo / "config.json").write_text(json.dumps({"stage": "ppo"}))
    (ppo / "status.json").write_text(json.dumps({"state": "finished", "step": 4}))
    (ppo / "metrics.jsonl").write_text("".join(json.dumps(
        {"policy/clipfrac_avg": c, "policy/approxkl_avg": k, "summary/runtime": 12.5} if i == 3 else
        {"policy/clipfrac_avg": c, "policy/approxkl_avg": k}) + "\n"
        for i, (c, k) in enumerate([(0.02, 0.003), (0.01, 0.002), (0.008, 0.0018), (0.006, 0.0016)])))
    row = summarise(ppo)
    assert row["policy/clipfrac_avg"] == [0.02, 0.006] and row["policy/approxkl_avg"] == [0.003, 0.0016]
    assert row["summary/runtime"] == 12.5
