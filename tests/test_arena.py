"""The arena's logic without a browser: validation, votes with reveal, undo, ratings, demonstrations, the queue."""
import threading
import time

import pytest

from core.collect.arena import (
    MAX_REQUEST_CHARS,
    Arena,
    clean_text,
    parse_choice,
    parse_stars,
)
from core.collect.generate import GenerationCancelled, Generator
from core.collect.library import load_prompts
from core.collect.pair_queue import PairQueue
from core.model import load
from core.records import InputError, Prompt, SamplingSettings

LIBRARY = [Prompt(f"Top 5 things #{i}", source="library", split="train") for i in range(5)]
GOOD_LIST = "1. Apples - crisp\n2. Pears - sweet\n3. Plums - juicy\n4. Figs - rich\n5. Kiwis - tart"


@pytest.fixture
def arena(tiny_model_dir, store):
    arena = Arena(store, Generator(load(tiny_model_dir, device="cpu")), LIBRARY,
                  sampling=SamplingSettings(max_new_tokens=8), queue_size=0, seed=0)
    yield arena
    arena.stop()


@pytest.mark.parametrize("text, message", [
    ("", "empty"), ("   \n ", "empty"), ("x" * (MAX_REQUEST_CHARS + 1), "characters long"),
    ("Top 5\x00 fruits", "control characters"), ("Top 5\x1b[31m fruits", "control characters"),
    ("\u200b\u200b\u200b", "empty"), ("\ufeff", "empty"), (" \u200b\u2060 \ufeff\u200d ", "empty"),
    (None, "must be text, not NoneType"), (5, "must be text, not int"), (["Top 5 fruits"], "must be text"),
])
def test_bad_requests_are_refused_with_a_reason(text, message):
    with pytest.raises(InputError, match=message):
        clean_text(text, "request", MAX_REQUEST_CHARS)


def test_request_is_stripped_and_may_hold_tabs():
    assert clean_text("  Top 5\tfruits \n", "request", MAX_REQUEST_CHARS) == "Top 5\tfruits"


def test_format_characters_are_dropped_from_a_request():
    assert clean_text("\ufeffTop 5\u200b fruits\u2060", "request", MAX_REQUEST_CHARS) == "Top 5 fruits"


@pytest.mark.parametrize("choice, strength, expected", [
    ("left", None, ("left", None)), ("right", 3, ("right", 3)), ("left", 1, ("left", 1)), ("tie", None, ("tie", None)),
    ("both_bad", None, ("both_bad", None)),
])
def test_parse_choice(choice, strength, expected):
    assert parse_choice(choice, strength) == expected


@pytest.mark.parametrize("choice, strength", [
    ("up", None), ("left", 4), ("left", "much"), ("tie", 2),
    ("left", 0), ("left", 2.7), ("left", 2.0), ("left", True), ("right", False), ("left", "2"), ("left", ""),
])
def test_parse_choice_refuses(choice, strength):
    with pytest.raises(InputError):
        parse_choice(choice, strength)


def test_a_bad_strength_is_refused_with_the_levels_not_coerced():
    for strength in (0, 2.7, True):
        with pytest.raises(InputError, match=r"Strength is one of 1 \(slightly better\), 2 .* or None"):
            parse_choice("left", strength)


@pytest.mark.parametrize("stars, expected", [(1, 1), (5, 5), ("4", 4), (" 3 ", 3)])
def test_parse_stars(stars, expected):
    assert parse_stars(stars) == expected


@pytest.mark.parametrize("stars", [3.7, 4.0, True, False, 0, 6, "3.7", "great", None, "²"])
def test_parse_stars_refuses_anything_but_whole_stars(stars):
    with pytest.raises(InputError, match="1 to 5 whole stars"):
        parse_stars(stars)


def test_fractional_or_boolean_stars_store_nothing(arena, store):
    shown = arena.next_pair()
    for stars in (3.7, True):
        with pytest.raises(InputError, match="whole stars"):
            arena.rate(shown.left_generation_id, stars, "ann")
    assert store.table("ratings").empty


def test_a_typed_library_request_is_the_library_prompt(arena, store):
    held_out = load_prompts(split="eval")[0]
    # stray spaces, a doubled space and a zero-width space: still the library's held-out request
    typed = "  " + held_out.text.replace(" ", "  \u200b", 1) + " "
    shown = arena.custom_pair(typed)
    served = arena.custom_pair(LIBRARY[1].text)
    own = arena.custom_pair("Top 5 things nobody ships in a library")
    prompts = store.table("prompts").set_index("text")
    assert shown.prompt == held_out.text
    row = prompts.loc[held_out.text]
    assert (row.prompt_id, row.source, row.library_id, row.split) == \
        (held_out.prompt_id, "library", held_out.library_id, "eval")
    assert (prompts.loc[served.prompt].source, prompts.loc[served.prompt].split) == ("library", "train")
    assert prompts.loc[own.prompt].source == "custom" and prompts.loc[own.prompt].split not in ("train", "eval")


def test_bad_custom_request_writes_nothing(arena, store):
    with pytest.raises(InputError):
        arena.custom_pair("   ")
    assert store.table("pairs").empty and store.table("prompts").empty


def test_vote_is_stored_with_decision_time_and_reveals_sources(arena, store):
    shown = arena.next_pair()
    assert shown.prompt in {p.text for p in LIBRARY}
    time.sleep(0.05)
    receipt = arena.vote(shown.pair_id, "right", "ann", strength=2)
    row = store.votes().iloc[0]
    assert (row.pair_id, row.choice, row.strength, row.annotator) == (shown.pair_id, "right", 2, "ann")
    assert row.decision_ms >= 50
    assert (row.left_text, row.right_text) == (shown.left, shown.right)
    assert receipt.left_policy in receipt.message and "right is better" in receipt.message


def test_vote_and_next_stores_the_vote_and_shows_a_new_pair(arena, store):
    shown = arena.next_pair()
    receipt, following = arena.vote_and_next(shown.pair_id, "left", "ann")
    assert receipt.pair_id == shown.pair_id and following.pair_id != shown.pair_id
    assert list(store.votes().pair_id) == [shown.pair_id]
    assert set(store.table("pairs").pair_id) == {shown.pair_id, following.pair_id}


def test_double_vote_and_unknown_pair_are_refused(arena, store):
    shown = arena.next_pair()
    arena.vote(shown.pair_id, "tie", "ann")
    with pytest.raises(InputError, match="already has a vote"):
        arena.vote(shown.pair_id, "left", "ann")
    with pytest.raises(InputError, match="unknown pair"):
        arena.vote("no-such-pair", "left", "ann")
    assert len(store.table("comparisons")) == 1


def test_undo_retracts_and_reopens_the_pair(arena, store):
    shown = arena.next_pair()
    first = arena.vote(shown.pair_id, "left", "ann")
    assert arena.undo(first.comparison_id, "ann") == shown.pair_id
    arena.vote(shown.pair_id, "right", "ann")
    votes = store.votes(include_retracted=True)
    assert list(votes.choice) == ["left", "right"] and list(votes.retracted) == [True, False]
    assert arena.counts()["votes"] == 1


def test_rating_and_demonstration_link_to_the_shown_lists(arena, store):
    shown = arena.next_pair()
    arena.rate(shown.left_generation_id, "4", "ann")
    with pytest.raises(InputError):
        arena.rate(shown.left_generation_id, "great", "ann")
    arena.save_demonstration(shown.pair_id, "right", GOOD_LIST.replace("1. ", "1) "), "ann")
    demo = store.table("demonstrations").iloc[0]
    assert demo.edited_from_generation_id == shown.right_generation_id
    assert demo.text == GOOD_LIST  # stored in canonical "1. item" form
    assert store.table("ratings").iloc[0].stars == 4


def test_malformed_demonstration_is_refused_with_its_problems(arena, store):
    shown = arena.next_pair()
    with pytest.raises(InputError, match="has 2 items, expected 5"):
        arena.save_demonstration(shown.pair_id, None, "1. a\n2. b", "ann")
    assert store.table("demonstrations").empty


def test_sides_are_shuffled_between_base_and_challenger(tiny_model_dir, tiny_adapter_dir, store):
    generator = Generator(load(tiny_model_dir, device="cpu"))
    arena = Arena(store, generator, LIBRARY, challenger=generator.add_adapter(tiny_adapter_dir),
                  sampling=SamplingSettings(max_new_tokens=2), queue_size=0, seed=0)
    lefts = set()
    for _ in range(12):
        shown = arena.next_pair()
        lefts.add(arena.vote(shown.pair_id, "tie", "ann").left_policy)
    assert len(lefts) == 2  # each policy appeared on the left at least once


def test_warm_queue_serves_without_generating(arena, monkeypatch):
    arena.queue.size = 2
    arena.start()
    assert arena.queue.wait_until_full(timeout=60)
    generating_threads, real = [], arena.generator.generate
    monkeypatch.setattr(arena.generator, "generate",
                        lambda *a, **k: generating_threads.append(threading.current_thread().name) or real(*a, **k))
    started = time.perf_counter()
    arena.next_pair()
    assert time.perf_counter() - started < 1.0
    assert threading.current_thread().name not in generating_threads  # only the queue's thread refills


def test_foreground_preempts_background_generation():
    background_started, cancelled = threading.Event(), threading.Event()

    def slow_background(should_stop):
        background_started.set()
        while not should_stop():
            time.sleep(0.01)
        cancelled.set()
        raise GenerationCancelled()

    queue = PairQueue(slow_background, size=1).start()
    try:
        assert background_started.wait(5)
        started = time.perf_counter()
        assert queue.run_foreground(lambda: "mine") == "mine"
        assert time.perf_counter() - started < 1.0 and cancelled.is_set()
    finally:
        queue.stop()
