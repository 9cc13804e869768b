"""The staged import (core/store/imports.py): rows are built without the write lock, merged in one transaction,
and the staging folder never outlives the import."""
from datetime import datetime

import pytest

from core.records import InputError, StoreBusy
from core.store import imports
from core.store.database import Store
from tests.test_preferences import make_pair


def votes(n: int, created_at=datetime(2024, 5, 1)):
    return [(make_pair(f"Top 5 things {i}", "1. a\n2. b", "1. c"), "left", "carol", created_at) for i in range(n)]


def staging_left_behind(store: Store) -> list:
    return [p.name for p in store.path.parent.iterdir() if ".import-" in p.name]


def test_a_vote_cast_while_an_import_is_being_staged_does_not_wait_for_it(store, monkeypatch):
    monkeypatch.setattr(imports, "IMPORT_CHUNK_ROWS", 2)
    arena = Store(store.path, timeout_s=0.5)  # another writer (the arena); StoreBusy if the lock were held
    cast = []

    def file_read_slowly():
        for n, vote in enumerate(votes(5)):
            if n == 3:  # the first chunk is staged already
                arena.set_setting("arena.round", "r1")
                cast.append(arena.setting("arena.round"))
            yield vote

    assert store.import_votes(file_read_slowly()) == (5, 0)
    assert cast == ["r1"] and len(store.votes()) == 5
    assert staging_left_behind(store) == []


def test_the_merge_holds_the_write_lock_so_other_writers_wait_for_it_not_fail(store, monkeypatch):
    real_merge, during = imports.merge, []

    def merge_while_someone_writes(con, staging, staged):
        with pytest.raises(StoreBusy):  # the merge is one write transaction: a writer waits its turn
            Store(store.path, timeout_s=0.2).set_setting("x", "1")
        during.append(True)
        return real_merge(con, staging, staged)

    monkeypatch.setattr(imports, "merge", merge_while_someone_writes)
    assert store.import_votes(votes(3)) == (3, 0) and during == [True]


def test_a_failed_import_stores_nothing_and_leaves_no_staging_folder(store):
    def broken():
        yield from votes(3)
        raise InputError("line 4: not JSON")

    with pytest.raises(InputError, match="^line 4"):
        store.import_votes(broken())
    with pytest.raises(InputError, match="annotator is empty"):
        store.import_votes([(make_pair("Top 5 x", "1. a", "1. b"), "left", " ", None)])
    assert store.votes().empty and store.table("generations").empty and staging_left_behind(store) == []


def test_an_empty_import_touches_nothing(store):
    assert store.import_votes([]) == (0, 0) and staging_left_behind(store) == []


def test_merged_rows_are_whole_and_a_shared_prompt_is_stored_once(store):
    assert store.import_votes(votes(2) + votes(1, None)) == (3, 0)  # "Top 5 things 0" comes twice
    stored = store.votes()
    assert sorted(stored.prompt) == ["Top 5 things 0", "Top 5 things 0", "Top 5 things 1"]
    assert set(stored.left_text) == {"1. a\n2. b"} and set(stored.right_text) == {"1. c"}
    assert len(store.table("prompts")) == 2 and len(store.table("generations")) == 6
    assert set(store.table("pairs").chosen_by) == {"import"}
    assert store.import_votes(votes(2)) == (0, 2)  # a re-import adds nothing


def test_a_database_folder_whose_name_holds_a_quote_still_imports(tmp_path):
    folder = tmp_path / "it's here"
    store = Store(folder / "votes.duckdb")
    assert store.import_votes(votes(2)) == (2, 0) and len(store.votes()) == 2
