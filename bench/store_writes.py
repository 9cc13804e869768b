"""Vote write latency under concurrent writers (and readers) on one DuckDB file.

    .venv/bin/python bench/store_writes.py [--writers 1 4 8] [--votes 50] [--readers 1]

Each writer process records a pair and then votes on it, --votes times, as fast as it can (a person votes every
few seconds; this is the worst case). Readers loop over `votes()` and `counts()` the whole time, as a dashboard
would. Reports per-vote write latency (record_vote only) p50/p95/max and checks that every vote arrived.
Prints a table and, last, one JSON line.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
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


def writer(path: str, writer_id: int, votes: int, start, out) -> None:
    store = Store(path)
    start.wait()
    latencies = []
    for i in range(votes):
        pair = make_pair(writer_id, i)
        store.record_pair(pair)
        t = time.perf_counter()
        store.record_vote(pair.pair_id, "left", f"writer{writer_id}")
        latencies.append((time.perf_counter() - t) * 1000)
    out.put(latencies)


def reader(path: str, start, stop) -> None:
    store = Store(path)
    start.wait()
    while not stop.is_set():
        store.votes()
        store.counts()


def run(n_writers: int, votes: int, n_readers: int) -> dict:
    ctx = mp.get_context("spawn")
    path = str(Path(tempfile.mkdtemp()) / "bench.duckdb")
    Store(path)
    start, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    writers = [ctx.Process(target=writer, args=(path, w, votes, start, out)) for w in range(n_writers)]
    readers = [ctx.Process(target=reader, args=(path, start, stop)) for _ in range(n_readers)]
    for p in writers + readers:
        p.start()
    time.sleep(2.0)  # let every process import and open the store before the clock starts
    started = time.perf_counter()
    start.set()
    latencies = [ms for _ in writers for ms in out.get(timeout=600)]
    elapsed = time.perf_counter() - started
    stop.set()
    for p in writers + readers:
        p.join()
    arrived = len(Store(path).table("comparisons"))
    latencies.sort()
    return {"writers": n_writers, "readers": n_readers, "votes": len(latencies), "arrived": arrived,
            "p50_ms": round(statistics.median(latencies), 1),
            "p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 1), "max_ms": round(latencies[-1], 1),
            "votes_per_s": round(len(latencies) / elapsed, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--votes", type=int, default=50)
    parser.add_argument("--readers", type=int, default=1)
    args = parser.parse_args()
    rows = []
    print(f"{'writers':>7} {'readers':>7} {'votes':>6} {'arrived':>7} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7}")
    for n in args.writers:
        row = run(n, args.votes, args.readers)
        rows.append(row)
        print(f"{row['writers']:>7} {row['readers']:>7} {row['votes']:>6} {row['arrived']:>7} {row['p50_ms']:>7} "
              f"{row['p95_ms']:>7} {row['max_ms']:>7}", flush=True)
    print(json.dumps({"bench": "store_writes", "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
                      "machine": platform.machine(), "rows": rows}))


if __name__ == "__main__":
    main()
