"""Reward-model ablation: held-out accuracy with each feedback source on and off, on the same feedback.

    .venv/bin/python bench/feedback_ablation.py --out bench/out/ablation [--taste terse] [--prompts 60]
    .venv/bin/python bench/feedback_ablation.py --out ... --variants votes,default     # a subset
    .venv/bin/python bench/feedback_ablation.py --db bench/out/loop/loop.duckdb --taste ontopic --out ...  # a loop's

1. Candidates: the base model samples 4 lists (temperature 1.0) for each of --prompts library train requests and
   for each of the scripted annotator's own requests (bench.annotator.OWN_REQUESTS: custom prompts, which the
   reward stage splits by a hash, half of them held out with --eval-fraction 0.5). Batched; appended to
   --out/candidates.jsonl as they come, so a stopped run resumes and a rerun with other variants samples nothing.
   Cost: about 5 core-seconds a list on the 2-core machines (496 lists: ~20 min on an idle machine).
2. The scripted annotator (bench/annotator.py, --taste; its own checks, not the product's) gives every kind of
   feedback, written into a fresh DuckDB through the Store exactly as the arena writes it:
   - a vote on lists (1, 2) and (3, 4) of each request, and on all 6 pairs of a held-out request (more held-out
     votes, so the accuracy means something; held-out feedback never trains, whatever the variant);
   - stars for both lists of a share --rate of the voted pairs: the list's utility quintile over all candidates
     (1-5), off by one star with the vote's slip probability;
   - an edit of the list it voted for, when its taste likes the edit better (at most --edits);
   - for a "both bad" vote, its edit of the better of the two lists (at most --both-bad-edits): the list it would
     write for that request.
3. `python -m core train reward --preset quick` per variant on the same database and seed: votes only; votes plus
   one source; the default (edits, both-bad, ratings); the default plus ties.
4. A table: held-out accuracy with counts and 95 % Wilson intervals, training pairs from each source, wall time,
   and, since every variant is judged on the same held-out votes, a paired comparison with the votes-only variant:
   how many held-out pairs only one of the two gets right, and the exact McNemar (two-sided binomial) p-value;
   under the table the same for default+ties against default, the comparison a tie model is kept or dropped by.
   Printed, and written to --out/ablation.json and --out/ablation.md. --report-only rebuilds them from the runs
   already in --out (a stopped run's finished variants).
--db skips steps 1-2 and trains the variants on the feedback in a database already voted (a copy of it: a loop's
loop.duckdb, whose held-out votes are the same hash split of the annotator's own requests as the loop's reward
stage uses); --taste should name the taste that voted there, for the report.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import shlex
import shutil
import time
from datetime import datetime
from itertools import combinations
from pathlib import Path

from bench.annotator import (
    OWN_REQUESTS,
    TASTES,
    Taste,
    demonstration_for,
    judge,
    repair,
    stars_for,
    utility,
)
from bench.loop import entry_point, run_stage
from core.collect.library import load_prompts
from core.lists import parse_list
from core.records import Generation, Pair, Policy, Prompt, SamplingSettings
from core.runs import RunFolder, read_json, read_status
from core.store.database import Store
from core.train.reward_model import held_out_votes
from core.train.snapshot import split_for
from core.win_rate import wilson_interval

SOURCES = {"edits": "--from-edits", "both_bad": "--from-both-bad", "ratings": "--from-ratings", "ties": "--from-ties"}
VARIANTS = {"votes": (), "+edits": ("edits",), "+both_bad": ("both_bad",), "+ratings": ("ratings",),
            "+ties": ("ties",), "default": ("edits", "both_bad", "ratings"),
            "default+ties": ("edits", "both_bad", "ratings", "ties")}
EVAL_FRACTION = 0.5
CANDIDATES = 4


def candidates(out: Path, prompts: list[Prompt], base_model: str | None, seed: int) -> dict[str, list[str]]:
    """request text -> CANDIDATES sampled lists. Each request's lists are appended to out/candidates.jsonl as soon
    as they are sampled (16 requests per batch of calls), so a stopped run resumes where it was."""
    cache = out / "candidates.jsonl"
    lists = {row["prompt"]: row["lists"] for row in map(json.loads, cache.read_text().splitlines())} \
        if cache.exists() else {}
    todo = [p for p in prompts if p.text not in lists]
    if not todo:
        return lists
    from core.collect.generate import complete
    from core.model import load

    loaded, started = load(base_model), time.perf_counter()
    for n in range(0, len(todo), 16):
        chunk = todo[n:n + 16]
        requests = [p.text for p in chunk for _ in range(CANDIDATES)]
        texts = [c.text for c in complete(loaded.model, loaded.tokenizer, requests,
                                          SamplingSettings(temperature=1.0), seed + n)]
        with cache.open("a") as f:
            for k, prompt in enumerate(chunk):
                lists[prompt.text] = texts[k * CANDIDATES:(k + 1) * CANDIDATES]
                f.write(json.dumps({"prompt": prompt.text, "lists": lists[prompt.text]}) + "\n")
        print(f"sampled lists for {n + len(chunk)}/{len(todo)} requests in {time.perf_counter() - started:.0f} s",
              flush=True)
    return lists


def annotate(store: Store, prompts: list[Prompt], lists: dict[str, list[str]], taste: Taste, rate: float,
             edits: int, both_bad_edits: int, seed: int) -> dict:
    """Every kind of feedback on the candidates (see step 2 of the module docstring); returns counts."""
    rng, policy = random.Random(seed), Policy(base_model="base")
    every = sorted(utility(p.text, t, taste.name) for p in prompts for t in lists[p.text])
    cutoffs = [every[len(every) * q // 5] for q in (1, 2, 3, 4)]
    counts = dict.fromkeys(["left", "right", "tie", "both_bad", "ratings", "edits", "both_bad_edits"], 0)
    for prompt in prompts:
        def shown_list(text: str) -> Generation:  # a list shown in two pairs of its request is stored twice
            parsed = parse_list(text)
            return Generation(prompt=prompt, text=text, policy=policy, well_formed=parsed.well_formed,
                              n_items=len(parsed.items))
        texts = lists[prompt.text]
        held_out = prompt.source == "custom" and split_for(prompt.prompt_id, None, EVAL_FRACTION) == "eval"
        for i, j in [(0, 1), (2, 3)] if not held_out else list(combinations(range(CANDIDATES), 2)):
            i, j = (i, j) if rng.random() < 0.5 else (j, i)  # sides shuffled, as the arena does
            pair = Pair(prompt=prompt, left=shown_list(texts[i]), right=shown_list(texts[j]))
            store.record_pair(pair)
            choice, strength = judge(prompt.text, pair.left.text, pair.right.text, rng, taste)
            store.record_vote(pair.pair_id, choice, "scripted", strength=strength)
            counts[choice] += 1
            if rng.random() < rate:
                for g in (pair.left, pair.right):
                    stars = stars_for(utility(prompt.text, g.text, taste.name), cutoffs)
                    if rng.random() < taste.slip:
                        stars = min(5, max(1, stars + rng.choice([-1, 1])))
                    store.record_rating(g.generation_id, stars, "scripted")
                    counts["ratings"] += 1
            winner = {"left": pair.left, "right": pair.right}.get(choice)
            if winner is not None and counts["edits"] < edits:
                fixed = demonstration_for(prompt.text, winner.text, taste)
                if fixed:
                    store.record_demonstration(prompt, fixed, "scripted", edited_from_generation_id=winner.generation_id)
                    counts["edits"] += 1
            if choice == "both_bad" and counts["both_bad_edits"] < both_bad_edits:
                better = max((pair.left, pair.right), key=lambda g: utility(prompt.text, g.text, taste.name))
                fixed = repair(better.text, prompt.text, taste.name)
                if fixed:
                    store.record_demonstration(prompt, fixed, "scripted", edited_from_generation_id=better.generation_id)
                    counts["both_bad_edits"] += 1
    return counts


def row_of(out: Path, name: str, seconds: float | None = None) -> dict:
    """A finished variant's row, read from its run folder."""
    run = out / "runs" / name.replace("+", "plus_")
    report, lineage = read_json(run / "calibration.json"), read_json(run / "data" / "lineage.json")
    low, high = wilson_interval(report["correct"], report["pairs"])
    if seconds is None:  # a run kept from an earlier invocation: its wall time from its own status
        status = read_status(run)
        if status.get("started_at") and status.get("updated_at"):
            seconds = (datetime.fromisoformat(status["updated_at"]) - datetime.fromisoformat(status["started_at"])
                       ).total_seconds()
    return {"variant": name, "sources": list(VARIANTS[name]), "accuracy": report["accuracy"],
            "correct": report["correct"], "held_out_pairs": report["pairs"], "ci95": [round(low, 3), round(high, 3)],
            "train_pairs": lineage["train_pairs"], "seconds": None if seconds is None else round(seconds),
            **{k: v for k, v in lineage.items() if k.startswith("pairs_from_")}}


def train_variant(out: Path, db: Path, name: str, sources: tuple[str, ...], base_model: str | None,
                  extra: list[str]) -> dict:
    run = out / "runs" / name.replace("+", "plus_")
    if (run / "calibration.json").exists():  # trained by an earlier run on the same feedback: kept, not retrained
        print(f"{name}: kept the finished run in {run}", flush=True)
        return row_of(out, name)
    flags = [x for source, flag in SOURCES.items() for x in (flag, "true" if source in sources else "false")]
    command = ["core", "train", "reward", "--preset", "quick", "--db", str(db), "--eval-fraction",
               str(EVAL_FRACTION), "--output-dir", str(run), *flags, *extra]
    if base_model:
        command += ["--base-model", base_model]
    return row_of(out, name, run_stage(run.name, command, out))


def held_out_correct(run: Path) -> dict[tuple[str, str, str], bool]:
    """(request, left list, right list) -> whether the run's reward model ranks that held-out left/right vote
    right. Keyed by the texts, not the comparison id: a rerun annotates afresh (new ids, the same votes)."""
    import pandas as pd

    return correct_by_texts(held_out_votes(pd.read_parquet(RunFolder(run).scores)))


def correct_by_texts(scored) -> dict[tuple[str, str, str], bool]:
    """(request, left list, right list) -> `correct`, for scored decided votes (core.train.reward_model.score_votes)."""
    return dict(zip(zip(scored.prompt, scored.left_text, scored.right_text), scored.correct.astype(bool)))


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar test: the binomial probability of a split this uneven among the discordant pairs."""
    n = only_a + only_b
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2 ** n if n else 1.0
    return min(1.0, 2 * tail)


def discordant(mine: dict, reference: dict) -> dict:
    """Held-out pairs only `mine` ranks right, only `reference` does, and the exact McNemar p of that split."""
    both = reference.keys() & mine.keys()
    gain = sum(mine[c] and not reference[c] for c in both)
    loss = sum(reference[c] and not mine[c] for c in both)
    return {"only_this_right": gain, "only_votes_right": loss, "mcnemar_p": round(mcnemar_p(gain, loss), 3)}


def paired(rows: list[dict], out: Path) -> None:
    """Adds each row's paired comparison with the votes-only variant (same held-out pairs), in place; and ties'
    own question, default + ties against default (the row the tie model is kept or dropped by), as `vs_default`."""
    runs = {r["variant"]: out / "runs" / r["variant"].replace("+", "plus_") for r in rows}
    if "votes" in runs:
        reference = held_out_correct(runs["votes"])
        for r in rows:
            r["vs_votes"] = discordant(held_out_correct(runs[r["variant"]]), reference)
    if {"default", "default+ties"} <= runs.keys():
        row = next(r for r in rows if r["variant"] == "default+ties")
        row["vs_default"] = discordant(held_out_correct(runs["default+ties"]), held_out_correct(runs["default"]))


def table(rows: list[dict], counts: dict, taste: str) -> str:
    lines = [f"Reward-model ablation, taste `{taste}`: {counts}", "",
             "| variant | held-out accuracy [95 % Wilson] | train pairs (all pairs from votes / edits / both-bad / ratings / ties) "
             "| vs votes only: right only here / only there (McNemar p) | s |",
             "|---|---|---|---|---|"]
    for r in rows:
        by_source = " / ".join(str(r.get(f"pairs_from_{s}", 0)) for s in ("votes", "edits", "both_bad", "ratings",
                                                                         "ties"))
        v = r.get("vs_votes")
        vs = "-" if not v or r["variant"] == "votes" else \
            f"{v['only_this_right']} / {v['only_votes_right']} (p = {v['mcnemar_p']:.2f})"
        lines.append(f"| {r['variant']} | {r['accuracy']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] "
                     f"({r['correct']}/{r['held_out_pairs']}) | {r['train_pairs']} ({by_source}) | {vs} | {'-' if r['seconds'] is None else r['seconds']} |")
    if d := next((r["vs_default"] for r in rows if "vs_default" in r), None):
        lines += ["", f"default+ties against default: right only with ties {d['only_this_right']} / only without "
                      f"{d['only_votes_right']} (p = {d['mcnemar_p']:.2f})"]
    return "\n".join(lines)


def copy_feedback(source: Path, db: Path) -> dict:
    """Step 1-2 for --db: a copy of `source` at `db` (the variants' runs never touch the loop's own database), and
    its counts."""
    for suffix in ("", ".wal"):  # DuckDB's write-ahead log, where a write was not yet checkpointed
        if Path(f"{source}{suffix}").exists():
            shutil.copyfile(f"{source}{suffix}", f"{db}{suffix}")
    return Store(db).counts()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="bench/out/ablation")
    parser.add_argument("--taste", default="terse", choices=sorted(TASTES))
    parser.add_argument("--prompts", type=int, default=60, help="library train requests")
    parser.add_argument("--rate", type=float, default=0.3, help="share of voted pairs whose lists get stars")
    parser.add_argument("--edits", type=int, default=30)
    parser.add_argument("--both-bad-edits", type=int, default=30)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--base-model", default=None)
    parser.add_argument("--reward-args", default="", help="extra flags for every `train reward`")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report-only", action="store_true", help="rebuild the table from the runs in --out")
    parser.add_argument("--db", default="", help="train on the feedback in this database (e.g. a loop's) instead "
                                                 "of steps 1-2")
    args = parser.parse_args(argv)
    if args.db and not Path(args.db).is_file():
        parser.error(f"--db {args.db}: no such database; pass a loop's loop.duckdb (or leave --db out).")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:  # the taste the runs were voted with, not this command line's default
        taste = read_json(out / "ablation.json").get("taste", args.taste)  # read_json: {} for a missing file
        return report(out, None, [row_of(out, name) for name in args.variants.split(",")
                                  if (out / "runs" / name.replace("+", "plus_") / "calibration.json").exists()],
                      taste)
    db = out / "ablation.duckdb"
    db.unlink(missing_ok=True)
    Path(f"{db}.wal").unlink(missing_ok=True)
    if args.db:
        counts = copy_feedback(Path(args.db), db)
    else:
        library = random.Random(args.seed).sample(load_prompts(split="train"), args.prompts)
        prompts = library + [Prompt(text=t, source="custom") for t in OWN_REQUESTS]
        lists = candidates(out, prompts, args.base_model, args.seed)
        counts = annotate(Store(db), prompts, lists, Taste(name=args.taste), args.rate, args.edits,
                          args.both_bad_edits, args.seed)
    print(counts, flush=True)
    # the taste and counts on disk now: a run stopped before its last variant still reports them (--report-only)
    (out / "ablation.json").write_text(json.dumps({"taste": args.taste, "counts": counts, "rows": []}, indent=2))
    rows = []
    for name in args.variants.split(","):
        rows.append(train_variant(out, db, name, VARIANTS[name], args.base_model, shlex.split(args.reward_args)))
        print(rows[-1], flush=True)
    report(out, counts, rows, args.taste)


def report(out: Path, counts: dict | None, rows: list[dict], taste: str) -> None:
    if counts is None:  # --report-only: the counts the annotator printed are in the database
        counts = read_json(out / "ablation.json").get("counts") or "(see run.log)"
    paired(rows, out)
    text = table(rows, counts, taste)
    (out / "ablation.json").write_text(json.dumps({"taste": taste, "counts": counts, "rows": rows}, indent=2))
    (out / "ablation.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    entry_point(main)
