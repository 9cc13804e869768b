"""Taking turns on one DuckDB file across processes (arena, dashboard, training, the CLI).

DuckDB lets one process hold the file read-write and refuses every other; it has no queue. So the store wraps each
short transaction in an advisory lock on a sidecar file (`<db>.lock`: exclusive for writers, shared for readers)
and a `<db>.gate` that lets a waiting writer in ahead of new readers: the dashboard polling every few seconds can
never starve the arena's votes. A process outside the store that holds DuckDB's own lock (a DuckDB shell) is
waited for with bounded retries.
"""
from __future__ import annotations

import fcntl
import time
from contextlib import contextmanager
from pathlib import Path

import duckdb

from core.records import StoreBusy


@contextmanager
def file_lock(path: Path, write: bool, deadline: float):
    """Readers share the file; a writer has it alone. Back-to-back readers cannot starve a writer: a writer
    holds the gate while it waits, and a reader must pass the gate (shared, released at once) before reading."""
    with open(f"{path}.gate", "a") as gate, open(f"{path}.lock", "a") as lock:
        _acquire(gate, fcntl.LOCK_EX if write else fcntl.LOCK_SH, deadline, path)
        try:
            _acquire(lock, fcntl.LOCK_EX if write else fcntl.LOCK_SH, deadline, path)
        finally:
            if not write:
                fcntl.flock(gate, fcntl.LOCK_UN)
        yield


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
        except duckdb.IOException as err:
            if "lock" not in str(err).lower() or time.monotonic() > deadline:
                raise StoreBusy(f"could not open {path}: {err}") from err
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
