"""Vote write latency under concurrent writers (and readers) on one DuckDB file.

    .venv/bin/python bench/store_writes.py [--writers 1 4 8] [--votes 50] [--readers 1]          # burst
    .venv/bin/python bench/store_writes.py --writers 8 --pace 3 --duration 120                      # people

Burst: each writer process records a pair and then votes on it, --votes times, as fast as it can (the worst
case). Readers loop over `votes()` and `counts()` the whole time.
People (--pace S): each writer is a person voting every S seconds on average (uniform 0.5 S to 1.5 S between
votes) for --duration seconds, while a dashboard process runs the Data page's queries (`overview()`,
`browse_votes()`, `counts()`) every 2 s and a training process takes a reward model's snapshot of every vote
(`take_preferences`, Parquet files in a scratch run folder) every 10 s.
Reports per-vote write latency (record_vote only) p50/p95/p99/max and checks that every vote arrived exactly once
(each comparison id once, each writer's count right). Prints a table and, last, one JSON line.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

from core.records import Generation, Pair, Policy, Prompt
from core.store.database import Store


def make_pair(writer: int, i: int) -> Pair:
    prompt = Prompt(f"Top 5 things #{writer}-{i}")
    gen = lambda text: Generation(prompt=prompt, text=text, policy=Policy("bench"), well_formed=False, n_items=0)
    return Pair(prompt=prompt, left=gen("1. a"), right=gen("1. b"))


def writer(path: str, writer_id: int, votes: int, start, out, pace_s: float = 0.0, duration_s: float = 0.0) -> None:
    """Burst: `votes` back to back. Paced: a vote every ~pace_s seconds until duration_s has passed."""
    store, rng = Store(path), random.Random(writer_id)
    start.wait()
    latencies, i, ends = [], 0, time.perf_counter() + duration_s
    while (i < votes) if not pace_s else (time.perf_counter() < ends):
        if pace_s:
            time.sleep(rng.uniform(0.5, 1.5) * pace_s)  # reading the two lists
        pair = make_pair(writer_id, i)
        store.record_pair(pair)
        t = time.perf_counter()
        store.record_vote(pair.pair_id, "left", f"writer{writer_id}")
        latencies.append((time.perf_counter() - t) * 1000)
        i += 1
    out.put(latencies)


def reader(path: str, start, stop) -> None:
    store = Store(path)
    start.wait()
    while not stop.is_set():
        store.votes()
        store.counts()


def dashboard(path: str, start, stop) -> None:
    """The Data page, reloaded every 2 s."""
    store = Store(path)
    start.wait()
    while not stop.wait(2.0):
        store.overview()
        store.browse_votes()
        store.counts()


def training_snapshots(path: str, start, stop) -> None:
    """A reward-model run's snapshot of every vote, every 10 s."""
    from core.train.snapshot import take_preferences

    store, folder = Store(path), Path(tempfile.mkdtemp())
    start.wait()
    while not stop.wait(10.0):
        take_preferences(store, folder, 0.2)


def run(n_writers: int, votes: int, n_readers: int, pace_s: float = 0.0, duration_s: float = 0.0) -> dict:
    ctx = mp.get_context("spawn")
    path = str(Path(tempfile.mkdtemp()) / "bench.duckdb")
    Store(path)
    start, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    writers = [ctx.Process(target=writer, args=(path, w, votes, start, out, pace_s, duration_s))
               for w in range(n_writers)]
    readers = [ctx.Process(target=reader, args=(path, start, stop)) for _ in range(n_readers)] if not pace_s else \
        [ctx.Process(target=job, args=(path, start, stop)) for job in (dashboard, training_snapshots)]
    for p in writers + readers:
        p.start()
    time.sleep(2.0)  # let every process import and open the store before the clock starts
    started = time.perf_counter()
    start.set()
    latencies = [ms for _ in writers for ms in out.get(timeout=600 + duration_s)]
    elapsed = time.perf_counter() - started
    stop.set()
    for p in writers + readers:
        p.join()
    comparisons = Store(path).table("comparisons")
    arrived, once = len(comparisons), comparisons.comparison_id.is_unique and comparisons.pair_id.is_unique
    latencies.sort()
    q = lambda share: round(latencies[int(share * (len(latencies) - 1))], 1)  # noqa: E731
    return {"writers": n_writers, "mode": f"paced {pace_s:g} s" if pace_s else "burst",
            "others": "dashboard + training snapshot" if pace_s else f"{n_readers} reader(s)",
            "votes": len(latencies), "arrived": arrived, "each_once": bool(once),
            "p50_ms": round(statistics.median(latencies), 1), "p95_ms": q(0.95), "p99_ms": q(0.99),
            "max_ms": round(latencies[-1], 1), "votes_per_s": round(len(latencies) / elapsed, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--votes", type=int, default=50)
    parser.add_argument("--readers", type=int, default=1)
    parser.add_argument("--pace", type=float, default=0.0, help="seconds between a person's votes; 0: burst")
    parser.add_argument("--duration", type=float, default=120.0, help="paced: seconds of voting")
    args = parser.parse_args()
    rows = []
    print(f"{'writers':>7} {'mode':>10} {'votes':>6} {'arrived':>7} {'once':>5} {'p50 ms':>7} {'p95 ms':>7} "
          f"{'p99 ms':>7} {'max ms':>7} {'votes/s':>7}")
    for n in args.writers:
        row = run(n, args.votes, args.readers, args.pace, args.duration if args.pace else 0.0)
        rows.append(row)
        print(f"{row['writers']:>7} {row['mode']:>10} {row['votes']:>6} {row['arrived']:>7} {row['each_once']!s:>5} "
              f"{row['p50_ms']:>7} {row['p95_ms']:>7} {row['p99_ms']:>7} {row['max_ms']:>7} {row['votes_per_s']:>7}",
              flush=True)
    print(json.dumps({"bench": "store_writes", "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
                      "machine": platform.machine(), "rows": rows}))


if __name__ == "__main__":
    main()
