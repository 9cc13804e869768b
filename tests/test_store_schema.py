"""The store's schema as files meet it: a file from before a column was added gets it in place."""
from __future__ import annotations

from core.store.database import Store
from tests.test_store import make_pair


def test_a_file_from_before_the_choice_columns_gets_them_and_keeps_its_pairs(tmp_path):
    import duckdb

    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as con:  # the pairs table as version 1 first shipped it
        con.execute("""CREATE TABLE pairs (pair_id VARCHAR PRIMARY KEY, prompt_id VARCHAR NOT NULL,
                       left_generation_id VARCHAR NOT NULL, right_generation_id VARCHAR NOT NULL,
                       source VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL)""")
        con.execute("INSERT INTO pairs VALUES ('old', 'p', 'l', 'r', 'arena', now())")
    store = Store(path)
    pairs = store.table("pairs")
    assert {"chosen_by", "predicted_p_left", "repeat_of"} <= set(pairs.columns)
    assert list(pairs.pair_id) == ["old"] and pairs.chosen_by.isna().all()
    pair = make_pair()
    store.record_pair(pair)
    stored = store.table("pairs").set_index("pair_id")
    assert set(stored.index) == {"old", pair.pair_id} and stored.chosen_by[pair.pair_id] == "random"
