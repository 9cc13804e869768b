"""Self-consistency repeats: a voted pair shown again to its own annotator, sides swapped, stored as a new pair of
the same two generations; the rate is respected, other annotators and retracted votes never get one."""
from __future__ import annotations

import pandas as pd
import pytest

from core.collect.arena import Arena
from core.collect.chooser import save_settings, swapped_repeat
from core.collect.generate import Generator
from core.records import Generation, Pair, Policy, Prompt, SamplingSettings

GOOD_LIST = "1. Apples - crisp\n2. Pears - sweet\n3. Plums - juicy\n4. Figs - rich\n5. Kiwis - tart"
LIBRARY = [Prompt(f"Top 5 things #{i}", source="library", library_id=f"lib-{i}", split="train") for i in range(5)]


@pytest.fixture
def arena(store, tiny_loaded):
    """An arena whose repeats may come straight back (no gap), so a test needs only a vote or two."""
    return Arena(store, Generator(tiny_loaded), LIBRARY, sampling=SamplingSettings(max_new_tokens=8), queue_size=0,
                 seed=0, repeat_gap=0)


def pair_row(store, pair_id):
    return store.table("pairs").set_index("pair_id").loc[pair_id]


def test_a_repeat_is_a_new_pair_of_the_same_generations_swapped(arena, store):
    save_settings(store, repeat_rate=1.0)
    original = arena.next_pair()  # no annotator named: never a repeat
    generations_before = len(store.table("generations"))
    receipt, repeat = arena.vote_and_next(original.pair_id, "left", "ann")
    assert repeat.pair_id != original.pair_id
    assert (repeat.prompt, repeat.left, repeat.right) == (original.prompt, original.right, original.left)
    assert (repeat.left_generation_id, repeat.right_generation_id) == \
        (original.right_generation_id, original.left_generation_id)
    row = pair_row(store, repeat.pair_id)
    assert (row.chosen_by, row.repeat_of, row.source) == ("repeat", original.pair_id, "arena")
    assert (row.left_generation_id, row.right_generation_id) == \
        (original.right_generation_id, original.left_generation_id)
    assert len(store.table("generations")) == generations_before  # no text is stored twice
    second = arena.vote(repeat.pair_id, "right", "ann")  # an ordinary vote; the reveal names the swapped sources
    assert (second.left_policy, second.right_policy) == (receipt.right_policy, receipt.left_policy)
    votes = store.votes().set_index("pair_id")
    assert votes.loc[repeat.pair_id, "repeat_of"] == original.pair_id
    assert votes.loc[repeat.pair_id, "left_text"] == votes.loc[original.pair_id, "right_text"]


def test_a_repeat_is_only_offered_to_the_annotator_who_voted(arena, store):
    save_settings(store, repeat_rate=1.0)
    shown = arena.next_pair()
    arena.vote(shown.pair_id, "left", "ann")
    for who in ("bob", None):
        assert pair_row(store, arena.next_pair(who).pair_id).chosen_by == "random"
    assert pair_row(store, arena.next_pair("ann").pair_id).repeat_of == shown.pair_id


def test_rate_zero_never_repeats_and_rate_one_always_does_while_a_candidate_is_left(arena, store):
    voted = []
    for _ in range(3):
        shown = arena.next_pair()
        arena.vote(shown.pair_id, "tie", "ann")
        voted.append(shown.pair_id)
    save_settings(store, repeat_rate=0.0)
    assert {pair_row(store, arena.next_pair("ann").pair_id).chosen_by for _ in range(5)} == {"random"}
    save_settings(store, repeat_rate=1.0)
    repeated = [pair_row(store, arena.next_pair("ann").pair_id).repeat_of for _ in range(4)]
    assert sorted(repeated[:3]) == sorted(voted)  # each voted pair once: a repeat is never repeated again
    assert pd.isna(repeated[3])  # none left: a fresh pair


def test_a_retracted_vote_is_never_repeated(arena, store):
    save_settings(store, repeat_rate=1.0)
    shown = arena.next_pair()
    receipt = arena.vote(shown.pair_id, "left", "ann")
    arena.undo(receipt.comparison_id, "ann")
    assert pair_row(store, arena.next_pair("ann").pair_id).chosen_by == "random"
    assert store.repeat_candidates("ann").empty


def test_a_repeat_never_comes_straight_back(store, tiny_loaded):
    arena = Arena(store, Generator(tiny_loaded), LIBRARY, sampling=SamplingSettings(max_new_tokens=8), queue_size=0,
                  seed=0)  # the default gap: not one of the annotator's 3 latest votes
    save_settings(store, repeat_rate=1.0)
    first = arena.next_pair()
    arena.vote(first.pair_id, "left", "ann")
    for _ in range(2):
        _, shown = arena.vote_and_next(arena.next_pair().pair_id, "right", "ann")
        assert pair_row(store, shown.pair_id).chosen_by == "random"
    _, shown = arena.vote_and_next(arena.next_pair().pair_id, "right", "ann")  # a 4th vote: the 1st may come back
    assert pair_row(store, shown.pair_id).repeat_of == first.pair_id


def test_only_library_pairs_shown_in_the_arena_are_repeated(arena, store):
    save_settings(store, repeat_rate=1.0)
    typed = arena.custom_pair("Top 5 songs my grandmother sang")  # a person's own request would give it away
    arena.vote(typed.pair_id, "left", "ann")
    assert pair_row(store, arena.next_pair("ann").pair_id).chosen_by == "random"


def test_only_pairs_the_queue_could_serve_now_are_repeated(arena, store, tiny_loaded):
    save_settings(store, repeat_rate=1.0)
    other_library = Arena(store, Generator(tiny_loaded), [Prompt("Top 5 moons", source="library", split="train")],
                          sampling=SamplingSettings(max_new_tokens=8), queue_size=0, seed=0)
    old_challenger = Arena(store, Generator(tiny_loaded), LIBRARY, challenger=Policy("retired-challenger"),
                           sampling=SamplingSettings(max_new_tokens=8), queue_size=0, seed=0)
    for source in (other_library, old_challenger):
        shown = source.next_pair()
        source.vote(shown.pair_id, "left", "ann")
    assert len(store.repeat_candidates("ann")) == 2  # both are standing votes on arena pairs ...
    assert pair_row(store, arena.next_pair("ann").pair_id).chosen_by == "random"  # ... neither fits this arena


def test_a_repeat_rebuilds_the_shown_generations_from_the_vote():
    prompt, base = LIBRARY[0], Policy("base")
    vote = pd.Series({"pair_id": "p-1", "prompt": prompt.text, "left_text": "1. A", "left_policy": "base",
                      "left_generation_id": "g-left", "right_text": GOOD_LIST, "right_policy": "base",
                      "right_generation_id": "g-right"})
    repeat = swapped_repeat(vote, prompt, {"base": base})
    assert (repeat.repeat_of, repeat.chosen_by, repeat.predicted_p_left) == ("p-1", "repeat", None)
    assert (repeat.left.generation_id, repeat.left.text, repeat.left.policy) == ("g-right", GOOD_LIST, base)
    assert (repeat.left.well_formed, repeat.left.n_items, repeat.right.well_formed, repeat.right.n_items) == \
        (True, 5, False, 1)
    assert repeat.right.generation_id == "g-left" and repeat.pair_id != "p-1" and repeat.prompt == prompt


def voted_twice(store, first: str, again: str, adapter: str | None = None) -> None:
    """A library pair (the base against `adapter`) voted `first`, then its swapped repeat voted `again`."""
    def gen(text, adapter):
        return Generation(prompt=LIBRARY[0], text=text, policy=Policy("tiny", adapter), well_formed=True, n_items=5)
    original = Pair(prompt=LIBRARY[0], left=gen("A", None), right=gen("B", adapter))
    store.record_pair(original)
    store.record_vote(original.pair_id, first, "ann")
    repeat = Pair(prompt=LIBRARY[0], left=original.right, right=original.left, chosen_by="repeat",
                  repeat_of=original.pair_id)
    store.record_pair(repeat)
    store.record_vote(repeat.pair_id, again, "ann")


def test_a_repeat_does_not_count_twice_head_to_head(store):
    """votes_between feeds Next round's gate and the Demo page's win rate: a repeat is the same judgement again."""
    voted_twice(store, "right", "left", "runs/ppo-1/adapter")
    between = store.votes_between("tiny", "tiny+ppo-1")
    assert list(between.choice) == ["right"] and list(between.right_policy) == ["tiny+ppo-1"]


def test_an_export_counts_a_repeats_vote_once_as_a_repeat(store):
    """The export's "left out" line: a tie cast on a repeat is a repeat, not one more tie."""
    from core.store.preferences import preference_pairs

    voted_twice(store, "tie", "tie")
    pairs, left_out = preference_pairs(store.votes())
    assert pairs.empty and left_out == {"ties": 1, "both_bad": 0, "repeats": 1}
