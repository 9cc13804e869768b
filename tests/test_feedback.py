"""Every feedback source's reward-model pairs, built from a hand-made database and checked row by row; the tie
rows' loss against hand-computed values; a run's lineage counts each source."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from core.collect.library import text_key
from core.lists import format_list
from core.records import Generation, Pair, Policy, Prompt
from core.store.database import Store
from core.train.feedback import FeedbackSources, feedback_pairs
from core.train.snapshot import take_preferences

POLICY = Policy(base_model="tiny")
MEALS = Prompt(text="Top 5 custom meals for a quiet night in", source="custom")
GAMES = Prompt(text="Top 5 custom board games for two", source="custom")


def gen(prompt: Prompt, text: str) -> Generation:
    return Generation(prompt=prompt, text=text, policy=POLICY, well_formed=True, n_items=5)


def shown(store: Store, prompt: Prompt, left: str, right: str, **pair_fields) -> Pair:
    pair = Pair(prompt=prompt, left=gen(prompt, left), right=gen(prompt, right), **pair_fields)
    store.record_pair(pair)
    return pair


@pytest.fixture
def store(tmp_path):
    """One of each kind of feedback, by annotator "ann" unless said otherwise:
    - a left vote of strength 2 (A over B) and a right vote without strength (D over C), on MEALS;
    - a tie (E ~ F) on MEALS;
    - a "both bad" vote (G, H) on GAMES, then a list W that ann wrote for GAMES by editing G;
    - another "both bad" (P, Q) on GAMES by "other", who wrote nothing;
    - ratings on MEALS: A 5 stars, B 4, C 1 (ann); D 2 (other: never paired with ann's);
    - a repeat of the first pair, sides swapped, voted again (must not train twice);
    - a retracted vote (X over Y)."""
    s = Store(tmp_path / "db.duckdb")
    ab = shown(s, MEALS, "A", "B")
    s.record_vote(ab.pair_id, "left", "ann", strength=2)
    cd = shown(s, MEALS, "C", "D")
    s.record_vote(cd.pair_id, "right", "ann")
    s.record_vote(shown(s, MEALS, "E", "F").pair_id, "tie", "ann")
    gh = shown(s, GAMES, "G", "H")
    s.record_vote(gh.pair_id, "both_bad", "ann")
    s.record_demonstration(GAMES, "W", "ann", edited_from_generation_id=gh.left.generation_id)
    s.record_vote(shown(s, GAMES, "P", "Q").pair_id, "both_bad", "other")
    for generation, stars, who in ((ab.left, 5, "ann"), (ab.right, 4, "ann"), (cd.left, 1, "ann"),
                                   (cd.right, 2, "other")):
        s.record_rating(generation.generation_id, stars, who)
    repeat = Pair(prompt=MEALS, left=ab.right, right=ab.left, chosen_by="repeat", repeat_of=ab.pair_id)
    s.record_pair(repeat)
    s.record_vote(repeat.pair_id, "right", "ann")
    xy = shown(s, MEALS, "X", "Y")
    s.retract_vote(s.record_vote(xy.pair_id, "left", "ann"), "ann")
    return s


def frames(store: Store):
    votes, demos, ratings = store.votes(), store.demonstrations(), store.ratings()
    for frame in (votes, demos, ratings):
        frame["split"] = "train"
    return votes, demos, ratings


def triples(pairs: pd.DataFrame, source: str) -> list[tuple]:
    rows = pairs[pairs.source == source]
    return sorted(zip(rows.prompt.str[6:12], rows.chosen, rows.rejected, rows.margin.round(4)))


def test_every_source_gives_exactly_its_pairs(store):
    pairs, counts = feedback_pairs(*frames(store), FeedbackSources(edits=True, both_bad=True, ratings=True,
                                                                  ties=True))
    assert triples(pairs, "votes") == [("custom", "A", "B", round(2 / 3, 4)), ("custom", "D", "C", 0.0)]
    assert triples(pairs, "edits") == [("custom", "W", "G", 0.0)]
    # W over G already came from the edit: only W over H is new; "other" wrote nothing, so P/Q give nothing
    assert triples(pairs, "both_bad") == [("custom", "W", "H", 0.0)]
    # A>B (5 vs 4) repeats the vote and is dropped; A>C gap 4 -> margin 1; B>C gap 3 -> 1; D is another annotator's
    assert triples(pairs, "ratings") == [("custom", "A", "C", 1.0), ("custom", "B", "C", 1.0)]
    assert triples(pairs, "ties") == [("custom", "E", "F", 0.0), ("custom", "F", "E", 0.0)]
    assert counts == {"pairs_from_votes": 2, "pairs_from_edits": 1, "pairs_from_both_bad": 1,
                      "pairs_from_ratings": 2, "pairs_from_ties": 2}
    # rows made from a vote keep its comparison_id (traceable to the click); edits and ratings have none
    assert pairs.comparison_id.notna().tolist() == pairs.source.isin(["votes", "both_bad", "ties"]).tolist()


def test_each_source_switches_off_and_margins_follow_use_margin(store):
    pairs, counts = feedback_pairs(*frames(store), FeedbackSources(edits=False, both_bad=False, ratings=False,
                                                                  ties=False), use_margin=False)
    assert set(pairs.source) == {"votes"} and (pairs.margin == 0).all()
    assert counts["pairs_from_edits"] == counts["pairs_from_ratings"] == counts["pairs_from_ties"] == 0
    both_bad_only, _ = feedback_pairs(*frames(store), FeedbackSources(edits=False, both_bad=True, ratings=False))
    assert triples(both_bad_only, "both_bad") == [("custom", "W", "G", 0.0), ("custom", "W", "H", 0.0)]
    ratings_only, _ = feedback_pairs(*frames(store), FeedbackSources(edits=False, both_bad=False, ratings=True),
                                     use_margin=False)
    assert triples(ratings_only, "ratings") == [("custom", "A", "C", 0.0), ("custom", "B", "C", 0.0)]


def test_a_rating_gap_maps_to_the_vote_strength_scale(tmp_path):
    s = Store(tmp_path / "db.duckdb")
    pair = shown(s, MEALS, "one", "two")
    s.record_rating(pair.left.generation_id, 3, "ann")
    s.record_rating(pair.right.generation_id, 4, "ann")
    s.record_rating(pair.left.generation_id, 2, "ann")  # changed their mind: the latest rating counts
    pairs, _ = feedback_pairs(*frames(s))
    assert triples(pairs, "ratings") == [("custom", "two", "one", round(2 / 3, 4))]


def test_held_out_requests_keep_their_split_in_every_source(store, tmp_path):
    _, pairs, lineage = take_preferences(store, tmp_path, eval_fraction=1.0,
                                         sources=FeedbackSources(ties=True))
    assert set(pairs.split) == {"eval"}
    assert lineage["train_pairs"] == 0 and lineage["eval_pairs"] == len(pairs) == 8
    assert lineage["repeats"] == 1 and lineage["pairs_from_edits"] == 1
    assert {p.name for p in (tmp_path / "data").iterdir()} == {
        "votes.parquet", "arena_demonstrations.parquet", "ratings.parquet", "pairs.parquet", "lineage.json"}


def test_tie_rows_give_twice_the_half_target_cross_entropy():
    # TRL's loss on the two rows of a tie with scores r_a, r_b: -log σ(Δ) - log σ(-Δ), Δ = r_a - r_b.
    # By hand at Δ = 1: -log(0.731059) - log(0.268941) = 0.313262 + 1.313262 = 1.626523;
    # cross-entropy to 0.5: -(0.5 log σ(1) + 0.5 log σ(-1)) = 0.813262, half of it. At Δ = 0 both are log 4 / 2.
    for delta, by_hand in ((1.0, 1.626523), (0.0, math.log(4))):
        d = torch.tensor([delta])
        rows = -torch.nn.functional.logsigmoid(d) - torch.nn.functional.logsigmoid(-d)
        half_target = torch.nn.functional.binary_cross_entropy_with_logits(d, torch.tensor([0.5]))
        assert rows.item() == pytest.approx(by_hand, abs=1e-5)
        assert rows.item() == pytest.approx(2 * half_target.item(), abs=1e-6)


def test_a_list_saved_with_no_item_changed_gives_no_pair(tmp_path):
    """The arena saves "1. item" lines: a "1) item" list saved unchanged is no edit, as an edit or over a "both bad"
    side; deleting the text before the items is one (the arena refuses a list that keeps it)."""
    s = Store(tmp_path / "db.duckdb")
    items = ["Apples - crisp", "Pears - sweet", "Plums - juicy", "Figs - rich", "Kiwis - tart"]
    numbered = "\n".join(f"{n}) {item}" for n, item in enumerate(items, 1))
    pair = shown(s, MEALS, numbered, "Here you go:\n" + numbered)
    s.record_vote(pair.pair_id, "both_bad", "ann")
    for side in (pair.left, pair.right):
        s.record_demonstration(MEALS, format_list(items), "ann", edited_from_generation_id=side.generation_id)
    changed = format_list(items[:4] + ["Dates - chewy"])
    s.record_demonstration(MEALS, changed, "ann", edited_from_generation_id=pair.left.generation_id)
    pairs, _ = feedback_pairs(*frames(s), FeedbackSources(edits=True, both_bad=True))
    assert sorted(zip(pairs.source, pairs.chosen, pairs.rejected)) == sorted([
        ("both_bad", changed, "Here you go:\n" + numbered),  # changed over left is the edit's row already
        ("edits", format_list(items), "Here you go:\n" + numbered), ("edits", changed, numbered)])


def test_two_spellings_of_one_custom_request_share_a_split(tmp_path):
    """Requests are compared by text_key (spaces collapsed, zero-width characters dropped), so "Top 5  x" typed
    in the arena is split with "Top 5 x": one request on both sides would leak."""
    s = Store(tmp_path / "db.duckdb")
    for i in range(16):
        for text in (f"Top 5 custom things #{i}", f" Top 5  custom things #{i}\u200b"):
            s.record_vote(shown(s, Prompt(text=text, source="custom"), "A", "B").pair_id, "left", "ann")
    votes, _, _ = take_preferences(s, tmp_path / "run", eval_fraction=0.5)
    assert votes.prompt_id.nunique() == 32 and set(votes.split) == {"train", "eval"}
    assert (votes.groupby(votes.prompt.map(text_key)).split.nunique() == 1).all()
