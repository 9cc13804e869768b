"""The DuckDB store: what each write stores and refuses, and several processes sharing one file."""
from __future__ import annotations

import multiprocessing
import queue
import time
import traceback
from contextlib import contextmanager

import pandas as pd
import pytest

from core.records import Generation, Pair, Policy, Prompt, SamplingSettings, StoreBusy
from core.store.database import Store, StoreError
from core.store.schema import SCHEMA_VERSION

TABLES = {"meta", "prompts", "generations", "pairs", "comparisons", "retractions", "ratings", "demonstrations",
          "reviews"}
BASE = Policy(base_model="models/SmolLM2-135M-Instruct")
TUNED = Policy(base_model="models/SmolLM2-135M-Instruct", adapter="runs/dpo-1/adapter")
LEFT_TEXT = "1. Roast turkey\n2. Mashed potatoes\n3. Stuffing\n4. Green beans\n5. Pumpkin pie"
RIGHT_TEXT = "Sure!\n1. Ham\n2. Gravy\n3. Carrots\n4. Peas\n5. Trifle"


def make_pair(prompt_text: str = "Top 5 dishes for a festive dinner", left_text: str = LEFT_TEXT,
              right_text: str = RIGHT_TEXT) -> Pair:
    prompt = Prompt(text=prompt_text, source="library", library_id="food-1", category="food", split="train")
    sampling = SamplingSettings(temperature=0.7, top_p=0.9, top_k=0, max_new_tokens=96)
    left = Generation(prompt=prompt, text=left_text, policy=BASE, well_formed=True, n_items=5,
                      system_prompt="You write top-5 lists.", sampling=sampling, seed=1, num_tokens=30,
                      finished=True, latency_ms=120.0)
    right = Generation(prompt=prompt, text=right_text, policy=TUNED, well_formed=False, n_items=5,
                       system_prompt="You write top-5 lists.", sampling=sampling, seed=2, num_tokens=33,
                       finished=True, latency_ms=120.0)
    return Pair(prompt=prompt, left=left, right=right)


def row_count(store: Store, table: str) -> int:
    return len(store.table(table))


# ---- schema and single-process writes ---------------------------------------------------------------------------
def test_new_file_gets_the_schema(tmp_path):
    path = tmp_path / "sub" / "new.duckdb"
    assert not path.exists()
    store = Store(path)
    assert path.exists()
    with store.connect() as con:
        tables = {name for (name,) in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'").fetchall()}
        views = {name for (name,) in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_type = 'VIEW'").fetchall()}
        version = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    assert tables == TABLES
    assert "votes" in views
    assert version == str(SCHEMA_VERSION)


def test_reopening_keeps_what_was_written(tmp_path):
    path = tmp_path / "db.duckdb"
    pair_id = Store(path).record_pair(make_pair())
    store = Store(path)
    assert list(store.table("pairs").pair_id) == [pair_id]
    with store.connect() as con:
        assert con.execute("SELECT count(*) FROM meta").fetchone()[0] == 1


def test_record_pair_stores_prompt_generations_and_pair(store):
    pair = make_pair()
    assert store.record_pair(pair) == pair.pair_id
    prompts, gens, pairs = store.table("prompts"), store.table("generations"), store.table("pairs")
    assert list(prompts.prompt_id) == [pair.prompt.prompt_id]
    assert prompts.iloc[0].text == pair.prompt.text and prompts.iloc[0].split == "train"
    assert set(gens.generation_id) == {pair.left.generation_id, pair.right.generation_id}
    right = gens.set_index("generation_id").loc[pair.right.generation_id]
    assert right.policy == "SmolLM2-135M-Instruct+dpo-1" and right.adapter == "runs/dpo-1/adapter"
    assert right.temperature == pytest.approx(0.7) and right.seed == 2 and not right.well_formed
    row = pairs.iloc[0]
    assert (row.left_generation_id, row.right_generation_id) == (pair.left.generation_id, pair.right.generation_id)
    assert row.source == "arena"


def test_vote_is_stored_with_choice_strength_and_decision_time(store):
    pair_id = store.record_pair(make_pair())
    comparison_id = store.record_vote(pair_id, "right", annotator="alice", strength=2, decision_ms=4321)
    row = store.table("comparisons").iloc[0]
    assert (row.comparison_id, row.pair_id, row.choice, row.strength, row.annotator, row.decision_ms) == (
        comparison_id, pair_id, "right", 2, "alice", 4321)

    votes = store.votes()
    assert len(votes) == 1
    vote = votes.iloc[0]
    assert vote.prompt == "Top 5 dishes for a festive dinner"
    assert vote.left_text == LEFT_TEXT and vote.right_text == RIGHT_TEXT
    assert (vote.left_policy, vote.right_policy) == ("SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct+dpo-1")
    assert vote.choice == "right" and vote.strength == 2 and not vote.retracted
    assert store.pair_policies(pair_id) == ("SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct+dpo-1")


def test_vote_without_strength_or_time_stores_nulls(store):
    pair_id = store.record_pair(make_pair())
    store.record_vote(pair_id, "tie", annotator="alice")
    row = store.table("comparisons").iloc[0]
    assert row.choice == "tie"
    assert row.isna()["strength"] and row.isna()["decision_ms"]


def test_second_vote_on_a_pair_is_refused(store):
    pair_id = store.record_pair(make_pair())
    store.record_vote(pair_id, "left", annotator="alice")
    with pytest.raises(StoreError, match="already has a vote"):
        store.record_vote(pair_id, "right", annotator="bob")
    assert list(store.table("comparisons").choice) == ["left"]


def test_vote_on_unknown_pair_is_refused(store):
    with pytest.raises(StoreError, match="unknown pair 'nope'"):
        store.record_vote("nope", "left", annotator="alice")
    assert row_count(store, "comparisons") == 0


@pytest.mark.parametrize("choice,strength,message", [
    ("a", None, "choice must be one of left, right, tie, both_bad"),
    ("LEFT", None, "choice must be one of"),
    ("", None, "choice must be one of"),
    ("left", 0, "strength must be 1, 2 or 3"),
    ("left", 4, "strength must be 1, 2 or 3"),
    ("left", "2", "strength must be 1, 2 or 3"),
])
def test_bad_choice_or_strength_is_refused_and_nothing_written(store, choice, strength, message):
    pair_id = store.record_pair(make_pair())
    with pytest.raises(StoreError, match=message):
        store.record_vote(pair_id, choice, annotator="alice", strength=strength)
    assert row_count(store, "comparisons") == 0
    store.record_vote(pair_id, "left", annotator="alice")  # the refusal left the pair open


def test_retract_hides_the_vote_keeps_the_row_and_reopens_the_pair(store):
    pair_id = store.record_pair(make_pair())
    comparison_id = store.record_vote(pair_id, "left", annotator="alice", strength=3)
    assert store.retract_vote(comparison_id, annotator="alice") == pair_id

    assert store.votes().empty
    with_retracted = store.votes(include_retracted=True)
    assert list(with_retracted.comparison_id) == [comparison_id]
    assert bool(with_retracted.iloc[0].retracted)
    assert list(store.table("comparisons").comparison_id) == [comparison_id]  # nothing deleted
    assert list(store.table("retractions").comparison_id) == [comparison_id]
    assert store.counts()["votes"] == 0

    second = store.record_vote(pair_id, "right", annotator="alice")
    assert list(store.votes().comparison_id) == [second]
    assert row_count(store, "comparisons") == 2


def test_retracting_twice_or_an_unknown_vote_is_refused(store):
    pair_id = store.record_pair(make_pair())
    comparison_id = store.record_vote(pair_id, "left", annotator="alice")
    store.retract_vote(comparison_id, annotator="alice")
    with pytest.raises(StoreError, match="already undone"):
        store.retract_vote(comparison_id, annotator="alice")
    with pytest.raises(StoreError, match="unknown vote"):
        store.retract_vote("no-such-vote", annotator="alice")
    assert row_count(store, "retractions") == 1


def test_undo_refuses_another_annotators_vote_but_a_reviewer_may_relabel_it(store):
    vote = store.record_vote(store.record_pair(make_pair()), "left", annotator="alice")
    with pytest.raises(StoreError, match=f"^vote '{vote}' was cast by another annotator, not 'bob': undo only"):
        store.retract_vote(vote, annotator="bob")
    assert row_count(store, "retractions") == 0
    store.review_vote(vote, "relabel", "dashboard", "right")  # a reviewer changes other people's votes on purpose
    assert list(store.votes()[["annotator", "choice"]].itertuples(index=False, name=None)) == [("alice", "right")]


def test_ratings_one_to_five_stars(store):
    pair = make_pair()
    store.record_pair(pair)
    for stars in (1, 2, 3, 4, 5):
        store.record_rating(pair.left.generation_id, stars, annotator="alice")
    for stars in (0, 6, -1):
        with pytest.raises(StoreError, match="1 to 5 stars"):
            store.record_rating(pair.left.generation_id, stars, annotator="alice")
    with pytest.raises(StoreError, match="unknown generation"):
        store.record_rating("no-such-generation", 3, annotator="alice")
    ratings = store.table("ratings")
    assert sorted(ratings.stars) == [1, 2, 3, 4, 5]
    assert set(ratings.generation_id) == {pair.left.generation_id}


def test_demonstration_records_what_it_was_edited_from(store):
    pair = make_pair()
    store.record_pair(pair)
    edited = LEFT_TEXT.replace("Stuffing", "Yorkshire puddings")
    store.record_demonstration(pair.prompt, edited, annotator="bob", edited_from_generation_id=pair.left.generation_id)
    fresh_prompt = Prompt(text="Top 5 board games for two")
    store.record_demonstration(fresh_prompt, "1. Patchwork\n2. Jaipur\n3. Hive\n4. Azul\n5. Lost Cities",
                               annotator="bob", source="written")

    demos = store.table("demonstrations").set_index("prompt_id")
    assert demos.loc[pair.prompt.prompt_id].text == edited
    assert demos.loc[pair.prompt.prompt_id].edited_from_generation_id == pair.left.generation_id
    assert demos.loc[pair.prompt.prompt_id].source == "arena_edit"
    assert pd.isna(demos.loc[fresh_prompt.prompt_id].edited_from_generation_id)
    assert demos.loc[fresh_prompt.prompt_id].source == "written"
    # The demonstration's prompt is recorded too, once.
    assert set(store.table("prompts").prompt_id) == {pair.prompt.prompt_id, fresh_prompt.prompt_id}


def test_counts_per_annotator(store):
    pairs = [make_pair(f"Top 5 things, take {i}") for i in range(3)]
    for pair in pairs:
        store.record_pair(pair)
    kept = store.record_vote(pairs[0].pair_id, "left", annotator="alice")
    undone = store.record_vote(pairs[1].pair_id, "right", annotator="alice")
    store.retract_vote(undone, annotator="alice")
    store.record_vote(pairs[2].pair_id, "tie", annotator="bob")
    store.record_rating(pairs[0].left.generation_id, 4, annotator="alice")
    store.record_demonstration(pairs[0].prompt, LEFT_TEXT, annotator="bob")
    store.record_demonstration(pairs[1].prompt, LEFT_TEXT, annotator="bob")

    assert kept
    assert store.counts("alice") == {"votes": 1, "ratings": 1, "demonstrations": 0}
    assert store.counts("bob") == {"votes": 1, "ratings": 0, "demonstrations": 2}
    assert store.counts("carol") == {"votes": 0, "ratings": 0, "demonstrations": 0}
    assert store.counts() == {"votes": 2, "ratings": 1, "demonstrations": 2}


def test_a_prompt_recorded_twice_is_stored_once(store):
    first = make_pair("Top 5 dishes for a festive dinner")
    second = make_pair("  Top 5 dishes for a festive dinner\n")  # same request, stray whitespace
    store.record_pair(first)
    store.record_pair(second)
    assert first.prompt.prompt_id == second.prompt.prompt_id
    prompts = store.table("prompts")
    assert list(prompts.prompt_id) == [first.prompt.prompt_id]
    assert list(store.table("pairs").prompt_id) == [first.prompt.prompt_id] * 2
    assert row_count(store, "generations") == 4


def test_unknown_table_is_refused(store):
    with pytest.raises(StoreError, match="no table"):
        store.table("meta; DROP TABLE pairs")


# ---- several processes on one file -------------------------------------------------------------------------------
# Children are started with "spawn" (a fresh interpreter, as the arena, dashboard and trainer are), so everything
# they run is a module-level function and every failure comes back to the parent as a formatted traceback.
WRITERS, READERS, PAIRS_PER_WRITER = 4, 2, 25
SPAWN = multiprocessing.get_context("spawn")


def _writer(path: str, writer: int, start, results) -> None:
    try:
        # A fair lock gives each write its turn in well under a second here; 20 s (not the default 30 s) only
        # bounds how long a starved writer keeps the test running.
        store = Store(path, timeout_s=20)
        start.wait(timeout=60)
        pair_ids = []
        for i in range(PAIRS_PER_WRITER):
            pair = make_pair(f"Top 5 things, writer {writer} item {i}")
            pair_ids.append(store.record_pair(pair))
            store.record_vote(pair.pair_id, ("left", "right", "tie", "both_bad")[i % 4], annotator=f"w{writer}",
                              strength=1 + i % 3, decision_ms=i)
        results.put(("writer", writer, pair_ids))
    except BaseException:
        results.put(("error", writer, traceback.format_exc()))


def _reader(path: str, reader: int, pause_s: float, start, stop, results) -> None:
    try:
        store = Store(path)
        start.wait(timeout=60)
        seen = []
        while not stop.is_set():
            votes = store.votes()
            assert votes.prompt.notna().all() and votes.left_text.notna().all()  # whole rows, never half a pair
            seen.append(store.counts()["votes"])
            time.sleep(pause_s)
        results.put(("reader", reader, seen))
    except BaseException:
        results.put(("error", reader, traceback.format_exc()))


def _hold_write_lock(path: str, seconds: float, held) -> None:
    with Store(path).connect(write=True):
        held.set()
        time.sleep(seconds)


@contextmanager
def write_lock_held_by_child(path: str, seconds: float):
    """Another process holds the store's write lock for `seconds`; the body runs while it does."""
    held = SPAWN.Event()
    holder = SPAWN.Process(target=_hold_write_lock, args=(path, seconds, held))
    holder.start()
    try:
        assert held.wait(timeout=30), "the child never took the lock"
        yield
    finally:
        holder.join(timeout=30)
    assert holder.exitcode == 0


def _drain(results, expected: int, timeout_s: float) -> list[tuple]:
    """Up to `expected` messages; stops early at the first error, so one failure does not wait out the others."""
    messages, deadline = [], time.monotonic() + timeout_s
    while len(messages) < expected:
        try:
            messages.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
        except queue.Empty:
            break
        if messages[-1][0] == "error":
            break
    return messages


@pytest.mark.parametrize("reader_pause_s", [0.0, 0.1], ids=["readers-back-to-back", "readers-polling"])
def test_concurrent_writers_and_readers_lose_nothing(tmp_path, reader_pause_s):
    # "polling" is a dashboard refreshing; "back-to-back" readers keep their shared locks overlapping, and the
    # writers must still get their turn ("a writer waits its turn instead of failing", core/store/database.py).
    path = str(tmp_path / "shared.duckdb")
    Store(path)  # schema first, so no child races to create the file
    start, stop, results = SPAWN.Barrier(WRITERS + READERS), SPAWN.Event(), SPAWN.Queue()
    writers = [SPAWN.Process(target=_writer, args=(path, w, start, results)) for w in range(WRITERS)]
    readers = [SPAWN.Process(target=_reader, args=(path, r, reader_pause_s, start, stop, results))
               for r in range(READERS)]
    for process in writers + readers:
        process.start()
    messages = []
    try:
        messages += _drain(results, WRITERS, timeout_s=60)  # writers report first: readers wait for `stop`
        stop.set()
        messages += _drain(results, WRITERS + READERS - len(messages), timeout_s=30)
    finally:
        stop.set()
        failed = any(kind == "error" for kind, *_ in messages)
        for process in writers + readers:
            process.join(timeout=5 if failed else 30)
            if process.is_alive():
                process.kill()

    errors = [text for kind, _, text in messages if kind == "error"]
    assert not errors, "\n\n".join(errors)
    assert [p.exitcode for p in writers + readers] == [0] * (WRITERS + READERS)
    reported = {who: ids for kind, who, ids in messages if kind == "writer"}
    assert sorted(reported) == list(range(WRITERS))
    assert all(len(ids) == PAIRS_PER_WRITER for ids in reported.values())

    store = Store(path)
    comparisons, pairs = store.table("comparisons"), store.table("pairs")
    assert len(comparisons) == WRITERS * PAIRS_PER_WRITER
    assert len(pairs) == WRITERS * PAIRS_PER_WRITER
    for ids in reported.values():
        for pair_id in ids:
            assert (pairs.pair_id == pair_id).sum() == 1
            assert (comparisons.pair_id == pair_id).sum() == 1
    assert store.counts() == {"votes": WRITERS * PAIRS_PER_WRITER, "ratings": 0, "demonstrations": 0}
    for w in range(WRITERS):
        assert store.counts(f"w{w}")["votes"] == PAIRS_PER_WRITER

    # Readers ran alongside the writers: they saw the count grow, never shrink, and saw it part-way.
    seen = [counts for kind, _, counts in messages if kind == "reader"]
    assert len(seen) == READERS
    for counts in seen:
        assert counts and counts == sorted(counts)
        assert max(counts) <= WRITERS * PAIRS_PER_WRITER
    assert any(0 < c < WRITERS * PAIRS_PER_WRITER for counts in seen for c in counts)


def test_writer_waits_for_a_lock_held_by_another_process(tmp_path):
    path = str(tmp_path / "db.duckdb")
    store = Store(path)
    pair_id = store.record_pair(make_pair())
    with write_lock_held_by_child(path, 0.5):
        began = time.monotonic()
        store.record_vote(pair_id, "left", annotator="alice")
        waited = time.monotonic() - began
    assert waited >= 0.4, f"the vote went through in {waited:.2f}s while another process held the lock"
    assert row_count(store, "comparisons") == 1


def test_writer_gives_up_with_store_busy_after_its_timeout(tmp_path):
    path = str(tmp_path / "db.duckdb")
    store = Store(path, timeout_s=0.2)  # built (schema written) before the lock is taken
    pair_id = store.record_pair(make_pair())
    with write_lock_held_by_child(path, 1.0):
        began = time.monotonic()
        with pytest.raises(StoreBusy, match="locked by another process"):
            store.record_vote(pair_id, "left", annotator="alice")
        gave_up_after = time.monotonic() - began
    assert 0.15 <= gave_up_after < 0.9
    assert row_count(store, "comparisons") == 0
    store.record_vote(pair_id, "left", annotator="alice")  # once the lock is free the same store works again
    assert row_count(store, "comparisons") == 1
