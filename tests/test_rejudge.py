"""bench/rejudge.py's maths against hand-worked values and its flags (the run on the tiny loop is in
tests/test_loop.py)."""
from __future__ import annotations

import json
import random

import pytest

from bench.annotator import Taste, utility
from bench.best_of_n import bootstrap_interval
from bench.rejudge import judged, labelled, main, per_request

GOOD = "1. Turkey\n2. Stuffing\n3. Gravy\n4. Pie\n5. Rolls"  # what the terse taste likes
CHATTY = ("Sure! Here are some ideas you might enjoy for the holiday, each one explained at length because every "
          "family is different and there is a lot to say about it.")


def test_a_requests_points_are_its_mean_over_draws():
    verdicts = [["win", "loss", "tie"], ["win", "tie", "loss"]]  # (draws, requests)
    assert per_request(verdicts) == [1.0, 0.25, 0.25]


def test_the_bootstrap_resamples_whole_requests():
    assert bootstrap_interval([(0.5, 1)] * 10, random.Random(0), 200) == (0.5, 0.5)  # no spread, no interval
    low, high = bootstrap_interval([(1.0, 1)] * 5 + [(0.0, 1)] * 5, random.Random(0), 2000)
    assert 0.15 < low < 0.35 and 0.65 < high < 0.85  # mean 0.5, se sqrt(.25 / 10) = 0.16: about +-0.31


def test_a_policy_that_always_writes_the_taste_beats_one_that_never_does_in_every_draw():
    requests = ["top 5 Thanksgiving dishes"] * 6
    result = judged(requests, [[CHATTY] * 6] * 3, [[GOOD] * 6] * 3, Taste(name="terse"), seed=0, resamples=100)
    assert result["n"] == 18 and len(result["per_draw"]) == 3
    assert result["rate"] > 0.9 and result["wins"] >= 17  # the annotator's noise may flip one at most
    assert all(d["n"] == 6 for d in result["per_draw"])


def test_labels_and_bad_flags(capsys):
    assert labelled(" ppo = models/runs/ppo-1 ") == ("ppo", "models/runs/ppo-1")
    with pytest.raises(SystemExit) as stopped:
        main(["--reference", "models/runs/sft-1", "--policies", "ppo=x"])
    stderr = capsys.readouterr().err
    assert stopped.value.code == 2 and "LABEL=RUN" in stderr and len(stderr.strip().splitlines()) == 1


def test_a_finished_runs_draws_are_judged_again_in_another_pairing(tmp_path):
    saved = {"runs": {"chatty": "runs/a", "terse": "runs/b"}, "config": {"samples": 2, "seed": 0},
             "samples": [{"prompt": f"top 5 dishes #{i}", "chatty@0": CHATTY, "chatty@1": CHATTY, "terse@0": GOOD,
                          "terse@1": GOOD} for i in range(5)]}
    (tmp_path / "rejudge.json").write_text(json.dumps(saved))
    result = main(["--samples-from", str(tmp_path), "--taste", "terse", "--reference", "chatty", "--policies", "terse",
                   "--out", str(tmp_path / "again")])
    assert result["reference"] == "chatty" and result["policies"]["terse"]["n"] == 10  # 5 requests x 2 draws
    assert result["policies"]["terse"]["rate"] > 0.9 and (tmp_path / "again" / "rejudge.md").exists()
    assert result["utility"]["terse"]["mean"] == pytest.approx(utility("top 5 dishes #0", GOOD, "terse"))  # all alike
    assert result["utility"]["chatty"]["mean"] == pytest.approx(utility("top 5 dishes #0", CHATTY, "terse"))
    assert result["utility"]["terse"]["n"] == 10 and "| chatty (the reference) | - | - |" in (
        tmp_path / "again" / "rejudge.md").read_text()
    with pytest.raises(SystemExit, match="its labels: chatty, terse"):
        main(["--samples-from", str(tmp_path), "--reference", "sft", "--policies", "terse", "--out", str(tmp_path)])
