"""The two-round benchmark (bench/rounds.py) on the tiny model, round 1 being the loop run of conftest's `loop_run`:
round 2's votes in the arena, every method from the current best, online DPO as Next round plans it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.runs import read_status

REPO = Path(__file__).resolve().parent.parent


ROUNDS_ARGS = ["--eval-prompts", "4", "--eval-max-new-tokens", "12", "--dpo-args=--max-steps 1 --batch-size 2",
               "--ppo-args=--total-updates 1 --batch-size 4 --mini-batches 2 --ppo-epochs 1 --response-length 12 "
               "--norm-samples 4", "--rloo-args=--max-steps 1 --batch-size 4 --num-generations 2 --max-new-tokens 12"]


def run_rounds(*args) -> dict:
    done = subprocess.run([sys.executable, "-m", "bench.rounds", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads((Path(args[args.index("--out") + 1]) / "rounds.json").read_text())


@pytest.fixture(scope="module")
def rounds_run(loop_run, tiny_model_dir):
    """bench/rounds.py on the tiny model, round 1 being the loop above (a few minutes, shared by the tests below)."""
    folder, round1 = loop_run
    out = folder / "rounds"
    result = run_rounds("--round1", folder / "out", "--out", out, "--runs-dir", folder / "runs2", "--base-model",
                        tiny_model_dir, "--round2-votes", "8", "--demonstrations", "1", "--forced-choice", "true",
                        "--reward-args=--eval-fraction 0.5 --max-steps 2 --batch-size 2 --max-length 512",
                        "--round2-sampling", "uncertain", "--methods", "ppo,dpo,rloo", *ROUNDS_ARGS)
    return folder, round1, out, result


def test_two_rounds_reuse_round_one_and_train_every_method_on_the_same_votes(rounds_run):
    """bench/rounds.py on the tiny model, round 1 being the loop above: 8 more votes on round 1's PPO against SFT
    (library pairs by round 1's reward model), a reward model on all 20, PPO, DPO and RLOO, judged on 4 requests."""
    from core.store.database import Store

    folder, round1, out, result = rounds_run
    # round 2's votes were cast in the arena on the pairing (round-1 PPO, SFT), in a copy of round 1's database
    votes = Store(out / "rounds.duckdb").votes()
    ppo1, sft1 = Path(round1["runs"]["ppo"]).name, Path(round1["runs"]["sft"]).name
    round2 = votes[votes["round"] == f"round 2: {ppo1} vs {sft1}"]
    assert len(votes) == 20 and len(round2) == 8 and len(Store(folder / "out" / "loop.duckdb").votes()) == 12
    assert result["pairing"] == [round1["runs"]["ppo"], round1["runs"]["sft"]] and result["start"] in result["pairing"]
    assert sum(result["round2"]["chosen_by"].values()) == 8 and "uncertain" in set(round2.chosen_by)  # own: random
    assert f"reward model in {round1['runs']['reward']}" in (out / "logs" / "arena-round2.log").read_text()
    # the reward model trained on both rounds; every method finished from the same start
    lineage = json.loads((Path(result["runs"]["reward"]) / "data" / "lineage.json").read_text())
    assert lineage["train_pairs"] + lineage["eval_pairs"] == 20
    for method in ("ppo", "dpo", "rloo"):
        run = Path(result["runs"][method])
        assert read_status(run)["state"] == "finished", method
        assert json.loads((run / "config.json").read_text())["sft_adapter"] == result["start"]
        assert result["wall_s"][method] > 0
    # DPO holds out the same votes as the reward model, so both train on the same pairs
    dpo_config = json.loads((Path(result["runs"]["dpo"]) / "config.json").read_text())
    reward_config = json.loads((Path(result["runs"]["reward"]) / "config.json").read_text())
    assert dpo_config["eval_fraction"] == reward_config["eval_fraction"] == 0.5
    e = result["evaluation"]
    assert set(e["over_sft"]) == set(e["over_previous_round"]) == {"ppo", "dpo", "rloo"}
    assert all(r["n"] == 4 for r in e["over_previous_round"].values())
    assert all(r["n"] == 4 and r["low"] <= r["rate"] <= r["high"] for r in e["over_sft"].values())
    assert set(e["mean_rm_score"]) == {"sft", "previous", "ppo", "dpo", "rloo"}
    assert "Bradley-Terry" in result["leaderboard"] and set(result["goals"]) == {"over_previous_round",
                                                                                 "best_method_over_sft"}
    assert "round 2 ppo vs round 1's PPO" in (out / "rounds.md").read_text()
    assert f"8 votes ({result['round2']['left']} left" in (out / "rounds.md").read_text()


def test_rounds_reuse_a_finished_round_two_and_train_only_the_asked_methods(rounds_run, tiny_model_dir):
    """--reuse-round2: no new votes and no new reward model; only DPO and online DPO train, from the same start,
    online DPO as Next round plans it (its sampling run scored by round 2's reward model, then RPO on its pairs)."""
    from core.store.database import Store
    from core.train.rounds import ONLINE_DPO

    folder, _, first_out, first = rounds_run
    out = folder / "rounds-dpo"
    result = run_rounds("--round1", folder / "out", "--out", out, "--runs-dir", folder / "runs3", "--base-model",
                        tiny_model_dir, "--reuse-round2", first_out, "--methods", "dpo,online-dpo",
                        "--rejection-args=--max-prompts 3 --num-samples 4 --max-new-tokens 160",
                        "--online-dpo-args=--max-steps 1 --batch-size 2", *ROUNDS_ARGS)
    assert len(Store(out / "rounds.duckdb").votes()) == 20 and result["round2"] == first["round2"]
    assert result["runs"]["reward"] == first["runs"]["reward"] and "reward" not in result["wall_s"]
    assert not list((folder / "runs3").glob("reward-*"))
    run = Path(result["runs"]["dpo"])
    assert run.parent == folder / "runs3" and read_status(run)["state"] == "finished"
    assert json.loads((run / "config.json").read_text())["sft_adapter"] == first["start"] == result["start"]
    online = json.loads((Path(result["runs"]["online-dpo"]) / "config.json").read_text())
    sampled = json.loads((Path(online["pairs_from"]) / "config.json").read_text())
    assert online["sft_adapter"] == sampled["sft_adapter"] == first["start"] and online["sft_weight"] == 1.0
    assert float(ONLINE_DPO["sft_weight"]) == 1.0 and online["eval_fraction"] == 0.5 and online["max_steps"] == 1
    assert sampled["sample_only"] and sampled["reward_model"] == first["runs"]["reward"]
    assert sampled["num_samples"] == 4 and read_status(Path(result["runs"]["online-dpo"]))["state"] == "finished"
    assert Path(online["pairs_from"]).parent == folder / "runs3" and result["wall_s"]["online-dpo"] > 0
    e = result["evaluation"]
    assert set(e["over_sft"]) == set(e["over_previous_round"]) == {"dpo", "online-dpo"}
    assert result["config"]["round2_sampling"] == "uncertain"
    assert "round 2 online-dpo vs round 1's PPO" in (out / "rounds.md").read_text()
    assert f"(reused from {first_out})" in (out / "rounds.md").read_text()  # round 2's votes were not cast here
    refused = subprocess.run([sys.executable, "-m", "bench.rounds", "--reuse-round2", str(folder)], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "holds no rounds.json" in refused.stderr and "Traceback" not in refused.stderr


def test_round_two_can_pair_round_ones_policy_with_itself(rounds_run, tiny_model_dir):
    """--round2-pairing self: round 2's votes compare two samples of round 1's PPO (on-policy pairs), round 2 starts
    from it, and the leaderboard leaves those self-pairs out; a round 2 voted on another pairing is not reused."""
    from core.store.database import Store

    folder, round1, first_out, _ = rounds_run
    out = folder / "rounds-self"
    result = run_rounds("--round1", folder / "out", "--out", out, "--runs-dir", folder / "runs4", "--base-model",
                        tiny_model_dir, "--round2-votes", "4", "--demonstrations", "0", "--forced-choice", "true",
                        "--round2-pairing", "self", "--methods", "ppo",
                        "--reward-args=--eval-fraction 0.5 --max-steps 1 --batch-size 2 --max-length 512",
                        *ROUNDS_ARGS)
    ppo1 = round1["runs"]["ppo"]
    assert result["pairing"] == [ppo1, ppo1] and result["start"] == ppo1
    votes = Store(out / "rounds.duckdb").votes()
    round2 = votes[votes["round"] == f"round 2: {Path(ppo1).name} vs {Path(ppo1).name}"]
    assert len(round2) == 4 and (round2.left_policy == round2.right_policy).all()
    assert round2.left_policy.iloc[0].endswith(Path(ppo1).name)
    assert json.loads((Path(result["runs"]["ppo"]) / "config.json").read_text())["sft_adapter"] == ppo1
    assert "no arena or blind demo vote compares two different policies" in result["leaderboard"]  # tiny: base only
    refused = subprocess.run([sys.executable, "-m", "bench.rounds", "--round1", str(folder / "out"), "--out",
                              str(folder / "rounds-self-2"), "--reuse-round2", str(first_out), "--round2-pairing",
                              "self", "--base-model", tiny_model_dir], cwd=REPO, capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode != 0 and "and the --round2-pairing it ran with" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_third_round_follows_a_finished_round_two(rounds_run, tiny_model_dir):
    """--previous: round 3 after round 2 (its DPO policy against the start it was tuned from), on a copy of both
    rounds' votes; judged against round 2's policy and the chain's SFT. A previous run with several methods needs
    --previous-method, said in one line."""
    from core.store.database import Store
    from core.train.rounds import round_title

    folder, round1, first_out, first = rounds_run
    refused = subprocess.run([sys.executable, "-m", "bench.rounds", "--previous", str(first_out), "--out",
                              str(folder / "round3-refused"), "--base-model", tiny_model_dir], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "trained ppo, dpo, rloo: pass --previous-method" in refused.stderr
    assert "Traceback" not in refused.stderr
    out = folder / "round3"
    result = run_rounds("--previous", first_out, "--previous-method", "dpo", "--out", out, "--runs-dir",
                        folder / "runs5", "--base-model", tiny_model_dir, "--round2-votes", "4", "--demonstrations",
                        "0", "--forced-choice", "true", "--methods", "dpo", "--gate-votes", "10",
                        "--reward-args=--eval-fraction 0.5 --max-steps 1 --batch-size 2 --max-length 512",
                        *ROUNDS_ARGS)
    dpo2 = first["runs"]["dpo"]
    gate = result["round2"]["gate"]  # the tiny policies' head-to-head is a coin flip: a batch at the gate, or none
    extra = gate["cast"]
    assert extra in (0, 10) and (extra == 0) == (not list((out / "logs").glob("arena-round3-gate*.log")))
    assert result["round"] == 3 and result["pairing"] == [dpo2, first["start"]]
    assert result["policies"]["previous"] == result["previous_policy"] == dpo2
    assert result["policies"]["sft"] == round1["runs"]["sft"] and result["votes_before"] == 20
    votes = Store(out / "rounds.duckdb").votes()
    assert len(votes) == 24 + extra and len(votes[votes["round"] == round_title(3, dpo2, first["start"])]) == 4 + extra
    assert (out / "logs" / "arena-round3.log").exists() and (out / "logs" / "reward-round3.log").exists()
    assert Path(result["runs"]["dpo"]).name.endswith("-round3")
    lineage = json.loads((Path(result["runs"]["reward"]) / "data" / "lineage.json").read_text())
    assert lineage["train_pairs"] + lineage["eval_pairs"] == 24 + extra
    assert set(result["evaluation"]["over_previous_round"]) == {"dpo"}
    report = (out / "rounds.md").read_text()
    assert report.startswith("# Round 3") and f"round 3 dpo vs round 2's {Path(dpo2).name}" in report
