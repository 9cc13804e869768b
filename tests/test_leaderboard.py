"""The leaderboard (core/judge/leaderboard.py): Bradley-Terry ratings against hand-worked maximum-likelihood values,
which votes count, bootstrap intervals that cover the truth, the CLI on a real database and the dashboard page."""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.judge.leaderboard import (
    SCALE,
    leaderboard,
    mean_reward_by_policy,
    summary,
    usable_votes,
)
from core.records import (
    Generation,
    InputError,
    Pair,
    Policy,
    Prompt,
    short_policy_names,
)
from core.store.database import Store
from core.store.lock import file_lock
from core.view import charts
from tests.helpers import REPO, run_cli

APP = str(Path(__file__).resolve().parent.parent / "apps" / "dashboard.py")
PAGE = "dashboard_pages/leaderboard.py"


def votes(*groups, **columns) -> pd.DataFrame:
    """Store.votes()-shaped rows from (left policy, right policy, choice, how many) groups."""
    rows = [dict(choice=choice, left_policy=left, right_policy=right, source="arena", repeat_of=None,
                 prompt=f"Top 5 things {n}", left_text=f"{left} list {n}", right_text=f"{right} list {n}") | columns
            for left, right, choice, count in groups for n in range(count)]
    return pd.DataFrame(rows)


def ratings(board) -> dict[str, float]:
    return dict(zip(board.table.policy, board.table.rating))


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# ---- the fit against hand-worked values -----------------------------------------------------------------------------
def test_two_policies_give_the_closed_form_log_odds():
    # base+a wins 6 (sides mixed), ties 1, loses 3: 6.5 of 10, so the MLE gap is ln(6.5 / 3.5) in log-odds
    board = leaderboard(votes(("base+a", "base", "left", 4), ("base", "base+a", "right", 2),
                              ("base", "base+a", "tie", 1), ("base", "base+a", "left", 3)), bootstrap=50)
    assert board.anchor == "base"
    assert ratings(board)["base"] == 1000
    assert ratings(board)["base+a"] == pytest.approx(1000 + 400 / math.log(10) * math.log(6.5 / 3.5), abs=0.01)
    assert list(board.table.votes) == [10, 10]


def test_both_bad_counts_half_like_a_tie():
    tie = leaderboard(votes(("base+a", "base", "left", 5), ("base+a", "base", "tie", 2)), bootstrap=50)
    both_bad = leaderboard(votes(("base+a", "base", "left", 5), ("base+a", "base", "both_bad", 2)), bootstrap=50)
    assert ratings(tie) == pytest.approx(ratings(both_bad))
    assert ratings(tie)["base+a"] == pytest.approx(1000 + SCALE * math.log(6 / 1), abs=0.01)


def test_three_policies_follow_the_hand_solved_likelihood():
    # each policy beats the next 3 to 1 and a beats c 3 to 1: by symmetry the gaps are d and 2d, and a's score
    # equation 4σ(d) + 4σ(2d) = 6 (expected wins = wins) fixes d; solved here by bisection, not by Newton
    board = leaderboard(votes(("base+a", "base+b", "left", 3), ("base+a", "base+b", "right", 1),
                              ("base+b", "base+c", "left", 3), ("base+b", "base+c", "right", 1),
                              ("base+a", "base+c", "left", 3), ("base+a", "base+c", "right", 1)), bootstrap=50)
    low, high = 0.0, 5.0
    for _ in range(100):
        d = (low + high) / 2
        low, high = (d, high) if sigmoid(d) + sigmoid(2 * d) < 1.5 else (low, d)
    assert list(board.table.policy) == ["base+a", "base+b", "base+c"]
    assert board.anchor is None and np.mean(list(ratings(board).values())) == pytest.approx(1000)  # no base
    r = ratings(board)
    assert r["base+a"] - r["base+b"] == pytest.approx(SCALE * d, abs=0.01)
    assert r["base+b"] - r["base+c"] == pytest.approx(SCALE * d, abs=0.01)


def test_repeats_imports_and_self_pairs_are_left_out():
    counted = votes(("base+a", "base", "left", 5), ("base+a", "base", "right", 2))
    extra = pd.concat([counted,
                       votes(("base", "base+a", "left", 6), repeat_of="p-original"),  # repeats of earlier pairs
                       votes(("base", "base+a", "left", 6), source="import"),
                       votes(("imported", "base", "left", 6), source="demo"),
                       votes(("base", "base", "left", 6))])  # the arena without a challenger
    assert len(usable_votes(extra)) == 7
    assert ratings(leaderboard(extra, bootstrap=50)) == pytest.approx(ratings(leaderboard(counted, bootstrap=50)))


def test_demo_votes_count_and_no_comparison_is_an_input_error():
    assert len(usable_votes(votes(("base+a", "base", "left", 2), source="demo"))) == 2
    with pytest.raises(InputError, match="compares two different policies"):
        leaderboard(votes(("base", "base", "left", 3), ("imported", "imported", "tie", 2)))


def test_win_rates_and_counts_by_hand():
    board = leaderboard(votes(("base+a", "base", "left", 3), ("base", "base+a", "left", 1), ("base+a", "base", "tie", 2),
                              ("base+b", "base", "right", 4), ("base+b", "base", "left", 1)), bootstrap=50)
    rate, counts = board.win_rate, board.counts
    assert rate.loc["base+a", "base"] == pytest.approx(4 / 6)  # 3 wins and 2 ties halved, of 6
    assert rate.loc["base", "base+a"] == pytest.approx(2 / 6)
    assert rate.loc["base", "base+b"] == pytest.approx(4 / 5)
    assert np.isnan(rate.loc["base+a", "base+b"]) and np.isnan(rate.loc["base", "base"])  # never met
    assert counts.loc["base+a", "base"] == counts.loc["base", "base+a"] == 6
    assert counts.loc["base", "base+b"] == 5 and counts.loc["base+a", "base+b"] == 0
    assert list(rate.index) == list(board.table.policy) == list(counts.columns)
    assert dict(zip(board.table.policy, board.table.votes)) == {"base+a": 6, "base": 11, "base+b": 5}


def test_an_unbeaten_policy_is_marked_and_policies_that_never_met_are_reported():
    board = leaderboard(votes(("base+a", "base", "left", 4), ("x", "y", "left", 2), ("x", "y", "right", 1)),
                        bootstrap=50)
    notes = dict(zip(board.table.policy, board.table.note))
    assert notes["base+a"].startswith("won every vote") and notes["base"].startswith("lost every vote")
    assert notes["x"] == ""
    assert sorted(map(sorted, board.groups)) == [["base", "base+a"], ["x", "y"]]
    assert "never met" in summary(board)


# ---- the bootstrap --------------------------------------------------------------------------------------------------
def test_intervals_hold_the_estimate_shrink_with_votes_and_repeat_with_the_seed():
    few = votes(("base+a", "base", "left", 14), ("base+a", "base", "right", 6), ("base+b", "base", "tie", 10))
    many = pd.concat([few] * 4)
    small, large = leaderboard(few, bootstrap=400), leaderboard(many, bootstrap=400)
    for board in (small, large):
        t = board.table
        assert ((t.low <= t.rating) & (t.rating <= t.high)).all()
    width = {name: (b.table.high - b.table.low).set_axis(b.table.policy) for name, b in (("few", small),
                                                                                       ("many", large))}
    assert width["many"]["base+a"] < 0.7 * width["few"]["base+a"]  # ~1/sqrt(4) of it
    assert width["few"]["base"] == 0  # the anchor's interval is its own gap: none
    assert large.table.equals(leaderboard(many, bootstrap=400).table)
    assert not large.table.low.equals(leaderboard(many, bootstrap=400, seed=1).table.low)


def test_intervals_cover_the_true_gap_on_simulated_votes():
    """100 datasets of 40 votes per pair from known strengths; the 95 % interval of each gap to the base holds the
    true gap in about 95 % of them (at least 85 % leaves room for the noise of 100 draws and 200 resamples)."""
    rng = np.random.default_rng(7)
    truth = {"base": 1000.0, "base+a": 1080.0, "base+b": 1200.0}
    names = list(truth)
    covered = {"base+a": 0, "base+b": 0}
    for dataset in range(100):
        groups = []
        for i, first in enumerate(names):
            for second in names[i + 1:]:
                wins = rng.binomial(40, sigmoid((truth[first] - truth[second]) / SCALE))
                groups += [(first, second, "left", wins), (second, first, "left", 40 - wins)]
        t = leaderboard(votes(*groups), bootstrap=200, seed=dataset).table.set_index("policy")
        for name in covered:
            covered[name] += int(t.low[name] <= truth[name] <= t.high[name])
    assert min(covered.values()) >= 85, covered


def test_rank_is_shared_until_the_votes_tell_policies_apart():
    close = leaderboard(votes(("base+a", "base", "left", 6), ("base+a", "base", "right", 5)), bootstrap=300)
    clear = leaderboard(votes(("base+a", "base", "left", 40), ("base+a", "base", "right", 8)), bootstrap=300)
    assert list(close.table["rank"]) == [1, 1]
    assert list(clear.table["rank"]) == [1, 2]


# ---- the reward model's view ----------------------------------------------------------------------------------------
class LengthScorer:
    """Scores a list by its length, and remembers what it was asked."""

    def __init__(self):
        self.asked: list[tuple[str, str]] = []

    def score(self, prompts: list[str], texts: list[str]) -> list[float]:
        self.asked += list(zip(prompts, texts))
        return [float(len(t)) for t in texts]


def test_mean_reward_scores_each_distinct_list_of_the_counted_votes_once():
    frame = pd.concat([votes(("base+a", "base", "left", 2)), votes(("base+a", "base", "left", 2)),  # same lists twice
                       votes(("base", "base+a", "left", 1), repeat_of="p-1", left_text="never scored")],
                      ignore_index=True)
    frame.loc[0, "left_text"] = "a longer list than the others"  # 29 characters; "base+a list 1" has 13
    scorer = LengthScorer()
    means = mean_reward_by_policy(frame, scorer)
    assert len(scorer.asked) == len(set(scorer.asked)) == 5  # base+a: the long one, list 0 and list 1; base: 2
    assert means == pytest.approx({"base+a": (29 + 13 + 13) / 3, "base": 11.0})
    board = leaderboard(frame, mean_rewards=means, bootstrap=20)
    assert dict(zip(board.table.policy, board.table.mean_reward)) == pytest.approx(means)


# ---- the CLI on a real database -------------------------------------------------------------------------------------
BASE = Policy("HuggingFaceTB/SmolLM2-135M-Instruct")
TUNED = Policy("HuggingFaceTB/SmolLM2-135M-Instruct", "models/runs/ppo-20260101-000001/adapter")


def record(store: Store, left: Policy, right: Policy, choices: list[str], source: str = "arena") -> list[Pair]:
    pairs = []
    for n, choice in enumerate(choices):
        prompt = Prompt(f"Top 5 picnic foods {n}")
        pair = Pair(prompt, Generation(prompt, f"1. {left.name} bread {n}", left, True, 5),
                    Generation(prompt, f"1. {right.name} cheese {n}", right, True, 5), source=source)
        store.record_vote(store.record_pair(pair), choice, "ann")
        pairs.append(pair)
    return pairs


@pytest.fixture
def voted_db(tmp_path, monkeypatch):
    """A database with tuned vs base votes (arena, demo, and one self-consistency repeat), runs in an empty folder."""
    monkeypatch.setenv("RLHF_RUNS_DIR", str(tmp_path / "runs"))
    (tmp_path / "runs").mkdir()
    store = Store(tmp_path / "db.duckdb")
    first = record(store, TUNED, BASE, ["left"] * 5 + ["right", "tie", "both_bad"])[0]
    record(store, BASE, TUNED, ["right", "left"], source="demo")
    repeat = Pair(first.prompt, first.right, first.left, source="arena", chosen_by="repeat", repeat_of=first.pair_id)
    store.record_vote(store.record_pair(repeat), "right", "ann")  # counted once: as the original
    return store.path


def test_cli_prints_the_table_and_the_win_rates(voted_db):
    out = run_cli("leaderboard", "--db", voted_db, "--bootstrap", "200").stdout
    lines = out.splitlines()
    header = next(n for n, line in enumerate(lines) if line.strip().startswith("rank"))
    tuned, base = lines[header + 1].split(), lines[header + 2].split()
    assert tuned[1] == TUNED.name and base[1:3] == [BASE.name, "1000"]
    assert tuned[-2:] == ["10", "-"] and base[-1] == "-"  # 10 votes (the repeat left out), no reward model
    assert "70% (10)" in out  # 6 wins + 2 ties halved of 10 (the two 'both bad' and 'tie' count half)
    assert "no reward model" in out


def test_cli_says_what_is_wrong_in_one_line_and_needs_no_torch(tmp_path, voted_db):
    missing = run_cli("leaderboard", "--db", tmp_path / "nope.duckdb", check=False)
    assert (missing.returncode, missing.stderr.count("\n")) == (2, 1) and "no such database" in missing.stderr
    assert not (tmp_path / "nope.duckdb").exists()  # a read-only look creates nothing
    store = Store(tmp_path / "same.duckdb")
    record(store, BASE, BASE, ["left", "tie"])  # the arena without a challenger: no two policies compared
    same = run_cli("leaderboard", "--db", store.path, "--reward-model", "none", check=False)
    assert (same.returncode, same.stderr.count("\n")) == (2, 1) and "two different policies" in same.stderr
    with file_lock(voted_db, write=True, deadline=time.monotonic() + 5):  # another process mid-write
        busy = run_cli("leaderboard", "--db", voted_db, "--wait", "0.5", check=False)
    assert (busy.returncode, busy.stderr.count("\n")) == (2, 1) and "stayed locked" in busy.stderr
    probe = ("import sys; from core.cli import main; main(['leaderboard', '--db', sys.argv[1], '--bootstrap', '50']); "
             "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe, str(voted_db)], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert done.stdout.strip().endswith("False"), done.stderr  # no finished reward run: no model, no torch


def test_cli_scores_with_the_newest_finished_reward_model(voted_db, tiny_reward_run):
    runs = Path(os.environ["RLHF_RUNS_DIR"])
    shutil.copytree(tiny_reward_run, runs / "reward-20260101-000001")
    out = run_cli("leaderboard", "--db", voted_db, "--bootstrap", "100").stdout  # --reward-model newest
    rows = [line.split() for line in out.splitlines() if line.split()[1:2] in ([TUNED.name], [BASE.name])]
    means = [row[-1] for row in rows[:2]]
    assert len(means) == 2 and all(m[0] in "+-" and math.isfinite(float(m)) for m in means), out
    assert f"reward model {runs / 'reward-20260101-000001'}" in out


# ---- the dashboard page ---------------------------------------------------------------------------------------------
def open_page(tmp_path, monkeypatch, db) -> AppTest:
    monkeypatch.setenv("RLHF_DB", str(db))
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def test_charts_name_each_adapter_by_its_run_and_leave_the_shared_base_off():
    assert short_policy_names(["Smol+sft-1", "Smol", "Smol+dpo-2"]) == ["sft-1", "base", "dpo-2"]
    assert short_policy_names(["Smol+sft-1", "Qwen"]) == ["Smol+sft-1", "Qwen"]  # two bases: the names tell them apart
    names = ["Smol+ppo-<b>1</b>", "Smol"]
    rate, counts = pd.DataFrame([[np.nan, 0.6], [0.4, np.nan]], index=names, columns=names), pd.DataFrame(
        [[0, 10], [10, 0]], index=names, columns=names)
    heatmap = charts.win_rate_heatmap(rate, counts).data[0]
    assert list(heatmap.y) == list(heatmap.x) == ["ppo-&lt;b&gt;1&lt;/b&gt;", "base"]  # short, and still text
    table = pd.DataFrame({"policy": names, "rating": [1050.0, 950.0], "low": [1030.0, 930.0], "high": [1070.0, 970.0]})
    intervals = charts.rating_intervals(table).data[0]
    assert list(intervals.x) == ["ppo-&lt;b&gt;1&lt;/b&gt;", "base"] and "Smol+" in intervals.hovertext[0]


def test_page_explains_itself_before_two_policies_met(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_RUNS_DIR", str(tmp_path / "runs"))
    at = open_page(tmp_path, monkeypatch, tmp_path / "empty.duckdb")
    assert at.info and not at.error


def test_page_shows_table_charts_and_the_reward_models_scores(tmp_path, monkeypatch, voted_db, tiny_reward_run):
    at = open_page(tmp_path, monkeypatch, voted_db)
    table = at.dataframe[0].value
    assert list(table.policy) == [TUNED.name, BASE.name] and "mean_reward" not in table  # nothing scored: no column
    assert at.dataframe[1].value.loc[TUNED.name, BASE.name] == 10
    assert len(at.get("plotly_chart")) == 2
    shutil.copytree(tiny_reward_run, tmp_path / "runs" / "reward-20260101-000001")
    at.run()
    at.toggle(key="leaderboard_rm").set_value(True).run()
    assert not at.exception, at.exception
    assert at.dataframe[0].value.mean_reward.notna().all()


def test_a_damaged_reward_run_gets_one_line_and_the_ratings_still_show(tmp_path, monkeypatch, voted_db,
                                                                       tiny_reward_run):
    damaged = tmp_path / "runs" / "reward-20260101-000001"
    shutil.copytree(tiny_reward_run, damaged)
    (weights,) = damaged.glob("adapter/adapter_model.*")
    weights.write_bytes(weights.read_bytes()[:100])  # a copy cut short
    at = open_page(tmp_path, monkeypatch, voted_db)
    at.toggle(key="leaderboard_rm").set_value(True).run()
    assert not at.exception, at.exception
    assert "could not be loaded" in at.error[0].value and str(damaged) in at.error[0].value.replace("\\", "")
    assert "mean_reward" not in at.dataframe[0].value  # the ratings, without the column
    said = run_cli("leaderboard", "--db", voted_db, "--bootstrap", "50", check=False)
    assert said.returncode == 2 and "could not be loaded" in said.stderr.splitlines()[-1], said.stderr


def test_page_shows_policy_names_as_text(tmp_path, monkeypatch):
    odd = Policy("models/**bold**<img src=x>")  # a base model, so the anchor the caption names
    store = Store(tmp_path / "db.duckdb")
    record(store, odd, TUNED, ["left", "right", "left"])
    monkeypatch.setenv("RLHF_RUNS_DIR", str(tmp_path / "runs"))
    at = open_page(tmp_path, monkeypatch, store.path)
    assert odd.name in list(at.dataframe[0].value.policy)
    shown = [e.value for e in [*at.markdown, *at.caption]]
    assert any("\\*\\*bold\\*\\*\\<img" in v for v in shown)  # escaped, so shown as typed
    assert not any("<img" in v.replace("\\<img", "") for v in shown)
