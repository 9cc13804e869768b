"""The DuckDB store: every SQL statement of the project lives here.

DuckDB lets one process hold a read-write connection and locks every other process out, and three processes use
this file (arena, dashboard, training). So no connection lives long: each call opens the file, does its work in one
transaction and closes it (a vote: p50 40 ms on 2 cores, bench/store_writes.py). Calls take turns across
processes through lock.py (writers first), so a writer waits its turn instead of failing on DuckDB's own lock.
Training never reads the live file: it snapshots what it needs to Parquet when it starts.

Tables are append-only. Undo writes a retraction; nothing is ever updated or deleted. A review of a vote (the
dashboard's Disagreements page) is a row too: "noise" keeps the vote out of exports and training until a later
"confirm"; "relabel" retracts the vote and casts the corrected one in the same transaction.
"""
from __future__ import annotations

import os
import time
import unicodedata
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import pandas as pd

from core.paths import DEFAULT_DB
from core.records import (
    CHOICES,
    InputError,
    Pair,
    Prompt,
    new_id,
    utc_now,
)
from core.store import imports
from core.store.lock import prepare_path, transaction
from core.store.schema import GENERATION_COLUMNS, SCHEMA, generation_row

MAX_ANNOTATOR_CHARS = 64
# a vote that counts once in a head-to-head: standing, not flagged as noise, not a self-consistency repeat (its
# original already counts: one judgement, once)
COUNTED_ONCE = "NOT retracted AND review IS DISTINCT FROM 'noise' AND repeat_of IS NULL"


class StoreError(InputError):
    """A request the store refuses (unknown pair, vote already cast…); the message says what to change."""


def check_annotator(name: object) -> str:
    """The annotator name every write stores: text, stripped, 1-64 characters, no control characters."""
    if not isinstance(name, str):
        raise StoreError(f"annotator must be a name of 1 to {MAX_ANNOTATOR_CHARS} characters, "
                         f"not {type(name).__name__}")
    name = name.strip()
    if not 1 <= len(name) <= MAX_ANNOTATOR_CHARS:
        raise StoreError(f"annotator is {f'{len(name)} characters long' if name else 'empty'}: pass a name of 1 to "
                         f"{MAX_ANNOTATOR_CHARS} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in name):  # NUL, newlines, escapes, lone surrogates
        raise StoreError("annotator contains control characters (NUL, newline, escape…): pass a plain name")
    return name


def database_path(path: str | Path | None = None) -> Path:
    """The database file: `path`, else $RLHF_DB, else data/rlhf.duckdb."""
    return Path(path or os.environ.get("RLHF_DB") or DEFAULT_DB)


class Store:
    """Short-lived, lock-serialised connections to one DuckDB file."""

    def __init__(self, path: str | Path | None = None, timeout_s: float = 30.0):
        self.path = database_path(path)
        self.timeout_s = timeout_s
        prepare_path(self.path)
        with self.connect(write=True) as con:
            con.execute(SCHEMA)

    @classmethod
    def existing(cls, path: str | Path | None = None, timeout_s: float = 30.0) -> Store:
        """The store of a database that must exist already: for whatever only reads feedback (stats, the
        leaderboard, export, training), where a mistyped --db would otherwise start an empty database and report
        "no votes" instead of the typo."""
        resolved = database_path(path)
        if not resolved.is_file():
            raise StoreError(f"{resolved}: no such database; pass --db PATH of an existing DuckDB file (or set "
                             "$RLHF_DB), or vote in the arena first.")
        return cls(resolved, timeout_s)

    def connect(self, write: bool = False):
        """One transaction on a fresh connection, under the cross-process lock (writers first, see lock.py); a full
        disk or an unwritable folder comes out as an InputError saying so."""
        return transaction(self.path, write, time.monotonic() + self.timeout_s)

    # ---- writes -------------------------------------------------------------------------------------------------
    def record_pair(self, pair: Pair) -> str:
        """The prompt (once), both generations (a repeat's are stored already) and the pair, atomically."""
        with self.connect(write=True) as con:
            _insert_pair(con, pair, pair.created_at, generations=pair.repeat_of is None)
        return pair.pair_id

    def set_setting(self, key: str, value: object) -> None:
        """A live setting in `meta`, as text: the one row that changes (the arena's pair choice, chooser.py)."""
        with self.connect(write=True) as con:
            con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, str(value)])

    def record_vote(self, pair_id: str, choice: str, annotator: str, strength: int | None = None,
                    decision_ms: int | None = None) -> str:
        """A comparison for a shown pair. Refuses unknown pairs and pairs that already hold a standing vote."""
        if choice not in CHOICES:
            raise StoreError(f"choice must be one of {', '.join(CHOICES)}, not {choice!r}")
        if strength is not None and strength not in (1, 2, 3):
            raise StoreError(f"strength must be 1, 2 or 3 (or empty), not {strength!r}")
        annotator, comparison_id = check_annotator(annotator), new_id()
        with self.connect(write=True) as con:
            if not con.execute("SELECT 1 FROM pairs WHERE pair_id = ?", [pair_id]).fetchone():
                raise StoreError(f"unknown pair {pair_id!r}: ask for a new pair first")
            if _standing_vote(con, pair_id):
                raise StoreError(f"pair {pair_id!r} already has a vote: undo it first to change it")
            con.execute("INSERT INTO comparisons VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [comparison_id, pair_id, choice, strength, annotator, decision_ms, utc_now()])
        return comparison_id

    def retract_vote(self, comparison_id: str, annotator: str) -> str:
        """Undo: mark one's own vote retracted. Returns its pair id, which can then be voted on again.
        Someone else's vote is refused: a reviewer changes it with review_vote, which keeps a record of who did."""
        annotator = check_annotator(annotator)
        with self.connect(write=True) as con:
            row = con.execute("SELECT pair_id, annotator FROM comparisons WHERE comparison_id = ?",
                              [comparison_id]).fetchone()
            if not row:
                raise StoreError(f"unknown vote {comparison_id!r}")
            if row[1] != annotator:
                raise StoreError(f"vote {comparison_id!r} was cast by another annotator, not {annotator!r}: undo only "
                                 "your own votes (a reviewer relabels a vote on the dashboard's Disagreements page)")
            if con.execute("SELECT 1 FROM retractions WHERE comparison_id = ?", [comparison_id]).fetchone():
                raise StoreError("that vote was already undone")
            con.execute("INSERT INTO retractions VALUES (?, ?, ?)", [comparison_id, annotator, utc_now()])
        return row[0]

    def review_vote(self, comparison_id: str, action: str, annotator: str, choice: str | None = None) -> str:
        """Confirm a vote, flag it as noise, or relabel it with `choice`; returns the review id."""
        if action not in ("confirm", "noise", "relabel"):
            raise StoreError(f"a review is confirm, noise or relabel, not {action!r}")
        if action == "relabel" and choice not in CHOICES:
            raise StoreError(f"relabel to one of {', '.join(CHOICES)}, not {choice!r}")
        annotator, review_id, new_comparison_id = check_annotator(annotator), new_id(), None
        with self.connect(write=True) as con:
            row = con.execute("""SELECT c.pair_id, c.choice, x.comparison_id IS NOT NULL FROM comparisons c
                                 LEFT JOIN retractions x USING (comparison_id) WHERE comparison_id = ?""",
                              [comparison_id]).fetchone()
            if not row:
                raise StoreError(f"unknown vote {comparison_id!r}")
            if row[2]:
                raise StoreError("that vote was undone or relabelled already; review the vote that replaced it")
            if action == "relabel":
                if choice == row[1]:
                    raise StoreError(f"the vote already says {choice!r}: confirm it instead")
                # the corrected vote keeps who cast it and when (the reviewer is in `reviews`); its old strength
                # described the old choice, so it has none
                new_comparison_id = new_id()
                con.execute("INSERT INTO retractions VALUES (?, ?, ?)", [comparison_id, annotator, utc_now()])
                con.execute("""INSERT INTO comparisons SELECT ?, pair_id, ?, NULL, annotator, decision_ms, created_at
                               FROM comparisons WHERE comparison_id = ?""", [new_comparison_id, choice, comparison_id])
            con.execute("INSERT INTO reviews VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [review_id, comparison_id, action, choice, new_comparison_id, annotator, utc_now()])
        return review_id

    def record_rating(self, generation_id: str, stars: int, annotator: str) -> str:
        if stars not in (1, 2, 3, 4, 5):
            raise StoreError(f"a rating is 1 to 5 stars, not {stars!r}")
        annotator, rating_id = check_annotator(annotator), new_id()
        with self.connect(write=True) as con:
            if not con.execute("SELECT 1 FROM generations WHERE generation_id = ?", [generation_id]).fetchone():
                raise StoreError(f"unknown generation {generation_id!r}")
            con.execute("INSERT INTO ratings VALUES (?, ?, ?, ?, ?)",
                        [rating_id, generation_id, stars, annotator, utc_now()])
        return rating_id

    def record_demonstration(self, prompt: Prompt, text: str, annotator: str, source: str = "arena_edit",
                             edited_from_generation_id: str | None = None) -> str:
        annotator, demonstration_id = check_annotator(annotator), new_id()
        with self.connect(write=True) as con:
            _insert_prompt(con, prompt)
            con.execute("INSERT INTO demonstrations VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [demonstration_id, prompt.prompt_id, text, edited_from_generation_id, annotator, source,
                         utc_now()])
        return demonstration_id

    def import_votes(self, votes: Iterable[tuple[Pair, str, str, datetime | None]]) -> tuple[int, int]:
        """(pair, choice, annotator, created_at) rows, all or nothing, built outside the write lock and merged in
        one short transaction (core/store/imports.py). A vote identical to one stored before (same prompt, texts,
        choice, annotator and created_at; None means now and matches any time) is skipped: importing a file twice
        adds nothing. Returns (imported, skipped)."""
        return imports.import_votes(self, votes, check_annotator)

    # ---- reads --------------------------------------------------------------------------------------------------
    def votes(self, include_retracted: bool = False, include_noise: bool = False) -> pd.DataFrame:
        """Every standing vote with its prompt and both texts, oldest first; votes flagged as noise are left out
        (they never reach an export or a training snapshot) unless asked for."""
        where = ["true"] + ([] if include_retracted else ["NOT retracted"]) + \
            ([] if include_noise else ["review IS DISTINCT FROM 'noise'"])
        with self.connect() as con:
            return con.execute(f"SELECT * FROM votes WHERE {' AND '.join(where)} ORDER BY created_at").df()

    def demonstrations(self) -> pd.DataFrame:
        """Every demonstration written in the arena with its prompt and the text it was edited from (if any),
        oldest first."""
        with self.connect() as con:
            return con.execute("""SELECT d.*, p.text AS prompt, p.split, p.library_id, g.text AS edited_from_text
                                  FROM demonstrations d JOIN prompts p USING (prompt_id)
                                  LEFT JOIN generations g ON g.generation_id = d.edited_from_generation_id
                                  ORDER BY d.created_at""").df()

    def ratings(self) -> pd.DataFrame:
        """Each annotator's latest rating of each list: generation_id, stars, annotator, created_at, the list
        (text) and its request (prompt_id, prompt, split)."""
        with self.connect() as con:
            return con.execute("""SELECT r.generation_id, arg_max(r.stars, r.created_at) AS stars, r.annotator,
                                         max(r.created_at) AS created_at, any_value(g.text) AS text,
                                         any_value(p.prompt_id) AS prompt_id, any_value(p.text) AS prompt,
                                         any_value(p.split) AS split
                                  FROM ratings r JOIN generations g USING (generation_id)
                                  JOIN prompts p ON p.prompt_id = g.prompt_id
                                  GROUP BY r.generation_id, r.annotator ORDER BY created_at""").df()

    def pair_policies(self, pair_id: str) -> tuple[str, str]:
        """Which policy produced the left and the right list (revealed after the vote)."""
        with self.connect() as con:
            row = con.execute("""SELECT l.policy, r.policy FROM pairs p
                                 JOIN generations l ON l.generation_id = p.left_generation_id
                                 JOIN generations r ON r.generation_id = p.right_generation_id
                                 WHERE p.pair_id = ?""", [pair_id]).fetchone()
        if not row:
            raise StoreError(f"unknown pair {pair_id!r}")
        return row

    def counts(self, annotator: str | None = None) -> dict[str, int]:
        """Standing votes, ratings and demonstrations, for one annotator or everyone."""
        who, args = (" AND annotator = ?", [annotator]) if annotator else ("", [])
        with self.connect() as con:
            votes = con.execute(f"SELECT count(*) FROM votes WHERE NOT retracted{who}", args).fetchone()[0]
            ratings = con.execute(f"SELECT count(*) FROM ratings WHERE true{who}", args).fetchone()[0]
            demos = con.execute(f"SELECT count(*) FROM demonstrations WHERE true{who}", args).fetchone()[0]
        return {"votes": votes, "ratings": ratings, "demonstrations": demos}

    def overview(self) -> dict[str, pd.DataFrame]:
        """What the Data page plots, aggregated inside DuckDB in one read transaction (100k votes: see
        bench/dashboard_queries.py), so the page never pulls every row and never holds the file for long."""
        # from the comparisons table itself: the votes view's joins (prompts, both generations) are not needed here
        standing = "FROM comparisons c ANTI JOIN retractions USING (comparison_id)"
        queries = {
            "totals": f"""SELECT count(*) AS votes, count(DISTINCT annotator) AS annotators,
                          (SELECT count(*) FROM votes WHERE review = 'noise' AND NOT retracted) AS flagged_noise,
                          (SELECT count(*) FROM retractions WHERE comparison_id NOT IN
                           (SELECT comparison_id FROM reviews WHERE action = 'relabel')) AS retracted,
                          (SELECT count(*) FROM ratings) AS ratings,
                          (SELECT count(*) FROM demonstrations) AS demonstrations {standing}""",
            "per_day": f"SELECT date_trunc('day', created_at) AS day, choice, count(*) AS votes {standing} "
                       "GROUP BY ALL ORDER BY day",
            "choices": f"SELECT choice, count(*) AS votes {standing} GROUP BY ALL ORDER BY choice",
            # position bias needs sides that were shuffled: arena and demo pairs, not imported a/b files
            "shuffled_sides": f"""SELECT count(*) FILTER (choice = 'left') AS "left",
                                  count(*) FILTER (choice = 'right') AS "right" {standing}
                                  JOIN pairs p USING (pair_id) WHERE p.source IN ('arena', 'demo')""",
            "decision_s": f"""SELECT least(decision_ms // 1000, 60) AS seconds, count(*) AS votes {standing}
                              WHERE decision_ms IS NOT NULL GROUP BY ALL ORDER BY seconds""",
            "ratings": "SELECT stars, count(*) AS ratings FROM ratings GROUP BY ALL ORDER BY stars",
            "demonstrations": """SELECT annotator, source, count(*) AS demonstrations FROM demonstrations
                                 GROUP BY ALL ORDER BY demonstrations DESC""",
            "annotators": f"""SELECT annotator, count(*) AS votes, count(*) FILTER (choice = 'left') AS "left",
                              count(*) FILTER (choice = 'right') AS "right", count(*) FILTER (choice = 'tie') AS tie,
                              count(*) FILTER (choice = 'both_bad') AS both_bad,
                              median(decision_ms) / 1000 AS median_decision_s, max(created_at) AS last_vote
                              {standing} GROUP BY ALL ORDER BY votes DESC""",
            # per round of collection (core/train/rounds.py), oldest first; pairing: every pair of policies it served
            "rounds": f"""SELECT p.round, string_agg(DISTINCT least(l.policy, r.policy) || ' vs ' ||
                          greatest(l.policy, r.policy), '; ') AS pairing, count(*) AS votes,
                          count(*) FILTER (choice = 'left') AS "left", count(*) FILTER (choice = 'right') AS "right",
                          count(*) FILTER (choice = 'tie') AS tie, count(*) FILTER (choice = 'both_bad') AS both_bad
                          {standing} JOIN pairs p USING (pair_id) JOIN generations l ON l.generation_id =
                          p.left_generation_id JOIN generations r ON r.generation_id = p.right_generation_id
                          GROUP BY p.round ORDER BY min(c.created_at)""",
        }
        with self.connect() as con:
            return {name: con.execute(sql).df() for name, sql in queries.items()}

    def browse_votes(self, choices: list[str] | None = None, annotator: str | None = None, search: str = "",
                     limit: int = 200) -> pd.DataFrame:
        """The newest standing votes matching the filters (`search` matches the request, case-insensitive)."""
        if choices is not None and not choices:
            return self.browse_votes(limit=0)  # no choice ticked: nothing matches (the columns still come back)
        where, args = ["true"], []
        if choices:
            where.append(f"c.choice IN ({', '.join('?' * len(choices))})")
            args += list(choices)
        if annotator:
            where.append("c.annotator = ?")
            args.append(annotator)
        if search:
            where.append("contains(lower(pr.text), lower(?))")
            args.append(search)
        # pick the rows on the narrow tables first, then join the texts for those rows only
        with self.connect() as con:
            return con.execute(f"""
                WITH chosen AS (SELECT c.comparison_id FROM comparisons c ANTI JOIN retractions USING (comparison_id)
                                JOIN pairs p USING (pair_id) JOIN prompts pr ON pr.prompt_id = p.prompt_id
                                WHERE {' AND '.join(where)} ORDER BY c.created_at DESC LIMIT ?)
                SELECT created_at, annotator, choice, strength, review, prompt, left_text, right_text, left_policy,
                       right_policy, decision_ms, comparison_id
                FROM votes SEMI JOIN chosen USING (comparison_id) ORDER BY created_at DESC""",
                               args + [int(limit)]).df()

    def setting(self, key: str) -> str | None:
        with self.connect() as con:
            row = con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def repeat_candidates(self, annotator: str) -> pd.DataFrame:
        """The standing votes of `annotator` that a self-consistency repeat may show again, newest first (the votes
        view's columns): on pairs the arena showed, neither a repeat nor repeated yet."""
        with self.connect() as con:
            return con.execute("""SELECT * FROM votes WHERE annotator = ? AND NOT retracted AND source = 'arena'
                                  AND repeat_of IS NULL AND pair_id NOT IN (SELECT repeat_of FROM pairs
                                  WHERE repeat_of IS NOT NULL) ORDER BY created_at DESC""",
                               [check_annotator(annotator)]).df()

    def votes_between(self, first: str, second: str) -> pd.DataFrame:
        """Standing votes on pairs of exactly these two policies (either side): left_policy, right_policy, choice;
        a self-consistency repeat is left out (its original counts: one judgement, once)."""
        with self.connect() as con:
            return con.execute(f"""SELECT left_policy, right_policy, choice FROM votes WHERE {COUNTED_ONCE}
                                   AND ((left_policy = ? AND right_policy = ?)
                                        OR (left_policy = ? AND right_policy = ?))""",
                               [first, second, second, first]).df()

    def votes_with(self, policy: str) -> pd.DataFrame:
        """Standing votes on pairs with `policy` on either side, as votes_between counts them: left_policy,
        right_policy, choice, and the request's library category (None for a typed request)."""
        with self.connect() as con:
            return con.execute(f"""SELECT left_policy, right_policy, choice, category FROM votes
                                   JOIN (SELECT prompt_id, category FROM prompts) USING (prompt_id)
                                   WHERE {COUNTED_ONCE} AND (left_policy = ? OR right_policy = ?)""",
                               [policy, policy]).df()

    def voted_policies(self) -> list[str]:
        """Every policy name on either side of a standing vote, sorted."""
        with self.connect() as con:
            return [row[0] for row in con.execute("""SELECT left_policy FROM votes WHERE NOT retracted UNION
                                                     SELECT right_policy FROM votes WHERE NOT retracted
                                                     ORDER BY 1""").fetchall()]

    def table(self, name: str) -> pd.DataFrame:
        """A whole table, for tests and the dashboard."""
        if name not in ("prompts", "generations", "pairs", "comparisons", "retractions", "ratings", "demonstrations",
                        "reviews"):
            raise StoreError(f"no table {name!r}")
        with self.connect() as con:
            return con.execute(f"SELECT * FROM {name}").df()


def _standing_vote(con, pair_id: str) -> bool:
    return con.execute("""SELECT 1 FROM comparisons c LEFT JOIN retractions x USING (comparison_id)
                          WHERE c.pair_id = ? AND x.comparison_id IS NULL""", [pair_id]).fetchone() is not None


def _insert_pair(con, pair: Pair, created_at, generations: bool = True) -> None:
    """The prompt (once), both generations (unless stored already: a repeat) and the pair."""
    _insert_prompt(con, pair.prompt)
    for gen in (pair.left, pair.right) if generations else ():
        con.execute(f"INSERT INTO generations ({GENERATION_COLUMNS}) VALUES ({', '.join('?' * 18)})",
                    generation_row(gen))
    con.execute("INSERT INTO pairs (pair_id, prompt_id, left_generation_id, right_generation_id, source, created_at, "
                "chosen_by, predicted_p_left, repeat_of, round) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [pair.pair_id, pair.prompt.prompt_id, pair.left.generation_id, pair.right.generation_id,
                 pair.source, created_at, pair.chosen_by, pair.predicted_p_left, pair.repeat_of, pair.round])


def _insert_prompt(con, prompt: Prompt) -> None:
    con.execute("INSERT OR IGNORE INTO prompts VALUES (?, ?, ?, ?, ?, ?, ?)",
                [prompt.prompt_id, prompt.text, prompt.source, prompt.library_id, prompt.category, prompt.split,
                 utc_now()])
