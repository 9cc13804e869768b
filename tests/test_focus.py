"""Collecting more where the challenger is weak (core/collect/focus.py): the weak-spots table against hand-counted
votes, the focus weights against hand-computed values, the category cycle, the setting, and the arena, the CLI and
the dashboard's Arena page using them."""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.cli import main
from core.collect.arena import FOCUS_REFRESH_S, Arena
from core.collect.focus import (
    EXPLORE,
    FOCUS_KEY,
    TYPED,
    CategoryCycle,
    check_focus,
    focus_weights,
    read_focus,
    readable,
    save_focus,
    weak_spots,
)
from core.collect.generate import Generator
from core.collect.library import PromptCycle
from core.records import InputError, Prompt, SamplingSettings
from core.store.database import Store

APP = str(Path(__file__).resolve().parent.parent / "apps" / "dashboard.py")
LIBRARY = [Prompt(f"Top 5 {c} things #{i}", source="library", library_id=f"{c}-{i:03d}", category=c, split="train")
           for c in ("food", "travel", "books") for i in range(4)]


def hand_votes() -> pd.DataFrame:
    """A's votes, counted by hand in the test below."""
    return pd.DataFrame({
        "left_policy": ["A", "B", "A", "A", "A", "B", "A", "B"],
        "right_policy": ["B", "A", "B", "B", "A", "A", "B", "C"],
        "choice": ["left", "left", "tie", "both_bad", "right", "right", "left", "left"],
        "category": ["food", "food", "food", "travel", "travel", None, "travel", "books"]})


def test_weak_spots_count_each_vote_from_the_policys_side():
    table = weak_spots(hand_votes(), "A", ["food", "travel", "books", "kids"])
    # food: A beat B, B beat A, a tie; travel: both bad, A against itself (a tie), A beat B; B vs C is not A's;
    # the typed request: A beat B
    assert table.loc["food", ["votes", "won", "lost", "tied", "both_bad"]].tolist() == [3, 1, 1, 1, 0]
    assert table.loc["travel", ["votes", "won", "lost", "tied", "both_bad"]].tolist() == [3, 1, 0, 1, 1]
    assert table.loc[TYPED, ["votes", "won"]].tolist() == [1, 1]
    assert table.loc[["books", "kids"], "votes"].tolist() == [0, 0]  # listed, without votes
    assert table.loc["food", "score"] == pytest.approx(1.5 / 3)  # (won + tied / 2) / votes
    assert table.loc["travel", "score"] == pytest.approx(1.5 / 3)  # the "both bad" counts as lost
    assert math.isnan(table.loc["books", "score"])
    assert table.loc["food", "weakness"] == pytest.approx(1 - 2.5 / 5)  # 1 - (good + 1) / (votes + 2)
    assert table.loc["kids", "weakness"] == pytest.approx(0.5)  # no votes: the prior's 0.5
    assert table.loc[TYPED, "weakness"] == pytest.approx(1 - 2 / 3)
    low, high = table.loc["food", ["low", "high"]]
    assert low < 0.5 < high
    assert table.index[-1] == TYPED  # the library's rows weakest first, then requests without a category
    assert math.isnan(table.loc[TYPED, "focus"])  # typed requests are never steered
    assert table.focus.drop(TYPED).sum() == pytest.approx(1.0)
    assert readable(table).loc["books", "score % [95 %]"] == "no votes"
    of_b = weak_spots(hand_votes(), "B", ["food", "travel"])  # B lost its typed vote: weaker than food, still last
    assert of_b.index.tolist() == ["travel", "food", "books", TYPED]
    assert of_b.loc[TYPED, "weakness"] == pytest.approx(1 - 1 / 3)
    assert of_b.loc[TYPED, "weakness"] > of_b.loc["food", "weakness"]


def test_focus_weights_match_hand_computed_shares():
    votes = pd.DataFrame({"left_policy": ["A", "A", "A", "A"], "right_policy": ["B", "B", "B", "B"],
                          "choice": ["right", "right", "left", "left"],
                          "category": ["food", "food", "travel", "travel"]})
    weights = focus_weights(weak_spots(votes, "A", ["food", "travel", "books"]))
    # weakness: food 1 - 1/4 = 0.75 (two losses), travel 1 - 3/4 = 0.25 (two wins), books 0.5 (no votes); sum 1.5
    expected = {c: (1 - EXPLORE) * w / 1.5 + EXPLORE / 3 for c, w in (("food", 0.75), ("travel", 0.25), ("books", 0.5))}
    assert weights == pytest.approx(expected)
    assert weights["food"] == pytest.approx(0.375 + 0.25 / 3)
    assert focus_weights(weak_spots(votes.iloc[:0], "A", [])) == {}


def test_the_category_cycle_follows_the_weights_and_each_category_cycles_evenly():
    cycle = CategoryCycle(LIBRARY, seed=3)
    food = [cycle.next({"food": 1.0, "travel": 0.0}) for _ in range(8)]
    assert {p.category for p in food} == {"food"}
    assert Counter(p.text for p in food[:4]) == Counter(p.text for p in LIBRARY if p.category == "food")
    drawn = Counter(cycle.next({"food": 0.8, "books": 0.2}).category for _ in range(500))
    assert set(drawn) == {"food", "books"} and 340 < drawn["food"] < 460
    even, plain = CategoryCycle(LIBRARY, seed=3), PromptCycle(LIBRARY, seed=3)  # focus "even": the plain cycle
    assert [even.next().text for _ in range(24)] == [plain.next().text for _ in range(24)]
    unweighted = even.next({"unknown": 1.0})  # no usable weight: the even cycle's next request
    assert unweighted.category in {"food", "travel", "books"}
    assert unweighted.text == plain.next().text


@pytest.mark.parametrize("bad", ["Weak", "", None, 1])
def test_a_bad_focus_is_one_line_and_a_bad_stored_one_reads_as_even(store, bad):
    with pytest.raises(InputError, match="focus is one of even, weak"):
        check_focus(bad)
    assert read_focus(store) == "even"
    save_focus(store, "weak")
    save_focus(store, None)  # a flag left out keeps what is stored
    assert read_focus(store) == "weak"
    store.set_setting(FOCUS_KEY, "sideways")  # someone wrote the table by hand
    assert read_focus(store) == "even"


def test_the_arena_serves_more_requests_where_its_challenger_loses(store, tiny_loaded):
    arena = Arena(store, Generator(tiny_loaded), LIBRARY, sampling=SamplingSettings(max_new_tokens=4),
                  queue_size=0, seed=0)
    for _ in range(9):  # base against itself: "both bad" wherever the request is about food, else decided (a tie)
        shown = arena.next_pair()
        arena.vote(shown.pair_id, "both_bad" if "food" in shown.prompt else "left", "alice")
    challenger = arena.policies[1].name
    spots = weak_spots(store.votes_with(challenger), challenger, ["books", "food", "travel"])
    assert spots.index[0] == "food" and spots.loc["food", "both_bad"] == spots.loc["food", "votes"] > 0
    save_focus(store, "weak")
    arena._prepare_background()  # what the queue's thread does before each pair
    assert arena._focus == pytest.approx(focus_weights(spots))
    assert arena._focus["food"] == max(arena._focus.values()) > 1 / 3
    asked, draw = [], arena._cycle.next
    arena._cycle.next = lambda weights=None: asked.append(weights) or draw(weights)  # what the pair's request obeys
    for _ in range(3):
        arena.next_pair()
    assert asked == [arena._focus] * 3
    shares = Counter(draw(arena._focus).category for _ in range(600))
    assert abs(shares["food"] / 600 - arena._focus["food"]) < 0.06
    save_focus(store, "even")
    arena._prepare_background()
    assert arena._focus is None
    arena.next_pair()
    assert asked[-1] is None


def test_the_arena_reads_the_votes_again_after_a_while(store, tiny_loaded, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("core.collect.arena.time.monotonic", lambda: clock[0])
    arena = Arena(store, Generator(tiny_loaded), LIBRARY, sampling=SamplingSettings(max_new_tokens=4),
                  queue_size=0, seed=0)
    save_focus(store, "weak")
    arena._prepare_background()
    assert arena._focus == pytest.approx({c: 1 / 3 for c in ("books", "food", "travel")})  # no votes: even
    shown = arena.next_pair()
    arena.vote(shown.pair_id, "both_bad", "alice")
    category = shown.prompt.split()[2]
    clock[0] += FOCUS_REFRESH_S / 2
    arena._prepare_background()
    assert arena._focus[category] == pytest.approx(1 / 3)  # too soon: the votes are not read again
    clock[0] += FOCUS_REFRESH_S
    arena._prepare_background()
    assert arena._focus[category] > 1 / 3 and arena._focus[category] == max(arena._focus.values())


def test_the_cli_prints_the_table_or_says_what_to_pass(tmp_path, capsys, store, tiny_loaded):
    arena = Arena(store, Generator(tiny_loaded), LIBRARY, sampling=SamplingSettings(max_new_tokens=4),
                  queue_size=0, seed=0)
    arena.vote(arena.next_pair().pair_id, "both_bad", "alice")
    db = str(store.path)
    assert main(["weak-spots", "--db", db]) == 0  # the arena said what it serves: its challenger by default
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()]
    voted = [row for row in rows if row[:1] in (["food"], ["travel"], ["books"]) and row[1] == "1"]
    assert len(voted) == 1 and voted[0][1:6] == ["1", "0", "0", "0", "1"]  # votes, won, lost, tied, both bad
    assert out.startswith(arena.policies[1].name) and rows[rows.index(["category"]) + 1] == voted[0]  # weakest first
    assert main(["weak-spots", "--db", db, "--policy", "nobody"]) == 2  # a mistyped name: the names there are
    assert capsys.readouterr().err.strip() == f"error: no votes name the policy 'nobody': pass one of " \
                                              f"{arena.policies[1].name}"
    fresh = Store(tmp_path / "fresh.duckdb")
    fresh.set_setting(FOCUS_KEY, "even")
    assert main(["weak-spots", "--db", str(fresh.path)]) == 2
    assert capsys.readouterr().err.strip().startswith("error: no arena has said what it serves yet: pass --policy")


def test_the_arena_page_saves_the_focus_and_shows_the_weak_spots(tmp_path, monkeypatch, tiny_loaded):
    monkeypatch.setenv("RLHF_DB", str(tmp_path / "db.duckdb"))
    monkeypatch.setenv("RLHF_RUNS_DIR", str(tmp_path / "runs"))
    (tmp_path / "runs").mkdir()
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("dashboard_pages/arena.py").run()
    assert not at.exception, at.exception
    assert any("pass --policy" in info.value for info in at.info)  # no arena yet: says so, no table
    at.radio(key="arena_focus").set_value("weak").run()
    at.button(key="arena_save").click().run()
    assert not at.exception and not at.error
    arena_store = Store(tmp_path / "db.duckdb")
    assert read_focus(arena_store) == "weak"
    arena = Arena(arena_store, Generator(tiny_loaded), LIBRARY, sampling=SamplingSettings(max_new_tokens=4),
                  queue_size=0, seed=0)
    arena.vote(arena.next_pair().pair_id, "both_bad", "alice")
    at.run()
    assert not at.exception
    table = at.dataframe[0].value
    assert "score % [95 %]" in table.columns and table.votes.sum() == 1 and table.both_bad.sum() == 1
    assert at.radio(key="arena_focus").value == "weak"


def test_the_bench_tests_whether_categories_differ_against_hand_computed_chi_square(tmp_path, store, tiny_loaded):
    from bench.weak_spots import homogeneity
    from bench.weak_spots import main as bench_main

    def votes(food: str, travel: str) -> pd.DataFrame:  # A against B, four votes a category
        return pd.DataFrame({"left_policy": ["A"] * 8, "right_policy": ["B"] * 8, "choice": [*food, *travel],
                             "category": ["food"] * 4 + ["travel"] * 4})

    same = homogeneity(weak_spots(votes(["left", "right"] * 2, ["left", "right"] * 2), "A", ["food", "travel"]))
    assert (same["chi2"], same["p"]) == (0.0, 1.0)
    # won 4 / lost 0 against won 0 / lost 4: a 2 x 2 table, expected 2 a cell: χ² = 4 x (4 - 2)² / 2 = 8, and
    # P(χ²₁ > 8) = erfc(2) = 0.00468
    apart = homogeneity(weak_spots(votes(["left"] * 4, ["right"] * 4), "A", ["food", "travel", "books"]))
    assert apart == {"chi2": 8.0, "dof": 1, "p": pytest.approx(math.erfc(2), abs=1e-4), "categories": 2}
    assert homogeneity(weak_spots(votes(["left"] * 4, ["left"] * 4), "A", ["food"]))["p"] is None  # one outcome
    arena = Arena(store, Generator(tiny_loaded), LIBRARY, sampling=SamplingSettings(max_new_tokens=4),
                  queue_size=0, seed=0)
    arena.vote(arena.next_pair().pair_id, "both_bad", "alice")
    result = bench_main(["--db", str(store.path), "--out", str(tmp_path / "out")])
    assert result["votes"] == 1 and result["policy"] == arena.policies[1].name
    assert (tmp_path / "out" / "weak_spots.md").read_text().count("\n| ") == 12 + 1  # header and every category
    with pytest.raises(SystemExit):
        bench_main(["--db", str(tmp_path / "none.duckdb")])


def test_the_permutation_test_keeps_a_requests_draws_together():
    from bench.weak_spots import permutation_p

    # four requests, two draws each: food's two always won, travel's two always lost. Shuffling the labels over the
    # requests gives one of 6 arrangements of (food, food, travel, travel); 2 of them split the requests as observed
    # (χ² as large), so p -> 1/3, not the tiny p of 8 independent votes
    votes = pd.DataFrame({"left_policy": ["A"] * 8, "right_policy": ["B"] * 8,
                          "choice": ["left"] * 4 + ["right"] * 4, "category": ["food"] * 4 + ["travel"] * 4,
                          "request": ["r1", "r1", "r2", "r2", "r3", "r3", "r4", "r4"]})
    assert permutation_p(votes, "A", rounds=3000) == pytest.approx(1 / 3, abs=0.03)
