"""Vote -> next pair shown, through the real arena process, with the pair queue warm.

    .venv/bin/python bench/arena_latency.py [--votes 36] [--base-model M]

Starts `python -m apps.arena` on a fresh temporary database (the embedded model by default) and drives it with
gradio_client as a person's clicks arrive: wait until the queue holds its pairs (the person reading), then call
`vote_and_next`, which does the server work of a vote button (Arena.vote_and_next: store the vote, take the next
ready pair and store it; then read the vote counter), in three ways, in rotation:
- raw HTTP on Gradio's call protocol (POST /gradio_api/call/..., then read the event stream), the cost a click has
  without gradio_client's own polling (it sleeps 50 ms between polls, ~90 ms a call);
- gradio_client `vote_and_next`, and gradio_client `vote` + `next_pair` as two calls.
Also `status` (one small database read, no generation) through both, for the cost of a call that does little.
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
    return {"what": name, "n": len(ms), "p50_ms": round(percentile(ms, 0.5), 1),
            "p95_ms": round(percentile(ms, 0.95), 1), "max_ms": round(max(ms), 1)}


def call_raw(http, api_name: str, data: list):
    """One call on Gradio's HTTP protocol, as the page makes it: join, then read the event stream to completion."""
    event_id = http.post(f"gradio_api/call/{api_name}", json={"data": data}).json()["event_id"]
    event = None
    with http.stream("GET", f"gradio_api/call/{api_name}/{event_id}") as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "complete":
                outputs = json.loads(line[5:])
                return outputs[0] if len(outputs) == 1 else outputs  # gr.api sends a tuple as one output
            elif line.startswith("data:") and event == "error":
                raise RuntimeError(line[5:])
    raise RuntimeError(f"{api_name}: stream ended without a result")


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
    parser.add_argument("--votes", type=int, default=36)
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
        import httpx

        http = httpx.Client(base_url=f"http://127.0.0.1:{port}/", timeout=60)
        times = {name: [] for name in ("raw vote_and_next", "client vote_and_next", "client vote + next_pair",
                                       "raw status (one read)", "client status (one read)")}

        def timed(name, fn):
            t = time.perf_counter()
            result = fn()
            times[name].append((time.perf_counter() - t) * 1000)
            return result

        pair_id, *_ = client.predict(api_name="/next_pair")
        for i in range(args.votes):
            wait_for_warm_queue(client)
            timed("raw status (one read)", lambda: call_raw(http, "status", []))
            timed("client status (one read)", lambda: client.predict(api_name="/status"))
            vote = [pair_id, "left", None, "bench"]
            if i % 3 == 0:
                _, _, pair_id, *_ = timed("raw vote_and_next", lambda: call_raw(http, "vote_and_next", vote))
            elif i % 3 == 1:
                _, _, pair_id, *_ = timed("client vote_and_next",
                                       lambda: client.predict(*vote, api_name="/vote_and_next"))
            else:
                pair_id, *_ = timed("client vote + next_pair", lambda: (client.predict(*vote, api_name="/vote"),
                                                                        client.predict(api_name="/next_pair"))[1])
            print(f"vote {i + 1}/{args.votes} done", flush=True)
        rows = [summary(name, ms) for name, ms in times.items()]
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
