"""One table of the loop benchmark's goals for every annotator taste, from several loop output folders.

    .venv/bin/python bench/loop.py --taste terse --out bench/out/loop-terse      # one loop per taste, then
    .venv/bin/python bench/taste_summary.py bench/out/loop-form bench/out/loop-terse bench/out/loop-reasons ...

Each argument is a loop's --out folder or its loop.json. A row per loop; a goal is reached when its measured rate
is at least the target (and, for the reward model, when enough held-out pairs measured it); the 95 % Wilson
interval is printed beside it, and "sure" marks a goal whose whole interval clears the target. Loops from before
--taste existed voted with `form`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

GOALS = {  # name: (column heading, target rate, fewest pairs that may measure it)
    "rm_heldout_accuracy": ("reward model held-out accuracy", 0.85, 60),
    "final_vs_base": ("annotator: final policy (PPO) vs base", 0.75, 1),
    "rl_vs_start": ("annotator: RL policy vs its start (PPO vs SFT)", 0.65, 1),
}


def read_loop(path: str | Path) -> dict:
    """A loop's loop.json, given the file or the folder that holds it."""
    path = Path(path)
    path = path / "loop.json" if path.is_dir() else path
    if not path.exists():
        raise SystemExit(f"{path} does not exist: pass a bench/loop.py --out folder or its loop.json.")
    return json.loads(path.read_text())


def measured(result: dict) -> dict[str, dict]:
    """The figure behind each goal, as {rate, low, high, n} (a proportion or a win rate, ties counted half)."""
    wins = result["evaluation"]["annotator_win_rate"]
    return {"rm_heldout_accuracy": result["reward_model"]["heldout"], "final_vs_base": wins["ppo_vs_base"],
            "rl_vs_start": wins["ppo_vs_sft"]}


def goal_rows(result: dict, run: str) -> list[dict]:
    """One row per goal of one loop: taste, run, goal, the figure with its interval, and whether it is reached."""
    rows = []
    for name, figure in measured(result).items():
        _, target, fewest = GOALS[name]
        rate, n = figure.get("rate"), figure.get("n") or 0
        reached = rate is not None and n >= fewest and rate >= target
        rows.append({"taste": result.get("taste", result.get("config", {}).get("taste", "form")), "run": run,
                     "goal": name, "target": target, "fewest": fewest, "rate": rate, "low": figure.get("low"),
                     "high": figure.get("high"), "n": n, "reached": reached,
                     "sure": reached and figure.get("low") is not None and figure["low"] >= target})
    return rows


def cell(row: dict) -> str:
    if row["rate"] is None or not row["n"]:
        return "n/a (n=0)"
    verdict = "sure" if row["sure"] else "yes" if row["reached"] else "no"
    if row["n"] < row["fewest"]:
        verdict += f", too few (< {row['fewest']})"
    return f"{row['rate']:.1%} [{row['low']:.1%}, {row['high']:.1%}] n={row['n']}: {verdict}"


def table(rows: list[dict]) -> str:
    """A markdown table: a line per loop, a column per goal, and how many goals each loop reached."""
    runs = list(dict.fromkeys((r["taste"], r["run"]) for r in rows))
    heads = [f"{what} >= {target:.0%}" + (f", n >= {fewest}" if fewest > 1 else "")
             for what, target, fewest in GOALS.values()]
    lines = ["| taste | run | " + " | ".join(heads) + " | goals reached |", "|---" * (len(heads) + 3) + "|"]
    for taste, run in runs:
        mine = {r["goal"]: r for r in rows if (r["taste"], r["run"]) == (taste, run)}
        cells = [cell(mine[name]) for name in GOALS]
        lines.append(f"| {taste} | {run} | " + " | ".join(cells) + f" | {sum(r['reached'] for r in mine.values())}"
                     f" of {len(GOALS)} |")
    return "\n".join(lines) + "\n"


def run_name(path: str | Path) -> str:
    """What a loop is called in the table: its --out folder's name (or a saved report's file name)."""
    path = Path(path)
    return path.parent.name if path.name == "loop.json" else path.stem if path.suffix == ".json" else path.name


def summarise(paths: list[str]) -> list[dict]:
    return [row for path in paths for row in goal_rows(read_loop(path), run_name(path))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("loops", nargs="+", help="bench/loop.py --out folders (or their loop.json files)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    args = parser.parse_args(argv)
    rows = summarise(args.loops)
    print(json.dumps(rows, indent=2) if args.json else table(rows), end="")


if __name__ == "__main__":
    main()
