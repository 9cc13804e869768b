"""Label efficiency of the arena's uncertain choice: reward-model held-out accuracy against the number of votes, for
random and for uncertain pairs, with the scripted annotator (bench.annotator.judge) voting.

    .venv/bin/python -m bench.label_efficiency --out bench/out/label_efficiency        # embedded model: hours, 2 cores
    .venv/bin/python -m bench.label_efficiency --base-model TINY_DIR --device cpu --train-prompts 12 \\
        --eval-prompts 8 --budgets 8,16 --max-new-tokens 16 --forced-choice true --reward-args "--max-steps 4"

The second is the smoke run (~2 min on 2 cores): TINY_DIR is a tiny random model (tests/helpers.py
build_tiny_model), whose numbers only show that the pipeline runs.

1. Candidates: --candidates samples per library request of the train split and two per held-out request, sampled
   once with the arena's Generator and engine: both strategies choose among the same lists, so only the choice
   differs. Each request's lists are appended to --out/candidates.jsonl as they come, so a stopped run resumes its
   sampling and a rerun (another taste, other budgets) samples nothing.
2. Held-out votes: the annotator judges one pair per held-out request. Stored in each strategy's own database they
   never train (library split), and are what the reward model's calibration.json accuracy is measured on.
3. Per strategy, rounds up to each budget: the next requests come from the arena's PromptCycle; random shows two of
   the candidates at random, uncertain the pair core.collect.chooser.most_uncertain_pair picks by the latest reward
   model (random for the first round: no model yet). The annotator votes; a reward model is trained on every vote
   so far (`python -m core train reward --preset quick` plus --reward-args) and its held-out accuracy recorded.
4. Report: label_efficiency.json and .md in --out: accuracy with correct/pairs and its 95 % Wilson interval per
   budget and strategy, how many of the round's votes were decided (a close pair is more often a tie, which trains
   nothing), and the issue's figure: the fewest uncertain votes whose accuracy reaches random's at its largest
   budget, as a share of that budget (goal <= 60 %).
"""
from __future__ import annotations

import json
import random
import shlex
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from bench.annotator import TASTES, Taste, judge, utility
from bench.feedback_ablation import mcnemar_p
from core.collect.chooser import most_uncertain_pair
from core.collect.generate import Generator
from core.collect.library import PromptCycle, load_prompts
from core.config import command_config, knob, parse_config
from core.engine import ENGINES
from core.judge.win_rate import wilson_interval
from core.model import load
from core.records import Generation, Pair, Policy, SamplingSettings, new_id
from core.store.database import Store
from core.train.reward_model import RewardConfig, RewardScorer, held_out_votes, train
from core.train.runs import RunFolder, read_json

STRATEGIES = ("random", "uncertain")


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
    report_only: bool = knob(False, "rewrite the report from --out's label_efficiency.json and databases; train nothing")

    def __post_init__(self):
        self.budgets = sorted(self.budgets)
        if self.candidates < 2 or not self.budgets or self.budgets[0] < 2:
            raise SystemExit("pass --candidates 2 or more and --budgets of 2 votes or more, e.g. 50,100")


def sample_candidates(load_generator, prompts, k: int, sampling: SamplingSettings, seed: int, cache: Path,
                      made_with: dict) -> dict:
    """{prompt_id: k generations}, one batched generate per request. Requests already in `cache` (a JSONL file,
    one line a request) that were `made_with` the same settings are read back; the rest are sampled (the model
    loads only then) and appended as they come."""
    by_id = {p.prompt_id: p for p in prompts}
    rows = [json.loads(line) for line in cache.read_text().splitlines() if line.strip()] if cache.exists() else []
    pool = {r["prompt_id"]: [from_row(by_id[r["prompt_id"]], g) for g in r["lists"]]
            for r in rows if r["prompt_id"] in by_id and len(r["lists"]) == k and r.get("made_with") == made_with}
    todo, generator = [(n, p) for n, p in enumerate(prompts) if p.prompt_id not in pool], None
    for done, (n, prompt) in enumerate(todo, 1):
        generator = generator or load_generator()
        pool[prompt.prompt_id] = generator.generate(prompt, [generator.base_policy] * k, sampling, seed + n)
        with cache.open("a") as f:
            f.write(json.dumps({"prompt_id": prompt.prompt_id, "made_with": made_with,
                                "lists": [to_row(g) for g in pool[prompt.prompt_id]]}) + "\n")
        if done % 24 == 0 or done == len(todo):
            print(f"sampled {k} lists for {done}/{len(todo)} requests", flush=True)
    return pool


def to_row(g: Generation) -> dict:
    """What a cached candidate keeps: how it was made, not its ids (each showing gets fresh ones)."""
    return {"text": g.text, "policy": vars(g.policy), "well_formed": g.well_formed, "n_items": g.n_items,
            "system_prompt": g.system_prompt, "sampling": vars(g.sampling) if g.sampling else None, "seed": g.seed,
            "num_tokens": g.num_tokens, "finished": g.finished, "latency_ms": g.latency_ms}


def from_row(prompt, row: dict) -> Generation:
    return Generation(prompt=prompt, **{**row, "policy": Policy(**row["policy"]),
                                        "sampling": SamplingSettings(**row["sampling"]) if row["sampling"] else None})


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


def run_strategy(cfg: EfficiencyConfig, strategy: str, train_set, eval_set, pool: dict, taste: Taste) -> list[dict]:
    out = Path(cfg.out) / strategy
    shutil.rmtree(out, ignore_errors=True)  # a strategy's votes start from none: an old database would add to them
    out.mkdir(parents=True)
    store, rng, cycle = Store(out / "votes.duckdb"), random.Random(cfg.seed), PromptCycle(train_set, cfg.seed)
    for prompt in eval_set:  # 2. the held-out votes, the same in both databases
        record_vote(store, prompt, *pool[prompt.prompt_id][:2], random.Random(prompt.prompt_id), taste)
    scorer, votes, rows = None, 0, []
    for budget in cfg.budgets:  # 3. rounds
        decided = 0
        while votes < budget:
            prompt = cycle.next()
            candidates = pool[prompt.prompt_id]
            if strategy == "uncertain" and scorer is not None:
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
                     **{key: report.get(key) for key in ("accuracy", "correct", "pairs")}})
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
        cfg = replace(cfg, **{k: v for k, v in saved["config"].items() if k in ("budgets", "taste", "forced_choice")})
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
    pool = {**sample_candidates(load_generator, train_set, cfg.candidates, sampling, cfg.seed,
                                out / "candidates.jsonl", made_with),
            **sample_candidates(load_generator, eval_set, 2, sampling, cfg.seed + 10_000, out / "held_out.jsonl",
                                made_with)}
    loaded.clear()
    rows = []
    for strategy in STRATEGIES:
        rows += run_strategy(cfg, strategy, train_set, eval_set, pool, taste)
        write_report(out, cfg, rows, difficulty(out, taste.name))  # after each strategy, so a run cut short keeps what it measured
    return rows


def chosen_pairs(votes, taste: str) -> dict:
    """How hard the train pairs a strategy showed were for the annotator, by how they were chosen: the mean
    |utility gap| (the annotator's noiseless taste, bench/tastes.py) and how often the vote followed its sign. Close
    pairs are what uncertain choice looks for; for a noisy annotator they are also the least reliable votes."""
    train = votes[(votes.split == "train") & votes.choice.isin(["left", "right"])]
    out = {}
    for chosen_by, group in train.groupby("chosen_by"):
        gaps = [utility(p, l, taste) - utility(p, r, taste)
                for p, l, r in zip(group.prompt, group.left_text, group.right_text)]
        follows = [(g > 0) == (c == "left") for g, c in zip(gaps, group.choice) if g != 0]
        out[chosen_by] = {"votes": len(group), "mean_abs_gap": round(sum(map(abs, gaps)) / len(gaps), 3),
                          "vote_follows_utility": round(sum(follows) / len(follows), 3) if follows else None}
    return out


def votes_needed(rows: list[dict]) -> dict | None:
    """The issue's figure: random's accuracy at its largest budget, and the fewest uncertain votes that reach it
    (None when no uncertain budget does, or a strategy is missing)."""
    by = {s: sorted((r for r in rows if r["strategy"] == s and r["accuracy"] is not None), key=lambda r: r["votes"])
          for s in STRATEGIES}
    if not by["random"] or not by["uncertain"]:
        return None
    target = by["random"][-1]
    reached = next((r for r in by["uncertain"] if r["accuracy"] >= target["accuracy"]), None)
    return {"random_votes": target["votes"], "random_accuracy": target["accuracy"],
            "uncertain_votes": reached["votes"] if reached else None,
            "share": reached["votes"] / target["votes"] if reached else None}


def cell(row: dict | None) -> str:
    if row is None or row["accuracy"] is None:
        return "-"
    low, high = wilson_interval(row["correct"], row["pairs"])
    return (f"{row['accuracy']:.3f} [{low:.3f}, {high:.3f}] ({row['correct']}/{row['pairs']}; "
            f"{row['decided_this_round']} decided of this round's votes)")


def paired(out: Path, budgets: list[int]) -> dict:
    """Per budget, the held-out votes (the same pairs in both databases, matched by their texts) that only the
    uncertain or only the random strategy's reward model ranks right, with the exact McNemar p."""
    result = {}
    for budget in budgets:
        runs = [out / s / f"reward-{budget}" for s in STRATEGIES]
        if not all(RunFolder(r).scores.exists() for r in runs):
            continue
        right = [{k: bool(c) for k, c in zip(zip(h.prompt, h.left_text, h.right_text), h.correct)}
                 for h in (held_out_votes(pd.read_parquet(RunFolder(r).scores)) for r in runs)]
        both = right[0].keys() & right[1].keys()
        only_u = sum(right[1][k] and not right[0][k] for k in both)
        only_r = sum(right[0][k] and not right[1][k] for k in both)
        result[budget] = {"only_uncertain": only_u, "only_random": only_r, "mcnemar_p": round(mcnemar_p(only_u, only_r), 3)}
    return result


def difficulty(out: Path, taste: str) -> dict:
    return {s: chosen_pairs(Store(out / s / "votes.duckdb").votes(), taste) for s in STRATEGIES
            if (out / s / "votes.duckdb").exists()}


def write_report(out: Path, cfg: EfficiencyConfig, rows: list[dict], pairs: dict | None = None) -> str:
    need, pairs_by_budget = votes_needed(rows), paired(out, cfg.budgets)
    lines = ["Reward-model held-out accuracy [95 % Wilson] (correct/held-out pairs)", "",
             "| votes | " + " | ".join(STRATEGIES) + " | right only with uncertain / only with random (McNemar p) |",
             "|---|" + "---|" * (len(STRATEGIES) + 1)]
    for budget in cfg.budgets:
        d = pairs_by_budget.get(budget)
        lines.append(f"| {budget} | " + " | ".join(
            cell(next((r for r in rows if r["strategy"] == s and r["votes"] == budget), None)) for s in STRATEGIES)
            + " | " + (f"{d['only_uncertain']} / {d['only_random']} (p = {d['mcnemar_p']:.2f})" if d else "-") + " |")
    if need:
        lines += ["", f"random reaches {need['random_accuracy']:.3f} with {need['random_votes']} votes; uncertain "
                  + (f"reaches it with {need['uncertain_votes']} ({need['share']:.0%} of them; goal <= 60 %)"
                     if need["uncertain_votes"] else "does not reach it at any budget")]
    for strategy, by in (pairs or {}).items():
        lines += [""] if strategy == STRATEGIES[0] else []
        lines += [f"{strategy} train votes chosen by {how}: {d['votes']}, mean |utility gap| {d['mean_abs_gap']:.2f}, "
                  "vote follows the utility " + ("-" if d["vote_follows_utility"] is None else
                                                 f"{d['vote_follows_utility']:.0%}") for how, d in by.items()]
    text = "\n".join(lines) + "\n"
    (out / "label_efficiency.json").write_text(json.dumps({"config": vars(cfg), "rows": rows, "votes_needed": need,
                                                           "paired": pairs_by_budget, "chosen_pairs": pairs}, indent=2) + "\n")
    (out / "label_efficiency.md").write_text(text)
    print(text, flush=True)
    return text

if __name__ == "__main__":
    main()
