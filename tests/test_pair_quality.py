"""bench/pair_quality.py: online DPO's training pairs judged by the annotator, counted against hand-made scored lists
(two rejection runs over the same lists, one reward model right on every decided pair, the other wrong on every one)."""
from __future__ import annotations

import json

import pytest

from bench import pair_quality
from bench.annotator import Taste, utility

SHORT = "1. Apple\n2. Pear\n3. Fig\n4. Plum\n5. Kiwi"
LONG = ("1. Apple - crisp and sweet, and keeps for weeks in a cool cellar.\n2. Pear - soft and juicy when ripe.\n"
        "3. Fig - rich, jammy and good with cheese.\n4. Plum - tart skin and sweet flesh.\n5. Kiwi - green and sharp.")
REQUESTS = ["Top 5 fruits for a picnic", "Top 5 fruits for winter"]


def scored_run(folder, scores: list[float]):
    """A finished rejection run's folder as pair_quality reads it: each request's lists SHORT, LONG, SHORT with
    `scores`, all finished."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"stage": "rejection", "sft_adapter": ""}))
    rows = [{"step": 0, "prompt": r, "text": text, "finished": True, "draw": d, "score": s, "well_formed": True}
            for r in REQUESTS for d, (text, s) in enumerate(zip((SHORT, LONG, SHORT), scores))]
    (folder / "samples.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(folder)


def test_right_and_wrong_pairs_and_orders_are_counted_by_the_annotators_utility(tmp_path, capsys):
    taste = Taste(name="terse")
    for r in REQUESTS:  # the premise: terse prefers the short list beyond its tie band
        assert utility(r, SHORT, "terse") - utility(r, LONG, "terse") >= taste.tie_band
    right = scored_run(tmp_path / "right", [2.0, 0.0, 1.0])  # best SHORT over worst LONG
    wrong = scored_run(tmp_path / "wrong", [0.0, 2.0, 1.0])  # best LONG over worst SHORT
    results = pair_quality.main(["--taste", "terse", "--runs", f"a={right}", f"b={wrong}", "--resamples", "50"])
    a, b = results["a"], results["b"]
    assert (a["pairs"], a["right"], a["wrong"], a["ties"], a["share_right"]) == (2, 2, 0, 0, 1.0)
    assert (b["right"], b["wrong"], b["share_right"]) == (0, 2, 0.0)
    # decided pairs per request: (SHORT, LONG) twice; the two SHORTs tie
    assert (a["orders"]["agree"], a["orders"]["decided"]) == (4, 4)
    assert (b["orders"]["agree"], b["orders"]["decided"]) == (0, 4)
    assert a["chosen_utility"] == pytest.approx(utility(REQUESTS[0], SHORT, "terse"))
    assert results["a vs b"] == {"only_first": 4, "only_second": 0, "decided": 4}
    assert "100.0% [" in capsys.readouterr().out


def test_runs_without_a_label_are_refused_in_one_line(tmp_path):
    with pytest.raises(SystemExit, match="pass --runs LABEL=RUN"):
        pair_quality.main(["--runs", str(tmp_path)])


def test_gap_quarters_count_each_quarter_by_hand():
    reward_gaps = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]  # 9 pairs: quarters of 2, 2, 2 and the last 3
    utility_gaps = [-1.0, 0.0, 1.0, -1.0, 1.0, 1.0, 1.0, 0.1, 1.0]
    assert pair_quality.gap_quarters(reward_gaps[::-1], utility_gaps[::-1], 0.15) == [
        {"gap_low": 0.1, "gap_high": 0.2, "right": 0, "wrong": 1, "ties": 1},
        {"gap_low": 0.3, "gap_high": 0.4, "right": 1, "wrong": 1, "ties": 0},
        {"gap_low": 0.5, "gap_high": 0.6, "right": 2, "wrong": 0, "ties": 0},
        {"gap_low": 0.7, "gap_high": 0.9, "right": 2, "wrong": 0, "ties": 1}]


def test_draws_judges_each_run_again_on_its_first_lists_only(tmp_path):
    # SHORT 0.0, LONG 1.0, SHORT 2.0: over all three the best and worst are both SHORT (a tie for the annotator);
    # over the first two LONG beats SHORT, which terse gets the wrong way round
    run = scored_run(tmp_path / "run", [0.0, 1.0, 2.0])
    results = pair_quality.main(["--taste", "terse", "--runs", f"a={run}", "--draws", "2", "--resamples", "50"])
    assert (results["a"]["ties"], results["a"]["wrong"]) == (2, 0)
    cut = results["a, first 2 lists"]
    assert (cut["pairs"], cut["wrong"], cut["ties"]) == (2, 2, 0)
    assert cut["orders"]["decided"] == 2  # one decided pair (SHORT, LONG) a request among two lists
