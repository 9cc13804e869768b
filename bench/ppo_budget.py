"""Whether a bigger PPO budget pulls ahead of SFT: PPO with more episodes, from one loop's SFT and reward model.

    .venv/bin/python -m bench.ppo_budget --loop bench/out/loop-ontopic --variants b16   # ~35 min on 2 cores
    .venv/bin/python -m bench.ppo_budget --loop bench/out/loop-ontopic --out bench/out/ppo-mlp-rm \
        --reward-model bench/out/reward-variants-ontopic/runs/mlp --variants quick,b16   # another reward model
    .venv/bin/python -m bench.ppo_budget --loop LOOP --base-model TINY --variants b16 \\
        --ppo-args "--total-updates 1 ..." --eval-prompts 4 --max-new-tokens 8        # the smoke test (tests/test_loop.py)

In every loop so far the annotator preferred PPO to the SFT policy it started from only 51-62 % of the time (goal
65 %), with PPO's quick preset: 12 updates of 8 episodes, 96 in all. This benchmark asks whether that budget is what
limits it, holding everything else fixed (the loop's votes, SFT run, reward model and annotator). With
--reward-model it asks the same of another reward model trained on the loop's votes (bench/reward_variants.py):
the variants train against it, and the loop's own PPO stays as the row trained against the loop's.

1. Read the loop's loop.json: its taste and its three runs. The loop's own PPO run stands for `loop` (the quick
   preset with the loop's --ppo-args).
2. Train `python -m core train ppo --preset quick --sft-adapter SFT --reward-model RM` once per variant in VARIANTS
   (the variant's flags last, so they override --ppo-args); wall time per run. RM is --reward-model when given.
3. Base, SFT and every PPO answer the held-out requests, sampled as `python -m core eval` samples them (one seed).
4. The annotator judges each PPO against SFT (its start) and against the base, ties counted half, 95 % Wilson
   intervals; beside them the taste's mean utility (bench/annotator.utility) and the reward model's mean score, so
   a policy the reward model likes more but the annotator does not shows as over-optimisation. With
   --reward-model, both reward models score every policy.
5. Report: ppo_budget.json and ppo_budget.md in --out (default: the loop's folder).
"""
from __future__ import annotations

import json
import random
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.annotator import Taste
from bench.loop import (
    check_variants,
    entry_point,
    finished_loop,
    held_out_answers,
    mean_scores,
    outcomes,
    run_stage,
)
from bench.loop_report import win_cell
from bench.seed_lists import mean_utility
from core.config import command_config, knob
from core.runs import read_json
from core.win_rate import win_rate

VARIANTS = {  # name: the PPO flags that make it, on top of --preset quick (12 updates of 8 episodes, in mini-batches of 4)
    "b16": "--batch-size 16 --mini-batches 4",  # 12 updates of 16: twice the episodes and gradient steps, less noise
    "u24": "--total-updates 24",  # 24 updates of 8: twice the episodes, twice the updates
    "b16u24": "--batch-size 16 --mini-batches 4 --total-updates 24",  # four times the episodes (~2.5x the time)
    # the bigger budget's step size and KL budget: b16u24 in bf16 drifted to 3-4 nats a list for +0.2 of score
    "b16u24-kl0.2": "--batch-size 16 --mini-batches 4 --total-updates 24 --kl-coef 0.2",  # 4x the KL penalty
    "b16u24-lr5e-5": "--batch-size 16 --mini-batches 4 --total-updates 24 --learning-rate 5e-5",  # half the step
    "quick": "",  # the loop's own budget: with --reward-model, the loop's PPO against another reward model
    # the precision alone (--precision), and a second training seed of each, to tell it from run-to-run noise
    "fp32": "--precision fp32", "bf16": "--precision bf16",
    "fp32-seed1": "--precision fp32 --seed 1", "bf16-seed1": "--precision bf16 --seed 1",
}
LOOP = "loop"  # the loop's own PPO run


@dataclass
class PPOBudgetConfig:
    loop: str = knob("", "a finished bench/loop.py --out folder: its taste, SFT, reward-model and PPO runs; required")
    out: str = knob("", "folder for the PPO runs and the report; empty: the loop's folder")
    variants: list[str] = knob(["b16", "u24"], "which PPO variants to train: " + ", ".join(
        f"{k} ({v})" for k, v in VARIANTS.items()))
    base_model: str = knob("", "base model; empty: the loop's (the embedded SmolLM2-135M-Instruct)")
    reward_model: str = knob("", "a finished reward run on the loop's votes the variants train against (e.g. a "
                                 "bench/reward_variants run); empty: the loop's")
    ppo_args: str = knob("--eval-every 0", "extra flags for every `train ppo`, before the variant's")
    eval_prompts: int = knob(72, "held-out requests each policy answers (at most 72)")
    max_new_tokens: int = knob(160, "token budget per list")
    seed: int = knob(0, "seed of the sampling and the annotator")

    def __post_init__(self):
        if "quick" in self.variants and not self.reward_model:
            raise SystemExit("--variants quick retrains the loop's own PPO unless --reward-model names another "
                             "reward model: pass --reward-model RUN, or other variants (b16, u24).")
        check_variants(self.loop, self.variants, VARIANTS)
        if self.reward_model and not (Path(self.reward_model) / "adapter").is_dir():
            raise SystemExit(f"--reward-model {self.reward_model} holds no finished reward run (no adapter/ folder)")


def budget(run: Path) -> dict:
    """A PPO run's episode budget, from its config.json."""
    config = read_json(run / "config.json")
    return {"total_updates": config["total_updates"], "batch_size": config["batch_size"],
            "episodes": config["total_updates"] * config["batch_size"]}


def judge_policies(requests, answers: dict[str, list[str]], taste: Taste, seed: int) -> dict:
    """Each PPO against SFT and against the base: {policy: {"vs_sft": ..., "vs_base": ...}}."""
    report = {}
    for n, name in enumerate(k for k in answers if k not in ("base", "sft")):
        report[name] = {f"vs_{other}": win_rate(outcomes(requests, answers[name], answers[other],
                                                         random.Random(seed + 2 * n + m), taste)).as_dict()
                        for m, other in enumerate(("sft", "base"))}
    return report


def markdown(result: dict) -> str:
    taste, other = result["taste"], "mean_loop_rm_score" in result
    runs = result["runs"]
    lines = [f"PPO budgets from one SFT run and reward model, judged by the `{taste}` annotator on "
             f"{result['prompts']} held-out requests (ties half, 95 % Wilson).", ""]
    if other:
        lines += [f"The variants trained against {runs['reward']}; `loop` against the loop's {runs['loop_reward']}. "
                  "Both score every policy.", ""]
    lines += [f"| policy | updates x episodes | wall time | vs SFT | vs base | mean {taste} utility (± se) | "
              + ("mean score: variants' RM | loop's RM |" if other else "mean reward-model score |"),
              "|---|---|---|---|---|---|---|" + ("---|" if other else "")]
    for name in result["utility"]:
        u, score = result["utility"][name], result["mean_rm_score"][name]
        row = result["ppo"].get(name)
        shape = f"{row['budget']['total_updates']} x {row['budget']['batch_size']}" if row else "-"
        wall = f"{row['wall_s'] / 60:.1f} min" if row and row.get("wall_s") is not None else "-"
        lines.append(f"| {name} | {shape} | {wall} | {win_cell(row and row['vs_sft'])} | "
                     f"{win_cell(row and row['vs_base'])} | {u['mean']:+.2f} ± {u['se']:.2f} | {score:+.2f} |"
                     + (f" {result['mean_loop_rm_score'][name]:+.2f} |" if other else ""))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    cfg = command_config(PPOBudgetConfig, sys.argv[1:] if argv is None else argv, prog="python -m bench.ppo_budget",
                         description=__doc__.split("\n")[0])
    done = finished_loop(cfg.loop, cfg.out, cfg.base_model)
    out, taste, base_model = done.out, done.taste, done.base_model
    sft_dir, loop_reward = done.run("sft"), done.run("reward")
    reward_dir = Path(cfg.reward_model) if cfg.reward_model else loop_reward
    # 1-2. the loop's PPO, then one PPO per variant from the same start and reward model
    runs, wall = {LOOP: done.run("ppo")}, {LOOP: done.report.get("wall_s", {}).get("ppo")}
    for name in cfg.variants:
        runs[name] = out / f"ppo-{name}"
        wall[name] = run_stage(f"ppo-{name}", [
            "core", "train", "ppo", "--preset", "quick", "--sft-adapter", str(sft_dir), "--reward-model",
            str(reward_dir), "--output-dir", str(runs[name]), *(["--base-model", base_model] if base_model else []),
            *shlex.split(cfg.ppo_args), *shlex.split(VARIANTS[name])], out / "logs")
    # 3. every policy answers the held-out requests
    policies = {"base": "base", "sft": str(sft_dir), **{name: str(run) for name, run in runs.items()}}
    requests, answers = held_out_answers(policies, base_model, cfg.eval_prompts, cfg.max_new_tokens, cfg.seed)
    # 4. the annotator judges; the reward model scores
    judged = judge_policies(requests, answers, taste, cfg.seed)
    scorers = {"mean_rm_score": reward_dir, **({"mean_loop_rm_score": loop_reward} if cfg.reward_model else {})}
    result = {"config": asdict(cfg), "loop": str(done.folder), "taste": taste.name, "prompts": len(requests),
              "runs": {"sft": str(sft_dir), "reward": str(reward_dir), "loop_reward": str(loop_reward)},
              "utility": {k: mean_utility(requests, texts, taste.name) for k, texts in answers.items()},
              **{key: mean_scores(run, requests, answers) for key, run in scorers.items()},
              "ppo": {name: {"run": str(run), "flags": VARIANTS.get(name, done.report["config"].get("ppo_args", "")),
                             "budget": budget(run), "wall_s": wall[name], **judged[name]}
                      for name, run in runs.items()},
              "samples": [{"prompt": r, **{k: answers[k][i] for k in answers}} for i, r in enumerate(requests)]}
    # 5. the report
    (out / "ppo_budget.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "ppo_budget.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    entry_point(main)
