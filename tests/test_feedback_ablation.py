"""The ablation benchmark's scripted feedback (bench/feedback_ablation.py): every kind lands in the store as the
arena writes it, and the reward stage turns it into the pairs each variant switches on."""
from __future__ import annotations

import pytest

from bench.annotator import Taste, stars_for
from bench.feedback_ablation import CANDIDATES, EVAL_FRACTION, annotate
from core.records import Prompt
from core.store.database import Store
from core.train.feedback import FeedbackSources
from core.train.snapshot import split_for, take_preferences

LONG = ("1. Roast turkey with herb butter - the classic centrepiece, juicy when butter goes under the skin\n"
        "2. Sausage stuffing - baked apart so the edges crisp and the bird cooks evenly\n"
        "3. Mashed potatoes with garlic - creamy, and they can be made the day before\n"
        "4. Green beans with almonds - a bright side that balances the heavy dishes\n"
        "5. Pumpkin pie - the traditional finish, best with whipped cream")
TERSE = "1. Roast turkey\n2. Stuffing\n3. Mashed potatoes\n4. Green beans\n5. Pumpkin pie"
BROKEN = "Sure! Here are some ideas: turkey, stuffing and pie."


def test_stars_are_the_utility_quintile():
    cutoffs = [0.0, 1.0, 2.0, 3.0]
    assert [stars_for(u, cutoffs) for u in (-5, 0.5, 1.5, 2.5, 9)] == [1, 2, 3, 4, 5]
    assert stars_for(1.0, cutoffs) == 2  # a cut-off itself is not cleared


def test_every_kind_of_feedback_is_stored_and_held_out_requests_get_every_pair(tmp_path):
    custom = [Prompt(text=f"Top 5 custom dishes for dinner number {n}", source="custom") for n in range(8)]
    library = [Prompt(text="Top 5 dishes for Thanksgiving", source="library", library_id="food-1", split="train")]
    prompts = library + custom
    lists = {p.text: [LONG, TERSE, BROKEN, LONG.replace("Pumpkin pie", "Pecan pie")] for p in prompts}
    store = Store(tmp_path / "db.duckdb")
    counts = annotate(store, prompts, lists, Taste(name="terse", slip=0.0), rate=1.0, edits=5, both_bad_edits=5,
                      seed=0)

    held_out = [p for p in custom if split_for(p.prompt_id, None, EVAL_FRACTION) == "eval"]
    assert 0 < len(held_out) < len(custom)
    votes = store.votes()
    assert len(votes) == sum(counts[c] for c in ("left", "right", "tie", "both_bad"))
    assert len(votes) == 2 * (len(prompts) - len(held_out)) + len(held_out) * CANDIDATES * (CANDIDATES - 1) // 2
    assert counts["ratings"] == 2 * len(votes) == len(store.ratings())  # rate=1: both lists of every pair
    assert 0 < counts["edits"] <= 5 and len(store.demonstrations()) == counts["edits"] + counts["both_bad_edits"]

    _, pairs, lineage = take_preferences(store, tmp_path / "run", EVAL_FRACTION, FeedbackSources(ties=True))
    assert lineage["pairs_from_edits"] > 0 and lineage["pairs_from_ratings"] > 0
    # a held-out request's feedback stays held out whatever the source
    eval_prompts = {p.text for p in held_out}
    assert set(pairs[pairs.split == "eval"].prompt) <= eval_prompts
    assert not set(pairs[pairs.split == "train"].prompt) & eval_prompts


def test_the_paired_comparison_is_an_exact_mcnemar_test():
    from bench.feedback_ablation import mcnemar_p

    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(5, 0) == mcnemar_p(0, 5) == 2 / 32  # all 5 discordant pairs one way: 2 * 0.5^5
    assert mcnemar_p(3, 3) == 1.0
    assert abs(mcnemar_p(8, 2) - 2 * (1 + 10 + 45) / 1024) < 1e-12  # 0.109


def test_a_rerun_pairs_held_out_votes_by_their_texts_not_their_ids(tmp_path):
    """A rerun annotates a fresh database (new comparison ids, the same votes): the paired comparison still matches
    each held-out vote across the two variants' runs."""
    import pandas as pd

    from bench.feedback_ablation import paired

    def run(name, ids, correct):
        folder = tmp_path / "runs" / name
        folder.mkdir(parents=True)
        pd.DataFrame({"comparison_id": ids, "prompt": ["a", "b", "c"], "left_text": ["l1", "l2", "l3"],
                      "right_text": ["r1", "r2", "r3"], "split": "eval", "choice": ["left", "right", "left"],
                      "correct": correct, "repeat_of": None}).to_parquet(folder / "scores.parquet")

    run("votes", ["x1", "x2", "x3"], [True, False, False])
    run("plus_edits", ["y1", "y2", "y3"], [True, True, True])  # annotated again: other ids
    rows = [{"variant": "votes"}, {"variant": "+edits"}]
    paired(rows, tmp_path)
    assert rows[1]["vs_votes"] == {"only_this_right": 2, "only_votes_right": 0, "mcnemar_p": 0.5}
    # ties' own question: default + ties against default, printed under the table
    run("default", ["z1", "z2", "z3"], [True, True, False])
    run("defaultplus_ties", ["w1", "w2", "w3"], [False, True, True])
    rows = [{"variant": v} for v in ("votes", "default", "default+ties")]
    paired(rows, tmp_path)
    assert rows[2]["vs_default"] == {"only_this_right": 1, "only_votes_right": 1, "mcnemar_p": 1.0}
    assert "vs_default" not in rows[1]


def test_a_kept_runs_row_takes_its_wall_time_from_its_own_status(tmp_path):
    """A variant finished by an earlier invocation (kept, not retrained) still reports how long it trained."""
    from bench.feedback_ablation import row_of
    from core.runs import write_json

    run = tmp_path / "runs" / "plus_edits"
    (run / "data").mkdir(parents=True)
    write_json(run / "calibration.json", {"accuracy": 0.75, "correct": 3, "pairs": 4})
    write_json(run / "data" / "lineage.json", {"train_pairs": 10, "pairs_from_edits": 2})
    write_json(run / "status.json", {"state": "finished", "started_at": "2026-12-07T16:00:00+00:00",
                                     "updated_at": "2026-12-07T16:17:30+00:00"})
    row = row_of(tmp_path, "+edits")
    assert (row["seconds"], row["correct"], row["train_pairs"], row["pairs_from_edits"]) == (1050, 3, 10, 2)
    assert row_of(tmp_path, "+edits", seconds=12.4)["seconds"] == 12


def test_a_loops_database_is_copied_whole_and_never_touched(tmp_path):
    """--db: the variants train on a copy of a loop's feedback (its counts reported), the loop's file unchanged."""
    from bench.feedback_ablation import copy_feedback

    loop = tmp_path / "loop.duckdb"
    store = Store(loop)
    annotate(store, [Prompt(text="Top 5 snacks for a long flight", source="custom")],
             {"Top 5 snacks for a long flight": ["1. a\n2. b\n3. c\n4. d\n5. e"] * CANDIDATES},
             Taste(name="terse", slip=0.0), rate=1.0, edits=0, both_bad_edits=0, seed=0)
    before = loop.read_bytes()
    counts = copy_feedback(loop, tmp_path / "ablation.duckdb")
    assert counts == store.counts() and counts["votes"] > 0 and counts["ratings"] > 0
    assert Store(tmp_path / "ablation.duckdb").votes().comparison_id.tolist() == store.votes().comparison_id.tolist()
    assert loop.read_bytes() == before


def test_a_missing_database_is_one_line(tmp_path, capsys):
    from bench.feedback_ablation import main

    with pytest.raises(SystemExit) as stopped:
        main(["--db", str(tmp_path / "nowhere.duckdb"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 2 and "no such database" in err[-1] and not (tmp_path / "out").exists()
