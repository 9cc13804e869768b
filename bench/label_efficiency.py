"""Label efficiency of active choice: reward-model held-out accuracy against the number of votes, for random pairs
and for the arena's uncertain or the informative (optimal design) choice, with the scripted annotator voting.

    .venv/bin/python -m bench.label_efficiency --out bench/out/label_efficiency        # embedded model: hours, 2 cores
    .venv/bin/python -m bench.label_efficiency --strategies random,informative --candidates 8 \\
        --candidates-from models/runs/REJECTION_RUN --held-out-from bench/out/REJUDGE/rejudge.json   # a policy's lists
    .venv/bin/python -m bench.label_efficiency --base-model TINY_DIR --device cpu --train-prompts 12 \\
        --eval-prompts 8 --budgets 8,16 --max-new-tokens 16 --forced-choice true --reward-args "--max-steps 4"

The second is the smoke run (~2 min on 2 cores): TINY_DIR is a tiny random model (tests/helpers.py
build_tiny_model), whose numbers only show that the pipeline runs.

1. Candidates: --candidates samples per library request of the train split and two per held-out request, sampled
   once with the arena's Generator and engine: every strategy chooses among the same lists, so only the choice
   differs. Each request's lists are appended to --out/candidates.jsonl as they come, so a stopped run resumes its
   sampling and a rerun (another taste, other budgets) samples nothing. Or a tuned policy's lists, as the arena
   shows them in a later round: --candidates-from a rejection run's samples (its first --candidates draws a
   request) and --held-out-from a bench/rejudge.py report (its reference policy's first two draws).
2. Held-out votes: the annotator judges one pair per held-out request. Stored in each strategy's own database they
   never train (library split), and are what the reward model's calibration.json accuracy is measured on.
3. Per strategy, rounds up to each budget: the next requests come from the arena's PromptCycle; random shows two of
   the candidates at random, uncertain the pair core.collect.chooser.most_uncertain_pair picks by the latest reward
   model (random for the first round: no model yet). Informative chooses the request too: the round's votes are
   the greedy optimal design over every train request's candidate pairs (core/collect/design.py) in the frozen base
   model's features, computed once, so it needs no reward model and chooses from the first vote. The annotator
   votes; a reward model is trained on every vote so far (`python -m core train reward --preset quick` plus
   --reward-args) and its held-out accuracy recorded.
4. Report: label_efficiency.json and .md in --out: accuracy with correct/pairs and its 95 % Wilson interval per
   budget and strategy, how many of the round's votes were decided (a close pair is more often a tie, which trains
   nothing), and the issue's figure per chooser: the fewest of its votes whose accuracy reaches random's at its
   largest budget, as a share of that budget (goal <= 60 %).
"""
from __future__ import annotations

import json
import random
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from bench.annotator import TASTES, Taste, judge, utility
from bench.candidate_pool import base_features, imported_candidates, sample_candidates
from bench.feedback_ablation import mcnemar_p
from core.collect.chooser import most_uncertain_pair
from core.collect.design import informative_pairs, pair_differences
from core.collect.generate import Generator
from core.collect.library import PromptCycle, load_prompts
from core.config import command_config, knob, parse_config
from core.engine import ENGINES
from core.model import load
from core.records import Pair, SamplingSettings, new_id
from core.runs import RunFolder, read_json
from core.store.database import Store
from core.train.reward_model import RewardConfig, RewardScorer, held_out_votes, train
from core.win_rate import wilson_interval

STRATEGIES = ("random", "uncertain", "informative", "informative-unit")
# what makes two runs' rows comparable: a rerun with these the same keeps the strategies it finished
SAME_RUN = ("taste", "forced_choice", "budgets", "candidates", "train_prompts", "eval_prompts", "max_new_tokens",
            "base_model", "engine", "reward_args", "seed", "candidates_from", "held_out_from")


@dataclass
class EfficiencyConfig:
    out: str = knob("bench/out/label_efficiency", "folder for the databases, the reward runs and the report")
    base_model: str = knob("", "base model that samples the lists and under the reward models; empty: the embedded")
    device: str = knob("auto", "where to sample and train: auto, cpu or cuda", choices=("auto", "cpu", "cuda"))
    engine: str = knob("auto", "sampling engine, as the arena's --engine (auto: llama.cpp, else int8, on a CPU)",
                       choices=ENGINES)
    candidates: int = knob(4, "samples per train request that a pair is chosen from (the arena's --candidates)")
    train_prompts: int = knob(288, "library train requests to sample candidates for (288: all)")
    eval_prompts: int = knob(72, "held-out library requests, one judged pair each (72: all)")
    budgets: list[int] = knob([50, 100, 200, 300], "vote counts at which a reward model is trained and measured")
    max_new_tokens: int = knob(160, "token budget per list (the arena's default)")
    taste: str = knob("form", "the scripted annotator's taste", choices=tuple(TASTES))
    forced_choice: bool = knob(False, "never tie or both bad (every vote trains)")
    reward_args: str = knob("", "extra flags for the reward model, as `python -m core train reward` takes them")
    seed: int = knob(0, "seed of the sampling, the annotator and the random choice")
    strategies: list[str] = knob(["random", "uncertain"], "how pairs are chosen, compared with random: "
                                 + ", ".join(STRATEGIES))
    candidates_from: str = knob("", "a rejection run whose samples are the train candidates (empty: sample the base)")
    held_out_from: str = knob("", "a bench/rejudge.py report whose reference policy's lists are the held-out pairs")
    report_only: bool = knob(False, "rewrite the report from --out's label_efficiency.json and databases; "
                             "train nothing")

    def __post_init__(self):
        self.budgets = sorted(self.budgets)
        if self.candidates < 2 or not self.budgets or self.budgets[0] < 2:
            raise SystemExit("pass --candidates 2 or more and --budgets of 2 votes or more, e.g. 50,100")
        if "random" not in self.strategies or not set(self.strategies) <= set(STRATEGIES):
            raise SystemExit(f"pass --strategies random and any of {', '.join(STRATEGIES[1:])}, e.g. random,uncertain")
        if bool(self.candidates_from) != bool(self.held_out_from):
            raise SystemExit("pass --candidates-from and --held-out-from together (one policy's lists), or neither")


def informative_round(features: dict, prompts, pool: dict, shown: set, n: int, unit: bool = False) -> list[tuple]:
    """The next n votes as (prompt, i, j, dᵀV⁻¹d): the greedy optimal design over every train request's candidate
    pairs not shown yet, V from the pairs shown so far (`shown`: (prompt_id, i, j))."""
    rows = [(p, i) for p in prompts for i in range(len(pool[p.prompt_id]))]  # one row per candidate
    matrix = np.concatenate([features[p.prompt_id] for p in prompts])  # (N, H)
    start = np.cumsum([0] + [len(pool[p.prompt_id]) for p in prompts])
    groups = [list(range(start[k], start[k + 1])) for k in range(len(prompts))]

    def allowed(a: int, b: int) -> bool:
        (p, i), (_, j) = rows[a], rows[b]
        return pool[p.prompt_id][i].text != pool[p.prompt_id][j].text and (p.prompt_id, i, j) not in shown

    diffs, pairs = pair_differences(matrix, groups, allowed)
    index = {(p.prompt_id, i): r for r, (p, i) in enumerate(rows)}
    voted = [matrix[index[(pid, i)]] - matrix[index[(pid, j)]] for pid, i, j in shown if (pid, i) in index]
    picks = informative_pairs(diffs, np.array(voted).reshape(-1, matrix.shape[1]), n,
                              groups=[rows[a][0].prompt_id for a, _ in pairs], unit=unit)
    return [(rows[pairs[r][0]][0], rows[pairs[r][0]][1], rows[pairs[r][1]][1], value) for r, value in picks]


def record_vote(store: Store, prompt, left, right, rng, taste, chosen_by="random", p_left=None) -> str:
    """Store the pair (fresh generation ids: a candidate may be shown twice) and the annotator's vote on it."""
    left, right = (replace(g, generation_id=new_id()) for g in (left, right))
    pair = Pair(prompt, left, right, chosen_by=chosen_by, predicted_p_left=p_left)
    store.record_pair(pair)
    choice, strength = judge(prompt.text, left.text, right.text, rng, taste)
    store.record_vote(pair.pair_id, choice, "scripted", strength)
    return choice


def train_reward(cfg: EfficiencyConfig, db: Path, run_dir: Path) -> dict:
    """A reward model on every vote in `db`, configured as its CLI would be; returns its calibration.json."""
    argv = ["--preset", "quick", "--db", str(db), "--output-dir", str(run_dir), "--device", cfg.device,
            "--seed", str(cfg.seed), *(["--base-model", cfg.base_model] if cfg.base_model else []),
            *shlex.split(cfg.reward_args)]
    return read_json(RunFolder(train(parse_config(RewardConfig, argv))).calibration)


def run_strategy(cfg: EfficiencyConfig, strategy: str, train_set, eval_set, pool: dict, taste: Taste,
                 features: dict | None = None) -> list[dict]:
    out = Path(cfg.out) / strategy
    shutil.rmtree(out, ignore_errors=True)  # a strategy's votes start from none: an old database would add to them
    out.mkdir(parents=True)
    store, rng, cycle = Store(out / "votes.duckdb"), random.Random(cfg.seed), PromptCycle(train_set, cfg.seed)
    for prompt in eval_set:  # 2. the held-out votes, the same in both databases
        record_vote(store, prompt, *pool[prompt.prompt_id][:2], random.Random(prompt.prompt_id), taste)
    scorer, votes, rows, shown = None, 0, [], set()
    for budget in cfg.budgets:  # 3. rounds
        decided, started = 0, time.monotonic()
        planned = iter(informative_round(features, train_set, pool, shown, budget - votes, strategy.endswith("-unit"))
                       if strategy.startswith("informative") else ())
        while votes < budget:
            pick = next(planned, None)
            prompt = pick[0] if pick else cycle.next()
            candidates = pool[prompt.prompt_id]
            if pick:
                _, i, j, _ = pick
                shown.add((prompt.prompt_id, i, j))
                if rng.random() < 0.5:
                    i, j = j, i
                choice = record_vote(store, prompt, candidates[i], candidates[j], rng, taste, strategy)
            elif strategy == "uncertain" and scorer is not None:
                scores = scorer.score([prompt.text] * len(candidates), [g.text for g in candidates])
                i, j, p_left = most_uncertain_pair(scores, lambda a, b: candidates[a].text != candidates[b].text)
                if rng.random() < 0.5:
                    i, j, p_left = j, i, 1 - p_left
                choice = record_vote(store, prompt, candidates[i], candidates[j], rng, taste, "uncertain", p_left)
            else:
                choice = record_vote(store, prompt, *rng.sample(candidates, 2), rng, taste)
            votes, decided = votes + 1, decided + (choice in ("left", "right"))
        run_dir = out / f"reward-{budget}"
        report = train_reward(cfg, out / "votes.duckdb", run_dir)
        scorer = RewardScorer.from_folder(run_dir, cfg.device) if strategy == "uncertain" else None
        rows.append({"strategy": strategy, "votes": votes, "decided_this_round": decided,
                     **{key: report.get(key) for key in ("accuracy", "correct", "pairs")},
                     "wall_s": round(time.monotonic() - started)})  # the round's choosing, voting and training
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    cfg = command_config(EfficiencyConfig, sys.argv[1:] if argv is None else argv,
                         prog="python -m bench.label_efficiency", description=__doc__.split("\n")[0])
    out = Path(cfg.out)
    if cfg.report_only:
        if not (out / "label_efficiency.json").is_file():
            raise SystemExit(f"{out} holds no label_efficiency.json: pass the --out of a finished run.")
        saved = json.loads((out / "label_efficiency.json").read_text())
        # the run's own budgets and taste, not this command line's defaults
        cfg = replace(cfg, **{k: v for k, v in saved["config"].items()
                              if k in ("budgets", "taste", "forced_choice", "strategies")})
        write_report(out, cfg, saved["rows"], difficulty(out, cfg.taste))
        return saved["rows"]
    out.mkdir(parents=True, exist_ok=True)
    taste = Taste(forced_choice=cfg.forced_choice, name=cfg.taste)
    train_set = load_prompts(split="train")[:cfg.train_prompts]
    eval_set = load_prompts(split="eval")[:cfg.eval_prompts]
    # 1. candidates, sampled once for both strategies
    loaded = []  # the model loads once, and only if some request is not in the caches
    def load_generator():
        if not loaded:
            loaded.append(Generator(load(cfg.base_model or None, None if cfg.device == "auto" else cfg.device,
                                         cfg.engine)))
        return loaded[0]
    sampling = SamplingSettings(max_new_tokens=cfg.max_new_tokens)
    made_with = {"base_model": cfg.base_model, "engine": cfg.engine, "max_new_tokens": cfg.max_new_tokens,
                 "seed": cfg.seed}
    if cfg.candidates_from:
        pool = imported_candidates(cfg.candidates_from, cfg.held_out_from, cfg.candidates, train_set, eval_set)
    else:
        pool = {**sample_candidates(load_generator, train_set, cfg.candidates, sampling, cfg.seed,
                                    out / "candidates.jsonl", made_with),
                **sample_candidates(load_generator, eval_set, 2, sampling, cfg.seed + 10_000,
                                    out / "held_out.jsonl", made_with)}
    loaded.clear()
    features = (base_features(cfg.base_model, cfg.device, train_set, pool, out)
                if any(s.startswith("informative") for s in cfg.strategies) else None)
    rows, finished = [], finished_rows(out, cfg)
    for strategy in cfg.strategies:
        if strategy in finished:  # the same run's settings: its votes and reward models stand
            print(f"{strategy}: kept from {out / 'label_efficiency.json'}", flush=True)
            rows += finished[strategy]
            continue
        rows += run_strategy(cfg, strategy, train_set, eval_set, pool, taste, features)
        # after each strategy, so a run cut short keeps what it measured
        write_report(out, cfg, rows, difficulty(out, taste.name))
    return rows


def finished_rows(out: Path, cfg: EfficiencyConfig) -> dict:
    """{strategy: rows} that an earlier run in `out` with the same SAME_RUN settings finished at every budget (its
    reward models on disk), so a rerun that adds a strategy trains only that one."""
    saved = json.loads((out / "label_efficiency.json").read_text()) if (out / "label_efficiency.json").is_file() else {}
    if not saved or any(saved["config"].get(k) != vars(cfg)[k] for k in SAME_RUN):
        return {}
    by = {s: [r for r in saved["rows"] if r["strategy"] == s] for s in STRATEGIES}
    return {s: rows for s, rows in by.items() if [r["votes"] for r in rows] == cfg.budgets
            and all((out / s / f"reward-{b}" / "calibration.json").is_file() for b in cfg.budgets)}


def chosen_pairs(votes, taste: str) -> dict:
    """How hard the train pairs a strategy showed were for the annotator, by how they were chosen: the mean
    |utility gap| (the annotator's noiseless taste, bench/tastes.py) and how often the vote followed its sign. Close
    pairs are what uncertain choice looks for; for a noisy annotator they are also the least reliable votes."""
    train = votes[(votes.split == "train") & votes.choice.isin(["left", "right"])]
    return {chosen_by: closeness(group, taste) for chosen_by, group in train.groupby("chosen_by")}


def closeness(votes, taste: str) -> dict:
    """Decided votes' mean |utility gap| and the share that follow the gap's sign, of those whose utilities differ."""
    gaps = [utility(p, l, taste) - utility(p, r, taste) for p, l, r in zip(votes.prompt, votes.left_text,
                                                                          votes.right_text)]
    follows = [(g > 0) == (c == "left") for g, c in zip(gaps, votes.choice) if g != 0]
    return {"votes": len(votes), "mean_abs_gap": round(sum(map(abs, gaps)) / len(gaps), 3),
            "vote_follows_utility": round(sum(follows) / len(follows), 3) if follows else None,
            "utilities_differ": len(follows)}


def votes_needed(rows: list[dict], strategy: str = "uncertain") -> dict | None:
    """The issue's figure: random's accuracy at its largest budget, and the fewest of `strategy`'s votes that reach
    it (None when none of its budgets does, or a strategy is missing)."""
    by = {s: sorted((r for r in rows if r["strategy"] == s and r["accuracy"] is not None), key=lambda r: r["votes"])
          for s in ("random", strategy)}
    if not by["random"] or not by[strategy]:
        return None
    target = by["random"][-1]
    reached = next((r for r in by[strategy] if r["accuracy"] >= target["accuracy"]), None)
    return {"random_votes": target["votes"], "random_accuracy": target["accuracy"],
            "votes": reached["votes"] if reached else None,
            "share": reached["votes"] / target["votes"] if reached else None}


def cell(row: dict | None) -> str:
    if row is None or row["accuracy"] is None:
        return "-"
    low, high = wilson_interval(row["correct"], row["pairs"])
    return (f"{row['accuracy']:.3f} [{low:.3f}, {high:.3f}] ({row['correct']}/{row['pairs']}; "
            f"{row['decided_this_round']} decided of this round's votes)")


def paired(out: Path, budgets: list[int], strategy: str = "uncertain") -> dict:
    """Per budget, the held-out votes (the same pairs in both databases, matched by their texts) that only
    `strategy`'s or only the random strategy's reward model ranks right, with the exact McNemar p."""
    result = {}
    for budget in budgets:
        runs = [out / s / f"reward-{budget}" for s in ("random", strategy)]
        if not all(RunFolder(r).scores.exists() for r in runs):
            continue
        right = [{k: bool(c) for k, c in zip(zip(h.prompt, h.left_text, h.right_text), h.correct)}
                 for h in (held_out_votes(pd.read_parquet(RunFolder(r).scores)) for r in runs)]
        both = right[0].keys() & right[1].keys()
        only_u = sum(right[1][k] and not right[0][k] for k in both)
        only_r = sum(right[0][k] and not right[1][k] for k in both)
        result[budget] = {f"only_{strategy}": only_u, "only_random": only_r,
                          "mcnemar_p": round(mcnemar_p(only_u, only_r), 3)}
    return result


def difficulty(out: Path, taste: str) -> dict:
    """chosen_pairs per strategy, and under "held out" the held-out votes' closeness (the same in every database):
    whether the annotator's held-out votes are learnable at all."""
    found = {s: Store(out / s / "votes.duckdb").votes() for s in STRATEGIES if (out / s / "votes.duckdb").exists()}
    result = {s: chosen_pairs(votes, taste) for s, votes in found.items()}
    if found:
        votes = next(iter(found.values()))
        decided = votes[(votes.split == "eval") & votes.choice.isin(["left", "right"])]
        result["held out"] = {"held out": closeness(decided, taste)}
    return result


def write_report(out: Path, cfg: EfficiencyConfig, rows: list[dict], pairs: dict | None = None) -> str:
    choosers = [s for s in cfg.strategies if s != "random"]
    need = {s: votes_needed(rows, s) for s in choosers}
    by_budget = {s: paired(out, cfg.budgets, s) for s in choosers}
    lines = ["Reward-model held-out accuracy [95 % Wilson] (correct/held-out pairs)", "",
             "| votes | " + " | ".join(cfg.strategies) + " | "
             + " | ".join(f"right only with {s} / only with random (McNemar p)" for s in choosers) + " |",
             "|---|" + "---|" * (len(cfg.strategies) + len(choosers))]
    for budget in cfg.budgets:
        cells = [cell(next((r for r in rows if r["strategy"] == s and r["votes"] == budget), None))
                 for s in cfg.strategies]
        for s in choosers:
            d = by_budget[s].get(budget)
            cells.append(f"{d[f'only_{s}']} / {d['only_random']} (p = {d['mcnemar_p']:.2f})" if d else "-")
        lines.append(f"| {budget} | " + " | ".join(cells) + " |")
    for s, n in need.items():
        if n:
            lines += ["", f"random reaches {n['random_accuracy']:.3f} with {n['random_votes']} votes; {s} "
                      + (f"reaches it with {n['votes']} ({n['share']:.0%} of them; goal <= 60 %)"
                         if n["votes"] else "does not reach it at any budget")]
    target = next((r for r in rows if r["strategy"] == "random" and r["votes"] == cfg.budgets[-1]), None)
    if target and target["pairs"] and wilson_interval(target["correct"], target["pairs"])[0] <= 0.5:
        lines += ["", "random's reward model is not above chance at its largest budget (its 95 % interval holds "
                  "0.5): reaching its accuracy saves nothing, and the figures above say nothing about the goal"]
    for strategy, by in (pairs or {}).items():
        lines += [""] if strategy in (STRATEGIES[0], "held out") else []
        lines += [("held-out votes" if strategy == "held out" else f"{strategy} train votes chosen by {how}")
                  + f": {d['votes']}, mean |utility gap| {d['mean_abs_gap']:.2f}, vote follows the utility "
                  + ("-" if d["vote_follows_utility"] is None else f"{d['vote_follows_utility']:.0%}")
                  + (f" of {d['utilities_differ']} whose utilities differ" if "utilities_differ" in d else "")
                  for how, d in by.items()]
    text = "\n".join(lines) + "\n"
    (out / "label_efficiency.json").write_text(json.dumps(
        {"config": vars(cfg), "rows": rows, "votes_needed": need, "paired": by_budget, "chosen_pairs": pairs},
        indent=2) + "\n")
    (out / "label_efficiency.md").write_text(text)
    print(text, flush=True)
    return text


if __name__ == "__main__":
    main()
