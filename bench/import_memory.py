"""Peak memory and wall time of `python -m core import-votes` on a large file.

    .venv/bin/python bench/import_memory.py [--rows 1000000] [--seed 0] [--twice] [--probe]

Writes --rows votes (prompt, response_a, response_b, choice, annotator, created_at; ~600 bytes a row) to a temporary
JSONL file, imports it into a fresh temporary database through the real CLI in a child process, and reports the
child's wall time and peak resident memory (getrusage of the children). --twice imports the same file again, which
must skip every row (re-import is idempotent). The goal is <= 1 GB peak for 1M rows. --probe writes to the same
database from this process every 0.25 s during the import, as the arena's votes would, and reports how long those
writes waited (the import holds the write lock only while it merges, core/store/imports.py). Prints one JSON line
last.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOPICS = ["fruits", "films", "books", "games", "parks", "songs", "snacks", "hikes", "apps", "gifts"]


def write_votes(path: Path, rows: int, seed: int) -> int:
    """`rows` distinct votes, one JSON object a line; returns the file's size in bytes."""
    rng = random.Random(seed)
    start = datetime(2025, 1, 1)
    with open(path, "w") as f:
        for i in range(rows):
            topic = TOPICS[i % len(TOPICS)]
            good = "\n".join(f"{k}. {topic} pick {rng.randrange(10**6)} - worth a try" for k in range(1, 6))
            bad = f"Here are some {topic} ideas, like {rng.randrange(10**6)} and more! Enjoy"
            good_first = rng.random() < 0.5
            f.write(json.dumps({
                "prompt": f"Top 5 {topic} for occasion {i}", "response_a": good if good_first else bad,
                "response_b": bad if good_first else good, "choice": "a" if good_first else "b",
                "annotator": f"annotator{rng.randrange(50)}",
                "created_at": (start + timedelta(seconds=rng.randrange(300 * 86400))).isoformat() + "Z",
            }) + "\n")
    return path.stat().st_size


class Probe(threading.Thread):
    """A writer beside the import: one small write every `every_s`, each one's wait recorded."""

    def __init__(self, db: Path, every_s: float = 0.25):
        super().__init__(daemon=True)
        from core.store.database import Store

        self.store, self.every_s, self.waits, self.done = Store(db, timeout_s=900), every_s, [], threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            started = time.perf_counter()
            self.store.set_setting("bench.probe", str(started))
            self.waits.append(time.perf_counter() - started)
            self.done.wait(self.every_s)

    def report(self) -> dict:
        self.done.set()
        self.join()
        waits = sorted(self.waits)
        return {"writes": len(waits), "p50_ms": round(1000 * waits[len(waits) // 2]),
                "p99_ms": round(1000 * waits[int(len(waits) * 0.99)]), "max_s": round(waits[-1], 2)}


def import_once(votes: Path, db: Path, probe: bool = False) -> dict:
    """One CLI import in a child process: its wall time, peak RSS so far among children, and what it printed."""
    prober = Probe(db) if probe else None
    if prober:
        prober.start()
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "core", "import-votes", str(votes), "--db", str(db)], cwd=REPO,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"import failed ({done.returncode}): {done.stderr.strip()}")
    # ru_maxrss is in KiB on Linux (bytes on macOS) and is the largest child so far, not a sum
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    peak_mb = peak / 2**20 if platform.system() == "Darwin" else peak / 1024
    result = {"seconds": round(seconds, 1), "peak_rss_mb": round(peak_mb), "said": done.stdout.strip()}
    return {**result, "concurrent_writes": prober.report()} if prober else result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="votes in the generated file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated texts")
    parser.add_argument("--twice", action="store_true", help="import the same file a second time (all skipped)")
    parser.add_argument("--probe", action="store_true", help="measure how long a concurrent writer waits")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        votes, db = Path(folder) / "votes.jsonl", Path(folder) / "bench.duckdb"
        size = write_votes(votes, args.rows, args.seed)
        result = {"rows": args.rows, "file_mb": round(size / 2**20), "first": import_once(votes, db, args.probe)}
        if args.twice:
            result["second"] = import_once(votes, db, args.probe)
        result["db_mb"] = round(db.stat().st_size / 2**20)
    print(f"{args.rows} rows ({result['file_mb']} MB of JSONL), database {result['db_mb']} MB")
    for run in ("first", "second"):
        if run in result:
            r = result[run]
            print(f"  {run} import: {r['seconds']} s, peak RSS {r['peak_rss_mb']} MB  ({r['said']})")
            if "concurrent_writes" in r:
                w = r["concurrent_writes"]
                print(f"    {w['writes']} writes beside it waited p50 {w['p50_ms']} ms, p99 {w['p99_ms']} ms, "
                      f"longest {w['max_s']} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
