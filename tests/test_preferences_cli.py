"""Votes in and out as files through the real CLI (`python -m core import-votes | export-votes`, and the commands
that only read a database): exit 2 and one line for every bad input, nothing written."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from core.store.database import Store
from core.store.preferences import import_votes
from tests.test_preferences import REPO, ROWS, UNREADABLE, write_jsonl


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_cli_import_good_and_bad_file(tmp_path):
    db = str(tmp_path / "cli.duckdb")
    good = run_cli("import-votes", str(write_jsonl(tmp_path / "good.jsonl", ROWS)), "--db", db)
    assert good.returncode == 0, good.stderr
    assert "imported 3 votes" in good.stdout

    bad_rows = [ROWS[0], "", ROWS[1], {**ROWS[2], "choice": "maybe"}]
    bad = run_cli("import-votes", str(write_jsonl(tmp_path / "bad.jsonl", bad_rows)), "--db", db)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: line 4: choice must be one of"), bad.stderr
    assert "Traceback" not in bad.stderr

    from core.store.database import Store

    assert len(Store(db).table("comparisons")) == 3  # the bad file added nothing


def test_cli_import_twice_skips_every_vote(tmp_path):
    db, votes = str(tmp_path / "cli.duckdb"), str(write_jsonl(tmp_path / "votes.jsonl", ROWS))
    run_cli("import-votes", votes, "--db", db)
    again = run_cli("import-votes", votes, "--db", db)
    assert (again.returncode, again.stdout.split(";")[0]) == (0, f"imported 0 votes from {votes} into {db}")
    assert "skipped 3 already stored" in again.stdout and len(Store(db).table("comparisons")) == 3


def without_root_override(command: list[str]) -> list[str]:
    """Root ignores file modes: run it without that power, so that a read-only folder is read-only to it too."""
    if os.geteuid() != 0:
        return command
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]
    if not shutil.which("setpriv") or subprocess.run([*drop, "true"], capture_output=True).returncode:
        pytest.skip("running as root without setpriv: a read-only folder cannot be made read-only to the CLI")
    return drop + command


def test_cli_answers_bad_input_in_one_line(tmp_path):
    """Every input of the issue at once (in parallel) through the real CLI: exit 2, one line, no traceback."""
    kept, locked = tmp_path / "read-only" / "votes.duckdb", tmp_path / "locked"
    writable, missing = tmp_path / "writable.duckdb", tmp_path / "mistyped.duckdb"
    import_votes(Store(kept), write_jsonl(tmp_path / "votes.jsonl", ROWS))
    import_votes(Store(writable), tmp_path / "votes.jsonl")
    for name in ("latin-1", "list-prompt", "year-0", "parquet-corrupt"):
        suffix, content, _ = UNREADABLE[name]
        (tmp_path / f"{name}{suffix}").write_bytes(content)
    expected = {  # command: the start of its one line
        ("import-votes", tmp_path / "latin-1.jsonl"): "error: line 2: not UTF-8 text",
        ("import-votes", tmp_path / "list-prompt.jsonl"): "error: line 1: 'prompt' must be text, not a list.",
        ("import-votes", tmp_path / "year-0.jsonl"): "error: line 1: created_at '0000-01-01T00:00:00Z' is out of range",
        ("import-votes", tmp_path / "parquet-corrupt.parquet"): "error: parquet-corrupt.parquet: not a readable",
        ("stats", "--db", kept): f"error: cannot write to {kept} or its folder",
        ("export-votes", tmp_path / "prefs.jsonl", "--db", kept): f"error: cannot write to {kept} or its folder",
        ("export-votes", locked / "prefs.jsonl", "--db", writable):
            f"error: cannot write {locked / 'prefs.jsonl'}: Permission denied",
        # whatever only reads the votes starts no database on a mistyped --db
        ("export-votes", tmp_path / "out.jsonl", "--db", missing): f"error: {missing}: no such database; pass --db",
        ("next-round", "--plan-only", "--db", missing): f"error: {missing}: no such database; pass --db",
    }
    locked.mkdir()
    for folder in (kept.parent, locked):
        folder.chmod(0o555)
    try:
        runs = {args: subprocess.Popen(without_root_override([sys.executable, "-m", "core", *map(str, args), *(
                    [] if "--db" in args else ["--db", str(tmp_path / f"{n}.duckdb")])]),
                    cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for n, args in enumerate(expected)}
        answers = {args: (run.communicate(timeout=180)[1], run.returncode) for args, run in runs.items()}
    finally:
        for folder in (kept.parent, locked):
            folder.chmod(0o755)
    for args, start in expected.items():
        stderr, code = answers[args]
        assert (code, stderr.count("\n")) == (2, 1) and stderr.startswith(start), (args, stderr)
    assert not missing.exists() and not (tmp_path / "out.jsonl").exists()
