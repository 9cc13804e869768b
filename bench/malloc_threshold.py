"""What fixing glibc's mmap threshold costs and saves on PPO, side by side in one run.

    .venv/bin/python -m bench.malloc_threshold [--repeats 2]                  # ~10 min on 2 CPU cores
    .venv/bin/python -m bench.malloc_threshold --repeats 1 --arms 1MB 4MB 16MB  # other fixed thresholds

glibc's malloc returns a freed block above its mmap threshold straight to the system, and raises the threshold to
that block's size each time one is freed (up to 32 MB); blocks below it then come from the heap, which cannot give
back free space lying under a block still in use. Arms: `dynamic` (glibc's default, what the project runs with) and
thresholds fixed through glibc's own MALLOC_MMAP_THRESHOLD_ (which also stops the raising): `128kB` (glibc's
starting value), `1MB`, `4MB`, `16MB`. Each run is bench/ppo_vs_trl.py's `ours`, the fixed anchor's work (batch 8,
64 tokens, 6 updates, the first excluded), so sampling and the update both count; the arms alternate. Figures per
arm: steady s/update, episodes/s and peak RSS (ru_maxrss, model loading included), medians over the runs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from bench.ppo_vs_trl import OUT, ours, random_reward_model

# arm -> what it adds to the environment of the `python -m core train ppo` child (glibc reads it at start)
ARMS = {"128kB": {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}, "dynamic": {},
        **{f"{mb}MB": {"MALLOC_MMAP_THRESHOLD_": str(mb * 2**20)} for mb in (1, 4, 16)}}


def run_arm(arm: str, reward_model: Path, workdir: Path) -> dict:
    saved = dict(os.environ)
    os.environ.pop("MALLOC_MMAP_THRESHOLD_", None)
    os.environ.update(ARMS[arm])  # ours() passes os.environ on to the PPO process
    try:
        return ours(reward_model, workdir)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs per arm, alternating (median reported)")
    parser.add_argument("--arms", nargs="+", default=["128kB", "dynamic"], choices=list(ARMS),
                        help="which settings to compare; the first is divided by the last in the ratio line")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {arm: [] for arm in args.arms}
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        reward_model = random_reward_model(Path(tmp) / "reward")
        for _ in range(args.repeats):
            for arm in args.arms:
                runs[arm].append(run_arm(arm, reward_model, Path(tmp)))

    keys = ("steady_step_s_median", "episodes_per_s", "peak_rss_mb")
    table = {arm: {k: statistics.median(r[k] for r in results) for k in keys} for arm, results in runs.items()}
    print(f"\n{'arm':8} {'s/update':>9} {'episodes/s':>11} {'peak RSS MB':>12}   runs' s/update; peak RSS")
    for arm, row in table.items():
        each = ", ".join(f"{r['steady_step_s_median']:.2f}" for r in runs[arm])
        peaks = ", ".join(f"{r['peak_rss_mb']:.0f}" for r in runs[arm])
        print(f"{arm:8} {row['steady_step_s_median']:9.2f} {row['episodes_per_s']:11.3f} {row['peak_rss_mb']:12.0f}"
              f"   {each}; {peaks}")
    first, last = args.arms[0], args.arms[-1]
    ratio = {k: table[first][k] / table[last][k] for k in keys}
    print(f"{first} / {last}: {ratio['episodes_per_s']:.3f}x episodes/s, {ratio['peak_rss_mb']:.3f}x peak RSS; "
          f"median of {args.repeats} runs per arm")
    report = {"bench": "malloc_threshold", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "cores": os.cpu_count(), "table": table, "ratio": ratio, "runs": runs}
    (OUT / "malloc_threshold.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"table": table, "ratio": ratio}))


if __name__ == "__main__":
    main()
