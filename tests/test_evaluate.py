"""Win-rate maths against hand-computed values, and `python -m core eval` on the tiny model."""
from __future__ import annotations

import json

import pytest

from core.win_rate import WinRate, votes_to_pass, wilson_interval, win_rate
from tests.helpers import run_cli


def test_wilson_interval_on_hand_examples():
    # 8/10, z=1.96: centre (.8 + 1.96²/20) / (1 + 1.96²/10) = .99208 / 1.38416 = .71675;
    # half-width 1.96·sqrt(.016 + 1.96²/400) / 1.38416 = .22658  ->  [.4902, .9433]
    low, high = wilson_interval(8, 10)
    assert (low, high) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    # 0/5 stays inside [0, 1] and is not a zero-width interval: [0, 1.96²/(5 + 1.96²)] = [0, .4345]
    assert wilson_interval(0, 5) == (0.0, pytest.approx(0.4345, abs=1e-4))
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_votes_to_pass_is_where_wilsons_lower_end_crosses_one_half():
    # 69 of 117 (round 3's gate on `ontopic`): share .5897; z² / (4 · .0897²) = 3.8416 / .03220 = 119.3, so 120
    # decided votes, 3 more; at 119 (the same share) the lower end is still under one half, at 120 above it
    assert votes_to_pass(69, 117) == 3
    share = 69 / 117
    assert wilson_interval(share * 119, 119)[0] < 0.5 < wilson_interval(share * 120, 120)[0]
    assert votes_to_pass(9, 12) == 4  # .75: 3.8416 / .25 = 15.4, so 16
    assert votes_to_pass(65, 100) == 0  # already through: Wilson [.553, .734]
    assert votes_to_pass(50, 100) is None and votes_to_pass(40, 100) is None and votes_to_pass(0, 0) is None
    # where the bound is a whole number the lower end lands on one half there, which is not above it: 16 of 25 (.64)
    # gives 3.8416 / (4 · .14²) = 49 exactly, so 50 decided votes, 25 more; 337 of 625 is on the line itself
    assert votes_to_pass(16, 25) == 25 and votes_to_pass(337, 625) == 1
    for wins, n in [(16, 25), (337, 625), (58, 108)]:  # each answer is the first count the gate itself passes
        more = votes_to_pass(wins, n)
        assert wilson_interval(wins / n * (n + more - 1), n + more - 1)[0] <= 0.5 < \
            wilson_interval(wins / n * (n + more), n + more)[0]


def test_win_rate_counts_ties_half():
    result = win_rate(["win", "win", "tie", "loss"])
    assert (result.wins, result.losses, result.ties, result.n) == (2, 1, 1, 4)
    assert result.rate == pytest.approx(2.5 / 4)
    assert result.interval == wilson_interval(2.5, 4)
    assert "62.5%" in str(result) and "1 ties counted half" in str(result)
    assert WinRate(0, 0, 0).rate is None
    with pytest.raises(ValueError, match="win, loss or tie"):
        win_rate(["draw"])


def test_eval_command_judges_an_adapter_against_the_base(tiny_model_dir, tiny_adapter_dir, tiny_reward_run, tmp_path):
    out = tmp_path / "report.json"
    done = run_cli("eval", "--policy", tiny_adapter_dir, "--against", "base", "--reward-model", tiny_reward_run,
                   "--base-model", tiny_model_dir, "--prompts", "6", "--max-new-tokens", "12", "--out", out)
    assert "6 held-out requests" in done.stdout and "win rate" in done.stdout
    report = json.loads(out.read_text())
    wins = report["win_rate"]
    assert wins["wins"] + wins["losses"] + wins["ties"] == wins["n"] == 6
    assert wins["low"] <= wins["rate"] <= wins["high"]
    assert len(report["samples"]) == 6 and {"policy_text", "against_text", "policy_score"} <= set(report["samples"][0])
    # the adapter changes what is sampled from the same seed, so the two sides really are two policies
    assert any(s["policy_text"] != s["against_text"] for s in report["samples"])
    outcomes = ["win" if s["policy_score"] > s["against_score"] else "loss" if s["policy_score"] < s["against_score"]
                else "tie" for s in report["samples"]]
    assert outcomes.count("win") == wins["wins"]
    assert report["well_formed"]["policy"]["n"] == 6


def test_eval_refuses_bad_input(tmp_path):
    missing = run_cli("eval", check=False)
    assert missing.returncode == 2 and "--policy" in missing.stderr
    not_adapter = run_cli("eval", "--policy", tmp_path, check=False)
    assert not_adapter.returncode == 2 and "holds no adapter" in not_adapter.stderr
    assert "python -m core train sft (or ppo, dpo, rloo, rejection)" in not_adapter.stderr  # any policy run


def test_eval_checks_the_reward_model_before_it_samples(tmp_path, monkeypatch):
    """A mistyped --reward-model fails at once, not after both policies answered 72 requests."""
    from core.judge import evaluate
    from core.records import ModelLoadError

    monkeypatch.setattr(evaluate, "load", lambda *a, **k: pytest.fail("the model was loaded before the check"))
    with pytest.raises(ModelLoadError, match="holds no adapter.*python -m core train reward"):
        evaluate.evaluate(evaluate.EvalConfig(policy="base", reward_model=str(tmp_path)))
