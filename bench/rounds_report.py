"""The report of bench/rounds.py: rounds.md from the result rounds.json holds (bench/rounds.py step 7).

    .venv/bin/python -m bench.rounds_report ROUNDS_OUT      # writes ROUNDS_OUT/rounds.md again from its rounds.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from core.win_rate import votes_to_pass

GOALS = {"over_previous_round": 0.60, "best_method_over_sft": 0.65}


def votes_line(result: dict) -> str:
    """Round 2's votes as the report shows them: '150 votes (65 left, ..., 92 on own requests) in 15.5 min'."""
    r = result["round2"]
    mix = ", ".join(f"{r[k]} {k.replace('_', ' ')}" for k in ("left", "right", "tie", "both_bad") if k in r)
    chosen = ", ".join(f"{n} {how}" for how, n in r.get("chosen_by", {}).items())
    reused = result["config"].get("reuse_round2")
    return (f"{r['votes']} votes ({mix}; {r.get('own_requests', 0)} on the annotator's own requests"
            f"{'; pairs chosen: ' + chosen if chosen else ''}) in "
            f"{result['wall_s']['round2_votes'] / 60:.1f} min" + (f" (reused from {reused})" if reused else "")
            + gate_line(r.get("gate") or {}))


def gate_line(gate: dict) -> str:
    """The gate's extra votes as the report shows them, or nothing when it cast none."""
    if not gate.get("cast"):
        return ""
    (kept0, won0), (kept, won) = gate["before"], gate["after"]
    return (f"; then {gate['cast']} more at the gate in {gate['batches']} batch(es): the challenger's decided votes "
            f"{won0} of {kept0 + won0} (at that share {votes_to_pass(won0, kept0 + won0)} more decided votes would "
            f"pass) -> {won} of {kept + won}, {'passed' if gate['passed'] else 'not passed'}")


def markdown(result: dict) -> str:
    e, cfg, n = result["evaluation"], result["config"], result.get("round", 2)
    before = "round 1's PPO" if n == 2 else f"round {n - 1}'s {Path(result['previous_policy']).name}"
    lines = [f"# Round {n}, taste `{cfg['taste']}`", "",
             f"Before round {n}: {result['votes_before']} votes; round {n}: {votes_line(result)} on "
             f"{result['pairing'][0]} vs {result['pairing'][1]}; round {n} starts from {result['start']}.", "",
             f"Annotator on {e['prompts']} held-out requests (95 % Wilson interval; ties count half):", "",
             "| comparison | win rate [95 %] | n | goal |", "|---|---|---|---|"]
    rows = [(f"round {n} {m} vs {before}", r, f">= {GOALS['over_previous_round']:.0%} (best)")
            for m, r in e["over_previous_round"].items()]
    rows += [(f"{m} vs SFT", r, f">= {GOALS['best_method_over_sft']:.0%} (best)") for m, r in e["over_sft"].items()]
    lines += [f"| {name} | {r['rate']:.3f} [{r['low']:.3f}, {r['high']:.3f}] | {r['n']} | {goal} |"
              for name, r, goal in rows]
    lines += ["", f"| policy | mean reward-model score (round-{n} reward model) | wall s |", "|---|---|---|"]
    lines += [f"| {k} | {v:.3f} | {result['wall_s'].get(k, '')} |" for k, v in e["mean_rm_score"].items()]
    lines += ["", "Leaderboard of the arena's votes:", "", "```", result["leaderboard"], "```", "",
              "Goals: " + ", ".join(f"{k} {'met' if v else 'missed'}"
                                    for k, v in result["goals"].items())]
    return "\n".join(lines) + "\n"


def main(folders: list[str]) -> None:
    """Write each folder's rounds.md again from its rounds.json (after this module's report changed)."""
    if not folders:
        raise SystemExit("usage: python -m bench.rounds_report ROUNDS_OUT [ROUNDS_OUT ...]")
    for folder in map(Path, folders):
        if not (folder / "rounds.json").is_file():
            raise SystemExit(f"{folder} holds no rounds.json: pass a finished bench/rounds.py --out folder.")
        (folder / "rounds.md").write_text(markdown(json.loads((folder / "rounds.json").read_text())))
        print(f"wrote {folder / 'rounds.md'}")


if __name__ == "__main__":
    main(sys.argv[1:])
