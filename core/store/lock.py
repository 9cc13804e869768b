"""Taking turns on one DuckDB file across processes (arena, dashboard, training, the CLI).

DuckDB lets one process hold the file read-write and refuses every other; it has no queue. So the store wraps each
short transaction in an advisory lock on a sidecar file (`<db>.lock`: exclusive for writers, shared for readers)
and a `<db>.gate` that lets a waiting writer in ahead of new readers: the dashboard polling every few seconds can
never starve the arena's votes. A process outside the store that holds DuckDB's own lock (a DuckDB shell) is
waited for with bounded retries. Each transaction gets a fresh connection (`transaction`); a folder that cannot be
written, or a full disk, is told apart from a busy file (file_problem), so the user reads what to fix.
"""
from __future__ import annotations

import errno
import fcntl
import time
from contextlib import contextmanager
from pathlib import Path

import duckdb

from core.records import InputError, StoreBusy


@contextmanager
def transaction(path: Path, write: bool, deadline: float):
    """One transaction on a fresh connection, under the cross-process lock; committed when the block ends."""
    with file_lock(path, write, deadline):
        con = open_duckdb(path, read_only=not write, deadline=deadline)
        try:
            con.begin()
            yield con
            con.commit()
            con.close()  # releases DuckDB's file lock before ours
        except BaseException as err:
            _abandon(con)
            if isinstance(err, (OSError, duckdb.Error)) and (problem := file_problem(err, path)):
                raise InputError(problem) from err
            raise


def _abandon(con) -> None:
    """Roll back and close, ignoring their failures: after a full disk or an invalidated database (or a COMMIT
    that failed and so rolled back already) ROLLBACK fails too, and its error must not hide the one that says why."""
    for step in (con.rollback, con.close):
        try:
            step()
        except duckdb.Error:
            pass


@contextmanager
def file_lock(path: Path, write: bool, deadline: float):
    """Readers share the file; a writer has it alone. Back-to-back readers cannot starve a writer: a writer
    holds the gate while it waits, and a reader must pass the gate (shared, released at once) before reading."""
    with _sidecar(path, "gate") as gate, _sidecar(path, "lock") as lock:
        _acquire(gate, fcntl.LOCK_EX if write else fcntl.LOCK_SH, deadline, path)
        try:
            _acquire(lock, fcntl.LOCK_EX if write else fcntl.LOCK_SH, deadline, path)
        finally:
            if not write:
                fcntl.flock(gate, fcntl.LOCK_UN)
        yield


def prepare_path(path: Path) -> None:
    """The database's folder, created when missing; a file there that is not a DuckDB database is refused (given a
    data file such as a .jsonl, DuckDB opens a database in memory instead, and whatever is written is lost)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file() and path.stat().st_size:
            with open(path, "rb") as f:
                if f.read(12)[8:] != b"DUCK":
                    raise InputError(f"{path} is not a DuckDB database: pass a DuckDB file, or a new path to start one")
    except OSError as err:
        raise InputError(file_problem(err, path) or f"cannot use {path}: {err}") from err


def _sidecar(path: Path, suffix: str):
    try:
        return open(f"{path}.{suffix}", "a")
    except OSError as err:
        raise InputError(file_problem(err, path) or f"cannot create {path}.{suffix}: {err}") from err


def _acquire(lock_file, mode: int, deadline: float, path: Path) -> None:
    delay = 0.002
    while True:
        try:
            fcntl.flock(lock_file, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise StoreBusy(f"{path} stayed locked by another process; try again, or stop the process "
                                "holding it (a DuckDB shell?)") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.005)  # short polls: a long sleeper loses its turn to newcomers


def open_duckdb(path: Path, read_only: bool, deadline: float):
    """Connect, retrying while a process outside the store (which ignores our lock file) holds DuckDB's lock."""
    delay = 0.01
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as err:
            if not isinstance(err, duckdb.IOException) or "lock" not in str(err).lower():
                raise InputError(file_problem(err, path) or f"could not open {path} as a DuckDB database ({err}); "
                                 "pass a DuckDB file, or a new path to start one") from err
            if time.monotonic() > deadline:
                raise StoreBusy(f"could not open {path}: {err}") from err
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def file_problem(err: BaseException, path: Path) -> str | None:
    """What to tell the user when the disk or the folder refuses the database a write; None for other errors."""
    code, text = getattr(err, "errno", None), str(err)
    if code == errno.ENOSPC or "No space left on device" in text:
        return f"the disk holding {path} is full (No space left on device): free some space, then try again"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS) or "Permission denied" in text or "Read-only file" in text:
        return (f"cannot write to {path} or its folder (permission denied or a read-only file system): the store "
                f"writes the database and its .lock and .gate files there; make {path.parent} writable, or use a "
                "copy of the database in a folder you can write (--db or $RLHF_DB)")
    return None
