"""Whose style SFT learns: the person's own lists against the shipped seed lists, judged by that person.

    .venv/bin/python -m bench.seed_lists --loop bench/out/loop-terse          # after a loop: ~30 min on 2 cores
    .venv/bin/python -m bench.seed_lists --loop LOOP --base-model TINY --sft-args "--max-steps 2" \\
        --eval-prompts 4 --max-new-tokens 8                                   # the smoke test (tests/test_loop.py)

The seed lists in data/demonstrations.jsonl have one style (a reason after each item); a person whose taste differs
writes a few lists of their own in the arena. SFT has two settings for who wins (core/train/sft.py): `--seed-lists`
(keep: every seed list; fill: a seed list only for requests the person wrote none for; off: the person's lists alone)
and `--own-weight` (how many times each of the person's lists counts). This benchmark trains one SFT per variant on
one loop's database and lets that loop's annotator (bench/loop.py --taste) judge them:

1. Read the loop's database and taste (its loop.json). Train `python -m core train sft --preset quick` once per
   variant in VARIANTS; the loop's own SFT run stands for the variant with its settings (by default fill, weight 2).
2. Base and every variant answer the held-out requests, sampled as `python -m core eval` samples them (one seed).
3. The annotator judges each variant against the base and against `keep-w1` (every seed list in, the person's
   lists once: the seed lists' style outnumbers theirs by the hundreds to a few), ties counted half, 95 % Wilson
   intervals; beside them the taste's mean utility per policy (bench/annotator.utility) with its standard error.
4. Report: seed_lists.json and seed_lists.md in --out (default: the loop's folder).
"""
from __future__ import annotations

import json
import random
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.annotator import Taste, utility
from bench.loop import (
    check_variants,
    entry_point,
    finished_loop,
    held_out_answers,
    outcomes,
    run_stage,
)
from bench.loop_report import mean_se, win_cell
from core.config import command_config, knob
from core.runs import read_json
from core.win_rate import win_rate

VARIANTS = {  # name: the SFT flags that make it
    "keep-w1": "--seed-lists keep --own-weight 1",
    "fill-w2": "--seed-lists fill --own-weight 2",  # the default
    "fill-w8": "--seed-lists fill --own-weight 8",
    "off-w2": "--seed-lists off --own-weight 2",
}
REFERENCE = "keep-w1"


@dataclass
class SeedListsConfig:
    loop: str = knob("", "a finished bench/loop.py --out folder: its database, taste and SFT run; required")
    out: str = knob("", "folder for the SFT runs and the report; empty: the loop's folder")
    variants: list[str] = knob(list(VARIANTS), "which variants to train and judge: " + ", ".join(
        f"{k} ({v})" for k, v in VARIANTS.items()))
    base_model: str = knob("", "base model; empty: the loop's (the embedded SmolLM2-135M-Instruct)")
    sft_args: str = knob("--eval-prompts 0", "extra flags for every `train sft` (as bench/loop.py passes them)")
    eval_prompts: int = knob(72, "held-out requests each policy answers (at most 72)")
    max_new_tokens: int = knob(160, "token budget per list")
    seed: int = knob(0, "seed of the sampling and the annotator")

    def __post_init__(self):
        check_variants(self.loop, self.variants, VARIANTS)
        self.variants = [REFERENCE, *[v for v in self.variants if v != REFERENCE]]  # the reference is always judged


def loop_sft_variant(loop: dict) -> str | None:
    """The VARIANTS name whose flags the loop's own SFT run was trained with, if any."""
    config = read_json(Path(loop["runs"]["sft"]) / "config.json")
    flags = f"--seed-lists {config.get('seed_lists', 'fill')} --own-weight {config.get('own_weight', 1)}"
    return next((name for name, made_by in VARIANTS.items() if made_by == flags), None)


def mean_utility(requests: list[str], texts: list[str], taste: str) -> dict:
    return mean_se([utility(r, t, taste) for r, t in zip(requests, texts)])


def judge_variants(requests, answers: dict[str, list[str]], taste: Taste, seed: int) -> dict:
    """Each variant against the base and against the reference variant: {variant: {"vs_base": ..., "vs_ref": ...}}."""
    report = {}
    for n, name in enumerate(k for k in answers if k != "base"):
        report[name] = {"vs_base": win_rate(outcomes(requests, answers[name], answers["base"],
                                                     random.Random(seed + 2 * n), taste)).as_dict()}
        if name != REFERENCE:
            report[name]["vs_" + REFERENCE] = win_rate(outcomes(requests, answers[name], answers[REFERENCE],
                                                                random.Random(seed + 2 * n + 1), taste)).as_dict()
    return report


def markdown(result: dict) -> str:
    taste = result["taste"]
    lines = [f"SFT variants judged by the `{taste}` annotator on {result['prompts']} held-out requests "
             f"(ties half, 95 % Wilson).", "",
             f"| variant | SFT flags | examples (seed / yours x weight) | vs base | vs {REFERENCE} | "
             f"mean {taste} utility (± se) |", "|---|---|---|---|---|---|"]

    base = result["utility"]["base"]
    lines.append(f"| base | - | - | - | - | {base['mean']:+.2f} ± {base['se']:.2f} |")
    for name, row in result["variants"].items():
        lineage, u = row["lineage"], result["utility"][name]
        lines.append(f"| {name} | `{VARIANTS[name]}` | {lineage.get('seed', '?')} / {lineage.get('from_arena', '?')}"
                     f" x {lineage.get('own_weight', '?')} | {win_cell(row['vs_base'])} | "
                     f"{win_cell(row.get('vs_' + REFERENCE))} | {u['mean']:+.2f} ± {u['se']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    cfg = command_config(SeedListsConfig, sys.argv[1:] if argv is None else argv, prog="python -m bench.seed_lists",
                         description=__doc__.split("\n")[0])
    done = finished_loop(cfg.loop, cfg.out, cfg.base_model)
    out, taste = done.out, done.taste
    # 1. one SFT per variant (the loop's own run stands for its variant)
    runs, reused = {}, loop_sft_variant(done.report)
    for name in cfg.variants:
        if name == reused:
            runs[name] = done.run("sft")
            continue
        runs[name] = out / f"sft-{name}"
        run_stage(f"sft-{name}", ["core", "train", "sft", "--preset", "quick", "--db", str(done.folder / "loop.duckdb"),
                                  "--output-dir", str(runs[name]), *shlex.split(VARIANTS[name]),
                                  *(["--base-model", done.base_model] if done.base_model else []),
                                  *shlex.split(cfg.sft_args)], out / "logs")
    # 2. every policy answers the held-out requests
    policies = {"base": "base", **{name: str(run) for name, run in runs.items()}}
    requests, answers = held_out_answers(policies, done.base_model, cfg.eval_prompts, cfg.max_new_tokens, cfg.seed)
    # 3. the loop's annotator judges
    judged = judge_variants(requests, answers, taste, cfg.seed)
    result = {"config": asdict(cfg), "loop": str(done.folder), "taste": taste.name, "prompts": len(requests),
              "utility": {k: mean_utility(requests, texts, taste.name) for k, texts in answers.items()},
              "variants": {name: {"run": str(runs[name]), "flags": VARIANTS[name],
                                  "lineage": read_json(runs[name] / "data" / "lineage.json"),
                                  **judged[name]} for name in runs},
              "samples": [{"prompt": r, **{k: answers[k][i] for k in answers}} for i, r in enumerate(requests)]}
    # 4. the report
    (out / "seed_lists.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "seed_lists.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    entry_point(main)
