"""Votes in and out as files: import checks every row first (all or nothing), export is TRL's preference format."""
from __future__ import annotations

import errno
import json
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from core.records import Generation, InputError, Pair, Policy, Prompt
from core.store import imports
from core.store.database import StoreError
from core.store.preferences import export_votes, import_votes

REPO = Path(__file__).resolve().parent.parent
FRUITS_A = "1. Mango\n2. Cherry\n3. Peach\n4. Fig\n5. Plum"
FRUITS_B = "Here are some fruits:\n1. Apple\n2. Pear\n3. Kiwi"
RIVERS_A = "1. Nile\n2. Amazon\n3. Yangtze\n4. Mississippi\n5. Danube"
RIVERS_B = "1. Thames\n2. Seine\n3. Rhine\n4. Volga\n5. Ganges"
CITIES_A = "1. Tokyo\n2. Paris\n3. Rome\n4. Lima\n5. Cairo"
CITIES_B = "1. Oslo\n2. Kyoto\n3. Porto\n4. Quito\n5. Hanoi"
ROWS = [
    {"prompt": "Top 5 fruits", "response_a": FRUITS_A, "response_b": FRUITS_B, "choice": "a",
     "annotator": "carol", "created_at": "2024-05-01T12:30:00+02:00"},
    {"prompt": "Top 5 rivers", "response_a": RIVERS_A, "response_b": RIVERS_B, "choice": "b"},
    {"prompt": "Top 5 cities", "response_a": CITIES_A, "response_b": CITIES_B, "choice": "tie"},
]
STORED_TABLES = ("prompts", "generations", "pairs", "comparisons")


def write_jsonl(path: Path, rows: list) -> Path:
    """Rows are dicts (dumped as JSON) or raw strings (written as they are: bad JSON, blank lines)."""
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def assert_nothing_stored(store) -> None:
    for table in STORED_TABLES:
        assert store.table(table).empty, f"{table} holds rows after a rejected import"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def make_pair(prompt_text: str, left_text: str, right_text: str) -> Pair:
    prompt = Prompt(text=prompt_text)
    policy = Policy(base_model="models/tiny")
    left, right = (Generation(prompt=prompt, text=t, policy=policy, well_formed=True, n_items=5)
                   for t in (left_text, right_text))
    return Pair(prompt=prompt, left=left, right=right)


# ---- import ------------------------------------------------------------------------------------------------------
def test_import_stores_each_row_as_a_pair_and_a_vote(store, tmp_path):
    assert import_votes(store, write_jsonl(tmp_path / "votes.jsonl", ROWS)) == 3

    votes = store.votes().set_index("prompt")
    assert votes.loc["Top 5 fruits"].choice == "left"
    assert votes.loc["Top 5 rivers"].choice == "right"
    assert votes.loc["Top 5 cities"].choice == "tie"
    assert (votes.loc["Top 5 fruits"].left_text, votes.loc["Top 5 fruits"].right_text) == (FRUITS_A, FRUITS_B)
    assert votes.loc["Top 5 fruits"].annotator == "carol"
    assert votes.loc["Top 5 rivers"].annotator == "import"
    assert set(votes.source) == {"import"}
    assert votes.strength.isna().all()

    # +02:00 is stored as naive UTC, on both the pair and the vote.
    stamp = datetime(2024, 5, 1, 10, 30)
    assert votes.loc["Top 5 fruits"].created_at == stamp
    pairs = store.table("pairs").set_index("pair_id")
    assert pairs.loc[votes.loc["Top 5 fruits"].pair_id].created_at == stamp
    assert store.table("comparisons").created_at.dt.tz is None

    gens = store.table("generations").set_index("text")
    assert set(gens.policy) == {"imported"}
    assert bool(gens.loc[FRUITS_A].well_formed) and gens.loc[FRUITS_A].n_items == 5
    assert not gens.loc[FRUITS_B].well_formed and gens.loc[FRUITS_B].n_items == 3


def test_import_accepts_parquet(store, tmp_path):
    path = tmp_path / "votes.parquet"
    pd.DataFrame([{k: row.get(k) for k in ROWS[0]} for row in ROWS[:1]] * 2).to_parquet(path, index=False)
    assert import_votes(store, path) == 2
    assert list(store.votes().annotator) == ["carol", "carol"]


def test_import_accepts_parquet_with_optional_fields_left_empty(store, tmp_path):
    # A Parquet column can only say "absent" with a null. pandas reads those back as NaN, which the row checks
    # take for a (non-text) annotator and an unparseable time, so such a file is rejected on its second row.
    path = tmp_path / "votes.parquet"
    pd.DataFrame([{k: row.get(k) for k in ROWS[0]} for row in ROWS]).to_parquet(path, index=False)
    assert import_votes(store, path) == 3
    assert sorted(store.votes().annotator) == ["carol", "import", "import"]


@pytest.mark.parametrize("rows,message", [
    ([ROWS[0], '{"prompt": "Top 5 pets", "response_a": '], r"^line 2: not valid JSON"),
    ([ROWS[0], ROWS[1], {k: v for k, v in ROWS[2].items() if k != "response_b"}],
     r"^line 3: 'response_b' is missing or empty\.$"),
    ([{**ROWS[0], "choice": "maybe"}], r"^line 1: choice must be one of a, b, tie, both_bad, not 'maybe'\.$"),
    ([{**ROWS[0], "choice": "left"}], r"^line 1: choice must be one of"),
    ([ROWS[0], {**ROWS[1], "prompt": "   "}], r"^line 2: 'prompt' is missing or empty\.$"),
    ([{**ROWS[0], "score": 0.9}], r"^line 1: unknown field\(s\) \['score'\]; allowed are prompt, response_a"),
    ([ROWS[0], {**ROWS[1], "created_at": "next tuesday"}],
     r"^line 2: created_at must be an ISO 8601 time like 2026-11-21T10:30:00Z\.$"),
    ([ROWS[0], "[1, 2]"], r"^line 2: expected a JSON object, got list\.$"),
    ([{**ROWS[0], "annotator": 7}], r"^line 1: 'annotator' must be text\.$"),
    ([{**ROWS[0], "response_a": "x" * 20_001}], r"^line 1: 'response_a' is over 20000 characters\.$"),
], ids=["bad-json", "missing-response-b", "choice-maybe", "choice-left", "empty-prompt", "unknown-field",
        "bad-created-at", "not-an-object", "annotator-number", "too-long"])
def test_malformed_file_is_rejected_with_its_line_and_nothing_imported(store, tmp_path, rows, message):
    with pytest.raises(InputError, match=message):
        import_votes(store, write_jsonl(tmp_path / "votes.jsonl", rows))
    assert_nothing_stored(store)


def test_numeric_created_at_is_rejected_not_read_as_nanoseconds(store, tmp_path):
    # 1714560000 looks like Unix seconds (2024-05-01); pd.Timestamp reads a bare number as nanoseconds since 1970.
    # It is not ISO 8601, so the row must be refused rather than stored as 1970-01-01 00:00:01.7.
    with pytest.raises(InputError, match=r"^line 1: created_at"):
        import_votes(store, write_jsonl(tmp_path / "votes.jsonl", [{**ROWS[0], "created_at": 1714560000}]))
    assert_nothing_stored(store)


def test_blank_lines_do_not_shift_line_numbers(store, tmp_path):
    path = write_jsonl(tmp_path / "votes.jsonl", [ROWS[0], "", {**ROWS[1], "choice": "maybe"}])
    with pytest.raises(InputError, match=r"^line 3: choice"):
        import_votes(store, path)
    assert_nothing_stored(store)


def test_blank_lines_are_skipped_in_a_good_file(store, tmp_path):
    assert import_votes(store, write_jsonl(tmp_path / "votes.jsonl", ["", ROWS[0], "   ", ROWS[1], ""])) == 2


@pytest.mark.parametrize("name,content,message", [
    ("missing.jsonl", None, "does not exist"),
    ("votes.csv", "prompt,response_a,response_b,choice\n", r"votes\.csv: use a \.jsonl or \.parquet file"),
    ("empty.jsonl", "", "holds no rows"),
    ("blank.jsonl", "\n\n  \n", "holds no rows"),
])
def test_unusable_file_is_rejected(store, tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=message):
        import_votes(store, path)
    assert_nothing_stored(store)


def jsonl_bytes(*rows, **changed) -> bytes:
    """Rows as JSONL, a bytes row as it is; no rows: ROWS[0] with the `changed` fields."""
    rows = rows or ({**ROWS[0], **changed},)
    return b"".join((row if isinstance(row, bytes) else json.dumps(row).encode()) + b"\n" for row in rows)


UNREADABLE = {  # id: (suffix, file content, the one line that must come back)
    "latin-1": (".jsonl", jsonl_bytes(ROWS[0], b'{"prompt": "Top 5 caf\xe9s"}'), r"^line 2: not UTF-8 text \(byte"),
    "list-prompt": (".jsonl", jsonl_bytes(prompt=["Top 5"]), r"^line 1: 'prompt' must be text, not a list\.$"),
    "list-choice": (".jsonl", jsonl_bytes(choice=["a"]), r"^line 1: choice must be one of .* not \['a'\]\.$"),
    "dict-response": (".jsonl", jsonl_bytes(response_b={"a": 1}), "^line 1: 'response_b' must be text, not an object"),
    "year-0": (".jsonl", jsonl_bytes(created_at="0000-01-01T00:00:00Z"), "^line 1: created_at '0000-01-01T00:00:00Z'"),
    "year-10000": (".jsonl", jsonl_bytes(created_at="10000-01-01"), "^line 1: created_at '10000-01-01' is out"),
    "1999-in-utc": (".jsonl", jsonl_bytes(created_at="2000-01-01T00:30+01:00"), r"00:30\+01:00' is out of range"),
    "surrogate": (".jsonl", jsonl_bytes(prompt="\ud800"), r"^line 1: 'prompt' holds a lone surrogate"),
    "nul-annotator": (".jsonl", jsonl_bytes(annotator="carol\u0000"), "^line 1: annotator contains control"),
    "parquet-list": (".parquet", pd.DataFrame([{**ROWS[0], "prompt": ["a"]}]).to_parquet(), "^line 1: 'prompt' must"),
    "parquet-corrupt": (".parquet", b"PAR1 not really Parquet PAR1", r"^votes\.parquet: not a readable Parquet file"),
}


@pytest.mark.parametrize("suffix,content,message", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_unreadable_bytes_or_cells_are_rejected_in_one_line(store, tmp_path, suffix, content, message):
    path = tmp_path / f"votes{suffix}"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as refused:
        import_votes(store, path)
    assert "\n" not in str(refused.value)
    assert_nothing_stored(store)


def test_store_import_skips_votes_stored_before_and_is_all_or_nothing_across_chunks(store, monkeypatch):
    monkeypatch.setattr(imports, "IMPORT_CHUNK_ROWS", 2)  # the repeats below land in different chunks

    def votes(created_at):  # new pair ids every time, as when a file is read again
        return [(make_pair(f"Top 5 things {i % 3}", "1. a", "1. b"), "left", "carol", created_at) for i in range(5)]

    assert store.import_votes(votes(datetime(2024, 5, 1))) == (5, 0)  # rows 0 and 3, 1 and 4 repeat: all kept
    assert store.import_votes(votes(datetime(2024, 5, 1))) == (0, 5)
    assert store.import_votes(votes(None)) == (0, 5)  # a row without a time matches a stored vote of any time
    assert store.import_votes(votes(datetime(2024, 5, 2))) == (5, 0)  # another time is another vote
    assert (len(store.table("comparisons")), len(store.table("pairs")), len(store.table("prompts"))) == (10, 10, 3)

    def failing_after_three_chunks():
        yield from votes(datetime(2024, 5, 3))
        raise InputError("line 6: the file changed while it was read")

    with pytest.raises(InputError, match="^line 6"):
        store.import_votes(failing_after_three_chunks())
    assert len(store.table("comparisons")) == 10 and len(store.table("generations")) == 20


@pytest.mark.parametrize("full", [OSError(errno.ENOSPC, "No space left on device"),
                                  duckdb.IOException('IO Error: Could not write "x.wal": No space left on device')])
def test_full_disk_is_reported_not_hidden_by_the_failed_rollback(store, full):
    with pytest.raises(InputError, match=r"^the disk holding .*test\.duckdb is full \(No space left on device\): "
                                         "free some space, then try again$"), store.connect(write=True) as con:
        con.commit()  # ends the transaction, as a failed COMMIT does, so the ROLLBACK that follows fails too
        raise full


def test_every_store_write_refuses_a_bad_annotator_name(store):
    pair = make_pair("Top 5 things", "1. a", "1. b")
    store.record_pair(pair)
    vote = store.record_vote(pair.pair_id, "left", annotator=" demo:root ")
    writes = (lambda name: store.record_vote(pair.pair_id, "left", name), lambda name: store.retract_vote(vote, name),
              lambda name: store.review_vote(vote, "noise", name),
              lambda name: store.record_rating(pair.left.generation_id, 3, name),
              lambda name: store.record_demonstration(pair.prompt, FRUITS_A, name),
              lambda name: store.import_votes([(make_pair("Top 5 more", "1. a", "1. b"), "tie", name, None)]))
    for name, message in ((["alice"], "must be a name of 1 to 64 characters, not list"), (None, "must be a name"),
                          ("  ", "is empty"), ("x" * 65, "is 65 characters long"), ("a\x00b", "contains control")):
        for write in writes:
            with pytest.raises(StoreError, match=f"^annotator {message}"):
                write(name)
    assert list(store.table("comparisons").annotator) == ["demo:root"]  # stored stripped
    assert all(store.table(name).empty for name in ("retractions", "reviews", "ratings", "demonstrations"))


# ---- export ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_export_is_trl_prompt_chosen_rejected(store, tmp_path, suffix):
    import_votes(store, write_jsonl(tmp_path / "votes.jsonl", ROWS))
    out = tmp_path / "out" / f"prefs{suffix}"
    summary = export_votes(store, out)

    assert (summary.exported, summary.ties, summary.both_bad, summary.with_margin) == (2, 1, 0, False)
    assert "wrote 2 preference pairs" in str(summary) and "1 ties" in str(summary)
    frame = pd.read_parquet(out) if suffix == ".parquet" else pd.DataFrame(read_jsonl(out))
    assert list(frame.columns) == ["prompt", "chosen", "rejected"]
    rows = {row.prompt: (row.chosen, row.rejected) for row in frame.itertuples()}
    assert rows == {"Top 5 fruits": (FRUITS_A, FRUITS_B),  # choice a: response_a chosen
                    "Top 5 rivers": (RIVERS_B, RIVERS_A)}  # choice b: response_b chosen


def test_export_adds_margin_from_strength(store, tmp_path):
    pairs = [make_pair(f"Top 5 things {i}", f"left {i}", f"right {i}") for i in range(4)]
    for pair in pairs:
        store.record_pair(pair)
    store.record_vote(pairs[0].pair_id, "left", annotator="alice", strength=3)
    store.record_vote(pairs[1].pair_id, "right", annotator="alice", strength=None)
    store.record_vote(pairs[2].pair_id, "right", annotator="alice", strength=1)
    store.record_vote(pairs[3].pair_id, "both_bad", annotator="alice", strength=2)

    out = tmp_path / "prefs.jsonl"
    summary = export_votes(store, out)
    assert (summary.exported, summary.ties, summary.both_bad, summary.with_margin) == (3, 0, 1, True)
    rows = {row["prompt"]: row for row in read_jsonl(out)}
    assert all(list(row) == ["prompt", "chosen", "rejected", "margin"] for row in rows.values())
    assert rows["Top 5 things 0"]["margin"] == 1.0
    assert (rows["Top 5 things 0"]["chosen"], rows["Top 5 things 0"]["rejected"]) == ("left 0", "right 0")
    assert rows["Top 5 things 1"]["margin"] == 0.0
    assert (rows["Top 5 things 1"]["chosen"], rows["Top 5 things 1"]["rejected"]) == ("right 1", "left 1")
    assert rows["Top 5 things 2"]["margin"] == pytest.approx(1 / 3)
    assert pd.read_parquet(export_votes(store, tmp_path / "prefs.parquet").path).margin.dtype == "float64"


def test_retracted_votes_are_not_exported(store, tmp_path):
    kept, undone, undone_tie = (make_pair(f"Top 5 things {i}", f"left {i}", f"right {i}") for i in range(3))
    for pair in (kept, undone, undone_tie):
        store.record_pair(pair)
    store.record_vote(kept.pair_id, "right", annotator="alice")
    store.retract_vote(store.record_vote(undone.pair_id, "left", annotator="alice", strength=2), annotator="alice")
    store.retract_vote(store.record_vote(undone_tie.pair_id, "tie", annotator="alice"), annotator="alice")

    out = tmp_path / "prefs.jsonl"
    summary = export_votes(store, out)
    assert (summary.exported, summary.ties, summary.with_margin) == (1, 0, False)
    assert read_jsonl(out) == [{"prompt": "Top 5 things 0", "chosen": "right 0", "rejected": "left 0"}]


def test_export_refuses_other_formats(store, tmp_path):
    with pytest.raises(InputError, match=r"prefs\.csv: export to a \.jsonl or \.parquet file"):
        export_votes(store, tmp_path / "prefs.csv")
    assert not (tmp_path / "prefs.csv").exists()


def test_export_on_a_full_disk_says_so_and_leaves_no_half_file(store, tmp_path, monkeypatch):
    import_votes(store, write_jsonl(tmp_path / "votes.jsonl", ROWS))

    def half_written_then_full(frame, path, **kwargs):
        Path(path).write_text('{"prompt": "Top 5')
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_json", half_written_then_full)
    with pytest.raises(InputError, match=r"No space left on device; free some space or export to another disk\.$"):
        export_votes(store, tmp_path / "out" / "prefs.jsonl")
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("suffix,builder", [(".jsonl", "json"), (".parquet", "parquet")])
def test_exported_file_loads_in_datasets_as_string_columns(store, tmp_path, suffix, builder):
    from datasets import Value, load_dataset

    import_votes(store, write_jsonl(tmp_path / "votes.jsonl", [{**ROWS[0], "prompt": "Top 5 fruits / berries"},
                                                               *ROWS[1:]]))
    out = export_votes(store, tmp_path / f"prefs{suffix}").path
    dataset = load_dataset(builder, data_files=str(out), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert dataset.column_names == ["prompt", "chosen", "rejected"]
    # pandas 3 writes Parquet text as large_string; both are plain Python str to TRL's tokenising map.
    assert all(isinstance(dataset.features[name], Value) and dataset.features[name].dtype in ("string", "large_string")
               for name in dataset.column_names)
    assert all(isinstance(value, str) for row in dataset for value in row.values())
    assert len(dataset) == 2
    by_prompt = {row["prompt"]: row for row in dataset}
    assert by_prompt["Top 5 fruits / berries"]["chosen"] == FRUITS_A  # text survives the file unchanged
