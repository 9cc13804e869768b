"""How fast the dashboard's Data page reads a large database: every query it runs, against 100k votes.

    .venv/bin/python bench/dashboard_queries.py [--votes 100000] [--repeats 5] [--db /tmp/dashboard-100k.duckdb]

Seeds a fresh database through the store's own import (the same rows `python -m core import-votes` writes: 60
annotators, about 2,000 requests, a year of votes, some undone and flagged as noise), then times, as the page does
on each refresh: `Store.overview()` (totals, votes per day, choice mix, decision times, ratings, demonstrations,
per-annotator counts: one read transaction) and `Store.browse_votes()` for the default table and a filtered search.
Goal: <= 1 s for the page's queries. Then the arena's side: a writer process casts --writes votes back to back
(record_pair + record_vote, as a vote button does) on the same 100k file, once alone and once while a dashboard
process loops the page's queries without pause, and reports the vote latency both ways: the dashboard must never
block voting. Prints tables and a final JSON line.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from datetime import datetime, timedelta
from pathlib import Path

from core.lists import parse_list
from core.records import CHOICES, Generation, Pair, Policy, Prompt
from core.store.database import Store

BASE, TUNED = Policy("models/SmolLM2-135M-Instruct"), Policy("models/SmolLM2-135M-Instruct", "models/runs/ppo-1/adapter")


def seed(store: Store, n: int, rng: random.Random) -> None:
    """`n` votes in chunks of 10k (one bulk transaction each)."""
    start = datetime(2025, 11, 21)
    for chunk in range(0, n, 10_000):
        rows = []
        for i in range(chunk, min(n, chunk + 10_000)):
            prompt = Prompt(f"Top 5 ideas for occasion number {rng.randrange(2000)}")
            texts = ["\n".join(f"{k}. idea {rng.randrange(10**6)} - because it is good" for k in range(1, 6)),
                     f"Here are some ideas: idea {rng.randrange(10**6)}, and more."]
            rng.shuffle(texts)
            gens = [Generation(prompt, t, policy, parse_list(t).well_formed, len(parse_list(t).items))
                    for t, policy in zip(texts, (BASE, TUNED))]
            created = start + timedelta(seconds=rng.randrange(365 * 86400))
            rows.append((Pair(prompt, *gens), rng.choices(CHOICES, weights=(45, 40, 8, 7))[0],
                         f"annotator{rng.randrange(60)}", created))
        store.import_votes(rows)
    votes = store.browse_votes(limit=200)
    for comparison_id, annotator in zip(votes.comparison_id[:100], votes.annotator[:100]):
        store.retract_vote(comparison_id, annotator)  # an undo is the voter's own
    for comparison_id in votes.comparison_id[100:150]:
        store.review_vote(comparison_id, "noise", "bench")


def arena_writer(path: str, votes: int, out) -> None:
    store, latencies = Store(path), []
    for i in range(votes):
        prompt = Prompt(f"Top 5 writer test {i}")
        gens = [Generation(prompt, f"1. item {k}", BASE, False, 1) for k in range(2)]
        pair = Pair(prompt, *gens)
        started = time.perf_counter()
        store.record_pair(pair)
        store.record_vote(pair.pair_id, "left", "arena")
        latencies.append(time.perf_counter() - started)
    out.put(latencies)


def dashboard_reader(path: str, stop) -> None:
    store = Store(path)
    while not stop.is_set():
        store.overview()
        store.browse_votes(limit=200)


def vote_latency(path: str, votes: int, with_dashboard: bool) -> dict:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    reader = ctx.Process(target=dashboard_reader, args=(path, stop)) if with_dashboard else None
    if reader:
        reader.start()
        time.sleep(3)  # the reader is polling before the first vote
    writer = ctx.Process(target=arena_writer, args=(path, votes, out))
    writer.start()
    latencies = sorted(out.get(timeout=600))
    writer.join()
    if reader:
        stop.set()
        reader.join()
    return {"p50_s": statistics.median(latencies), "p95_s": latencies[int(0.95 * (len(latencies) - 1))],
            "max_s": latencies[-1]}


def timed(fn, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return {"median_s": statistics.median(times), "max_s": max(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--votes", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--db", default="/tmp/dashboard-100k.duckdb")
    parser.add_argument("--writes", type=int, default=40, help="votes the arena writer casts in each phase")
    args = parser.parse_args()
    Path(args.db).unlink(missing_ok=True)
    store = Store(args.db)
    started = time.perf_counter()
    seed(store, args.votes, random.Random(0))
    seeded_s = time.perf_counter() - started
    results = {
        "overview (all charts and tables)": timed(store.overview, args.repeats),
        "browse: newest 200": timed(lambda: store.browse_votes(limit=200), args.repeats),
        "browse: ties containing '17'": timed(lambda: store.browse_votes(["tie"], search="17"), args.repeats),
    }
    results["whole page (sum of the above)"] = {k: sum(r[k] for r in list(results.values())) for k in
                                                ("median_s", "max_s")}
    print(f"{args.votes} votes seeded in {seeded_s:.1f} s; {store.counts()}")
    print(f"{'query':<36} {'median':>8} {'max':>8}")
    for name, r in results.items():
        print(f"{name:<36} {r['median_s'] * 1000:>6.0f} ms {r['max_s'] * 1000:>6.0f} ms")
    writes = {name: vote_latency(args.db, args.writes, dashboard) for name, dashboard in
              [("votes, arena alone", False), ("votes, dashboard polling", True)]}
    print(f"{'arena vote (pair + vote)':<36} {'p50':>8} {'p95':>8} {'max':>8}")
    for name, r in writes.items():
        print(f"{name:<36} {r['p50_s'] * 1000:>6.0f} ms {r['p95_s'] * 1000:>6.0f} ms {r['max_s'] * 1000:>6.0f} ms")
    print(json.dumps({"votes": args.votes, "seed_s": seeded_s, **results, **writes}))


if __name__ == "__main__":
    main()
