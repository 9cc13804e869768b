"""bench/reward_ceiling.py: the Bayes-optimal reward model for a scripted annotator, against hand-computed values."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench.annotator import Taste, utility
from bench.reward_ceiling import agreement_given_decided, main, oracle_credit

REPO = Path(__file__).resolve().parent.parent
REQUEST = "Top 5 ideas for a Thanksgiving meal"
GOOD = "1. Roast turkey\n2. Mashed potatoes\n3. Cornbread stuffing\n4. Green beans\n5. Pumpkin pie"
CHATTY = "Sure! Here are some ideas:\n" + GOOD + "\nEnjoy!"


def test_the_oracle_and_its_expected_agreement_by_hand():
    taste = Taste()  # temperature 0.5, tie band 0.15, slip 0.05
    assert (oracle_credit(1.0, taste), oracle_credit(-1.0, taste), oracle_credit(0.1, taste)) == (1.0, 0.0, 0.5)
    # a gap of 1 between good lists: decided with 0.05/2 + 0.95, towards the better side with 0.05/4 + 0.95 σ(2)
    sigma2 = 1 / (1 + math.exp(-2))
    assert agreement_given_decided(3.0, 2.0, taste) == pytest.approx((0.0125 + 0.95 * sigma2) / 0.975)
    assert agreement_given_decided(2.0, 3.0, taste) == agreement_given_decided(3.0, 2.0, taste)  # sides alike
    assert agreement_given_decided(2.0, 2.1, taste) == pytest.approx(0.5)  # inside the tie band: slips only
    assert agreement_given_decided(-2.0, -1.5, taste) == pytest.approx(0.5)  # two poor lists: "both bad"
    assert agreement_given_decided(-3.0, -1.5, taste) > 0.9  # poor but far apart: a real vote


def test_a_run_is_measured_against_the_oracle_on_its_own_held_out_votes(tmp_path):
    gap = utility(REQUEST, GOOD, "form") - utility(REQUEST, CHATTY, "form")
    assert gap > 1  # the chatty copy loses on form
    run = tmp_path / "reward-1"
    run.mkdir()
    # four held-out decided votes: the good list won three (the model right on two), the chatty copy won one (a
    # slip the model got right); a train vote, a tie and a repeat are not counted
    rows = [("eval", "left", GOOD, CHATTY, True, None), ("eval", "right", CHATTY, GOOD, True, None),
            ("eval", "left", GOOD, CHATTY, False, None), ("eval", "left", CHATTY, GOOD, True, None),
            ("train", "left", GOOD, CHATTY, True, None), ("eval", "tie", GOOD, CHATTY, None, None),
            ("eval", "left", GOOD, CHATTY, False, "c0")]
    pd.DataFrame([{"prompt": REQUEST, "split": s, "choice": c, "left_text": lt, "right_text": rt, "correct": ok,
                   "repeat_of": rep} for s, c, lt, rt, ok, rep in rows]).to_parquet(run / "scores.parquet")
    result = main(["--taste", "form", "--runs", str(run), "--out", str(tmp_path / "out")])[str(run)]
    assert (result["reward_model"]["hits"], result["reward_model"]["n"]) == (3, 4)
    assert result["oracle"]["hits"] == 3 and result["oracle"]["rate"] == 0.75
    assert (result["model_wrong_oracle_right"], result["model_wrong_oracle_wrong"]) == (1, 0)
    assert result["model_right_oracle_wrong"] == 1
    every_vote = agreement_given_decided(utility(REQUEST, GOOD, "form"), utility(REQUEST, CHATTY, "form"), Taste())
    assert result["expected_ceiling"] == pytest.approx(every_vote) and every_vote > 0.9  # one pair, four times
    assert "| reward-1 | 4 | 0.750" in (tmp_path / "out" / "reward_ceiling.md").read_text()


def test_a_folder_without_scores_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bench.reward_ceiling", "--runs", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "holds no scores.parquet" in done.stderr and "Traceback" not in done.stderr
