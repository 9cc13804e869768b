"""Bulk import of votes: the rows are built outside the write lock and merged in one short transaction.

    python -m core import-votes FILE      (core/store/preferences.py reads and checks the file, then calls this)

Turning a large file into rows takes minutes (1M votes: ~5 min on 2 cores, bench/import_memory.py), and the store's
write lock is what every vote in the arena waits for. Holding it for the whole import would stall a live arena
that long, so the import goes in three steps:
1. stage: each chunk of IMPORT_CHUNK_ROWS votes becomes rows of prompts, generations, pairs and comparisons,
   bulk-inserted into a private staging DuckDB file beside the database (the store's tables without their keys;
   nobody else opens it, so no lock is taken). Then each staged vote's identity key is computed there. A bad
   row raises during this step, before the database is touched.
2. merge, under the write lock, in one transaction: the staged votes identical to no stored vote (the same key:
   prompt, both lists, choice and annotator; and the same created_at, unless the file gave none) are copied with
   one INSERT ... SELECT per table from the attached staging file. All or nothing, as before.
3. the staging folder is deleted, whatever happened; one left by an import that was killed (its name carries the
   pid) is deleted by the next import.
Only step 2 holds the lock: seconds where the whole import takes minutes (bench/import_memory.py --probe measures
how long a concurrent writer waits).
"""
from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd

from core.records import InputError, Pair, new_id, utc_now
from core.store.lock import file_problem
from core.store.schema import SCHEMA, generation_row

# What makes two votes the same vote, for re-imports: JSON keeps the fields apart whatever characters they hold.
VOTE_KEY = "md5_number(to_json([prompt, left_text, right_text, choice, annotator]))"
IMPORT_CHUNK_ROWS = 20_000  # votes per bulk insert: all an import holds in Python at a time
# The store's tables without their keys: staging builds no index (a million votes' keys take ~220 MB); the merge
# checks every key when it inserts into the real tables.
STAGING_SCHEMA = "\n".join(line for line in SCHEMA.replace(" PRIMARY KEY", "").splitlines()
                           if not line.startswith("INSERT"))  # and no meta row
# the pairs' columns in the order `stage_chunk` writes them
PAIR_COLUMNS = ("pair_id, prompt_id, left_generation_id, right_generation_id, source, created_at, chosen_by, "
                "predicted_p_left, repeat_of, round")

Vote = tuple[Pair, str, str, datetime | None]  # (pair, choice, annotator, created_at: None means now)


def import_votes(store, votes: Iterable[Vote], check_annotator) -> tuple[int, int]:
    """Stage `votes` beside the store's file, then merge the new ones under the write lock (module docstring).
    Returns (imported, skipped)."""
    folder = staging_folder(store.path)
    try:
        staging = folder / "staging.duckdb"
        staged = stage(staging, votes, check_annotator)
        if not staged:
            return 0, 0
        with store.connect(write=True) as con:
            imported = merge(con, staging, staged)
        return imported, staged - imported
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def staging_folder(db_path: Path) -> Path:
    """A fresh hidden folder beside the database (same disk: a full disk says so before the lock is taken), named
    after this process; the folders of killed imports are deleted first."""
    prefix = f".{db_path.name}.import-"
    for old in db_path.parent.glob(f"{prefix}*"):
        pid = old.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    try:
        return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=db_path.parent))
    except OSError as err:
        raise InputError(file_problem(err, db_path) or f"cannot stage the import beside {db_path}: {err}") from err


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


# ---- 1. stage ------------------------------------------------------------------------------------------------------
def stage(staging: Path, votes: Iterable[Vote], check_annotator) -> int:
    """Every vote as rows in the staging file, then the table `incoming` (pair_id, created_at, timed, key); returns
    how many votes were staged."""
    votes: Iterator[Vote] = iter(votes)
    now, staged = utc_now(), 0
    try:
        con = duckdb.connect(str(staging))
    except duckdb.Error as err:
        raise InputError(file_problem(err, staging) or f"cannot create {staging}: {err}") from err
    try:
        con.execute("SET memory_limit = '256MB'")  # rows spill to the staging file; no index is built here
        con.execute(STAGING_SCHEMA)
        con.execute("CREATE TABLE vote_times (pair_id VARCHAR, timed BOOLEAN)")
        while chunk := [(pair, choice, check_annotator(annotator), created_at) for pair, choice, annotator,
                        created_at in itertools.islice(votes, IMPORT_CHUNK_ROWS)]:
            stage_chunk(con, chunk, now)
            staged += len(chunk)
        # DISTINCT ON: a prompt staged by two chunks is two rows here (no keys), so the view repeats its votes
        con.execute(f"""CREATE TABLE incoming AS SELECT DISTINCT ON (v.pair_id) v.pair_id, v.created_at, t.timed,
                        {VOTE_KEY} AS key FROM votes v JOIN vote_times t USING (pair_id)""")
    except duckdb.Error as err:
        raise InputError(file_problem(err, staging) or f"could not stage the import: {err}") from err
    finally:
        con.close()
    return staged


def stage_chunk(con, chunk: list[Vote], now: datetime) -> None:
    """One bulk insert per table (DuckDB scans the frames directly: 100k votes take seconds, row by row minutes)."""
    prompts, generations, pairs, comparisons, times = [], [], [], [], []
    for pair, choice, annotator, created_at in chunk:
        p = pair.prompt
        prompts.append((p.prompt_id, p.text, p.source, p.library_id, p.category, p.split, now))
        generations += [generation_row(g) for g in (pair.left, pair.right)]
        pairs.append((pair.pair_id, p.prompt_id, pair.left.generation_id, pair.right.generation_id, pair.source,
                      created_at or now, "import", None, None, None))  # no round: collected outside the arena
        comparisons.append((new_id(), pair.pair_id, choice, None, annotator, None, created_at or now))
        times.append((pair.pair_id, created_at is not None))
    frames = {"prompts": pd.DataFrame(prompts).drop_duplicates(0), "generations": pd.DataFrame(generations),
              "pairs": pd.DataFrame(pairs), "comparisons": pd.DataFrame(comparisons),
              "vote_times": pd.DataFrame(times)}
    for table, frame in frames.items():
        columns = f"({PAIR_COLUMNS})" if table == "pairs" else ""
        con.from_df(frame).query("chunk", f"INSERT INTO {table} {columns} SELECT * FROM chunk")


# ---- 2. merge ------------------------------------------------------------------------------------------------------
def merge_memory_mb(votes: int) -> int:
    """DuckDB's memory limit for a merge of `votes`: what spills (the joins, the rows on their way in) stays within
    it; the keys' indexes, which grow with the votes (~220 MB a million), are what it must leave room for. 1M votes:
    600 MB, a peak RSS of ~850 MB in all (bench/import_memory.py) where no limit let it reach ~1.1 GB."""
    return int(300 + 300 * max(votes, 1_000_000) / 1_000_000)


def merge(con, staging: Path, staged: int) -> int:
    """Inside the caller's write transaction: copy the staged votes that match no stored one; returns how many."""
    quoted = str(staging).replace("'", "''")
    con.execute(f"SET memory_limit = '{merge_memory_mb(staged)}MB'")
    con.execute(f"ATTACH '{quoted}' AS staged (READ_ONLY)")
    con.execute(f"""CREATE TEMP TABLE fresh AS SELECT i.pair_id FROM staged.incoming i
                    ANTI JOIN (SELECT {VOTE_KEY} AS key, created_at FROM votes) s
                    ON s.key = i.key AND (NOT i.timed OR s.created_at = i.created_at)""")
    fresh_pairs = "(SELECT * FROM staged.pairs SEMI JOIN fresh USING (pair_id))"
    con.execute(f"""INSERT OR IGNORE INTO prompts BY NAME SELECT DISTINCT ON (prompt_id) * FROM staged.prompts
                    WHERE prompt_id IN (SELECT prompt_id FROM {fresh_pairs})""")  # a prompt staged twice is kept once
    con.execute(f"""INSERT INTO generations BY NAME SELECT * FROM staged.generations
                    WHERE generation_id IN (SELECT left_generation_id FROM {fresh_pairs}
                                            UNION ALL SELECT right_generation_id FROM {fresh_pairs})""")
    con.execute(f"INSERT INTO pairs BY NAME SELECT * FROM {fresh_pairs}")
    con.execute("INSERT INTO comparisons BY NAME SELECT * FROM staged.comparisons SEMI JOIN fresh USING (pair_id)")
    (imported,) = con.execute("SELECT count(*) FROM fresh").fetchone()
    return imported
