"""Vote -> next pair shown, through the real arena process, with the pair queue warm.

    .venv/bin/python bench/arena_latency.py [--votes 30] [--base-model M]

Starts `python -m apps.arena` on a fresh temporary database (the embedded model by default) and drives it with
gradio_client as a person's clicks arrive: wait until the queue holds its pairs (the person reading), then call
`vote_and_next`, the endpoint behind every vote button (store the vote, take the next ready pair, store it, return
it). Also times `vote` and `next_pair` as two separate calls, and the client's floor (`status`, no work).
Prints a table and, last, one JSON line. Goal (issue 2): p95 <= 150 ms with the queue warm.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def summary(name: str, ms: list[float]) -> dict:
    return {"what": name, "n": len(ms), "p50_ms": round(percentile(ms, 0.5), 1), "p95_ms": round(percentile(ms, 0.95), 1),
            "max_ms": round(max(ms), 1)}


def start_arena(port: int, db: str, base_model: str | None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "apps.arena", "--port", str(port), "--db", db, "--annotator", "bench"]
    if base_model:
        cmd += ["--base-model", base_model]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for_warm_queue(client, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while client.predict(api_name="/status")["ready_pairs"] < 2:
        if time.monotonic() > deadline:
            raise TimeoutError("the pair queue never filled")
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--votes", type=int, default=30)
    parser.add_argument("--base-model", default=None)
    args = parser.parse_args()
    from gradio_client import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    arena = start_arena(port, str(Path(tempfile.mkdtemp()) / "bench.duckdb"), args.base_model)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                break
            except Exception:
                if time.monotonic() > deadline or arena.poll() is not None:
                    raise SystemExit("the arena did not start")
                time.sleep(1)
        floor, combined, separate = [], [], []
        pair_id, *_ = client.predict(api_name="/next_pair")
        for i in range(args.votes):
            wait_for_warm_queue(client)
            t = time.perf_counter()
            client.predict(api_name="/status")
            floor.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            if i % 2 == 0:
                _, pair_id, *_ = client.predict(pair_id, "left", None, "bench", api_name="/vote_and_next")
                combined.append((time.perf_counter() - t) * 1000)
            else:
                client.predict(pair_id, "right", None, "bench", api_name="/vote")
                pair_id, *_ = client.predict(api_name="/next_pair")
                separate.append((time.perf_counter() - t) * 1000)
            print(f"vote {i + 1}/{args.votes}: {(combined if i % 2 == 0 else separate)[-1]:.0f} ms", flush=True)
        rows = [summary("vote_and_next (one click)", combined), summary("vote + next_pair (2 calls)", separate),
                summary("status (client floor)", floor)]
    finally:
        arena.terminate()
        arena.wait(timeout=30)
    print(f"\n{'what':<28} {'n':>3} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7}")
    for row in rows:
        print(f"{row['what']:<28} {row['n']:>3} {row['p50_ms']:>7} {row['p95_ms']:>7} {row['max_ms']:>7}")
    print(json.dumps({"bench": "arena_latency", "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
                      "machine": platform.machine(), "rows": rows}))


if __name__ == "__main__":
    main()
