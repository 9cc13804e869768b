"""bench/round_votes.py: what each round's pairs asked the annotator, against hand-worked values."""
from __future__ import annotations

import pandas as pd
import pytest

from bench.annotator import utility
from bench.round_votes import choice_table, markdown

GOOD = "1. Turkey\n2. Stuffing\n3. Gravy\n4. Pie\n5. Rolls"
CHATTY = "Sure! Here are some ideas, each explained at length because every family is different."


def test_choice_table_counts_ties_and_utility_gaps_per_round_choice_and_request_kind():
    request = "top 5 Thanksgiving dishes"
    votes = pd.DataFrame({
        "round": ["round 2", "round 2", "round 2", None],
        "chosen_by": ["uncertain", "uncertain", "random", "random"],
        "prompt_id": ["lib1", "lib2", "own1", "own1"],
        "prompt": [request] * 4,
        "left_text": [GOOD, GOOD, GOOD, CHATTY],
        "right_text": [GOOD, CHATTY, CHATTY, GOOD],
        "choice": ["tie", "left", "both_bad", "right"],
    })
    table = choice_table(votes, {"lib1", "lib2"}, "terse").set_index(["round", "chosen_by", "request"])
    gap = abs(utility(request, GOOD, "terse") - utility(request, CHATTY, "terse"))
    assert gap > 1  # the two lists differ for this taste
    uncertain = table.loc[("round 2", "uncertain", "library")]
    assert (uncertain.votes, uncertain.ties, uncertain.both_bad, uncertain.zero_gap) == (2, 1, 0, 1)
    assert uncertain.mean_gap == pytest.approx(gap / 2)  # one identical pair (gap 0), one with the full gap
    own = table.loc[("round 2", "random", "own")]
    assert (own.votes, own.ties, own.both_bad, own.zero_gap, own.mean_gap) == (1, 0, 1, 0, pytest.approx(gap))
    assert table.loc[("(no round)", "random", "own")].votes == 1
    assert markdown(table.reset_index()).count("\n") == 4  # a header, its rule and three rows


def test_round_votes_without_a_database_says_what_to_pass():
    from bench.round_votes import main

    with pytest.raises(SystemExit, match="pass --db"):
        main([])
