"""bench/heldout_transfer.py: reward runs judged on a database's held-out votes, as the reward stage judges them."""
from __future__ import annotations

import json

import pytest

from bench.heldout_transfer import main


def test_a_run_judged_on_its_own_database_matches_its_own_held_out_report(tiny_reward_run, preference_db, tmp_path):
    """The reward stage scored its held-out votes when it finished (calibration.json); judging the same run on the
    same database, split the same way, must count the same votes right. A second name for the same run agrees with
    the first on every vote."""
    rows = main(["--db", str(preference_db), "--runs", f"a={tiny_reward_run},b={tiny_reward_run}",
                 "--eval-fraction", "0.4", "--out", str(tmp_path / "rows.json")])
    own = json.loads((tiny_reward_run / "calibration.json").read_text())
    assert (rows[0]["correct"], rows[0]["pairs"]) == (own["correct"], own["pairs"]) and own["pairs"] > 0
    assert rows[0]["ci95"][0] <= rows[0]["accuracy"] <= rows[0]["ci95"][1]
    assert rows[1]["vs_first"] == {"only_this_right": 0, "only_votes_right": 0, "mcnemar_p": 1.0, "points": 0.0}
    assert json.loads((tmp_path / "rows.json").read_text())["rows"] == rows


@pytest.mark.parametrize("args, says", [
    (["--runs", "nameonly"], "is not NAME=FOLDER of a finished reward run"),
    (["--runs", "a=RUN", "--db", "NOWHERE"], "no such database"),
    (["--runs", "a=RUN", "--eval-fraction", "0.95"], "trained on"),  # most of its training requests held out here
])
def test_bad_input_is_one_line(tiny_reward_run, preference_db, tmp_path, capsys, args, says):
    args = [str(tmp_path / "none.duckdb") if a == "NOWHERE" else a.replace("=RUN", f"={tiny_reward_run}")
            for a in args]
    with pytest.raises(SystemExit) as stopped:
        main(["--db", str(preference_db), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 2 and says in err[-1]
