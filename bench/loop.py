"""The whole RLHF loop, end to end through the real interfaces, with a scripted annotator in the person's place.

    .venv/bin/python bench/loop.py --out bench/out/loop                      # 300 votes, quick presets (~2 h on 2 cores)
    .venv/bin/python bench/loop.py --votes 12 --base-model TINY --sft-args "--max-steps 2" ...   # the fast test
    .venv/bin/python bench/loop.py --taste terse --out bench/out/loop-terse     # another annotator's taste

The annotator's taste (--taste, bench/annotator.py TASTES) both casts the votes and judges the answers (steps 2, 6
and 7), so a run measures how well the loop learns that one person; bench/taste_summary.py compares runs.

1. Start the arena (`python -m apps.arena`) on a fresh database in --out and wait until it answers.
2. The scripted annotator (bench/annotator.py) casts --votes votes through gradio_client, a share of them on
   requests of its own (these give the reward model held-out votes), writes a few demonstrations (edits of the
   list it voted for, and lists it wanted after "both bad" votes) and rates both lists of a share --rate of the
   pairs: every kind of feedback the arena takes (--rate 0 --both-bad-demonstrations 0: votes and edits only, as
   loops before 2026-12-07 ran). Stop the arena.
3. `python -m core train sft --preset quick`: the seed lists plus the annotator's demonstrations.
4. `python -m core train reward --preset quick`: its held-out accuracy is against the annotator's held-out votes.
5. `python -m core train ppo --preset quick --sft-adapter SFT --reward-model RM --eval-every K`.
6. The annotator judges PPO's held-out answers at every evaluation against those at step 0 (the policy PPO started
   from): judgements.jsonl in the PPO run, read by core.judge.overoptimisation.curve with the reward-model curve.
7. Base, SFT and PPO answer the held-out requests, sampled as `python -m core eval` samples them (core.judge.evaluate,
   same seed: the same lists and numbers): well-formed rates, reward-model and annotator win rates with 95 %
   Wilson intervals, and how often the reward model agrees with the annotator on those pairs.
8. Report: loop.json, loop.md and loop.html (plotly curves) in --out; stage logs in --out/logs.
Wall time is reported per stage. The 30-minute goal counts the machine's work after the votes (steps 3-7): vote
collection is the person's time, paced by generating pairs (~13 s each here), and is reported on its own.
"""
from __future__ import annotations

import json
import os
import random
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
from bench.annotator import TASTES, Taste, annotate, judge
from bench.loop_report import summarise, write_report
from core.collect.library import load_prompts
from core.config import check, check_flags, command_config, knob
from core.judge.evaluate import EvalConfig, outcome, proportion, sample
from core.lists import parse_list
from core.model import load
from core.records import USER_ERRORS
from core.runs import RunFolder, append_jsonl, read_json, read_jsonl
from core.stages import config_class
from core.store.database import Store
from core.train.reward_model import RewardScorer
from core.win_rate import win_rate


@dataclass
class LoopConfig:
    out: str = knob("bench/out/loop", "folder for the database, logs and the report")
    runs_dir: str = knob("", "where the three run folders go (<stage>-<time>-loop); empty: models/runs")
    base_model: str = knob("", "base model for every stage; empty: the embedded SmolLM2-135M-Instruct")
    votes: int = knob(300, "votes the scripted annotator casts in the arena")
    own_requests: float = knob(0.4, "share of votes on the annotator's own requests (the reward model's held-out)")
    demonstrations: int = knob(10, "edited lists the annotator saves as demonstrations, at most")
    rate: float = knob(0.3, "share of voted pairs whose two lists the annotator also rates (1-5 stars); 0: none")
    both_bad_demonstrations: int = knob(10, "lists the annotator writes after 'both bad' votes, at most")
    forced_choice: bool = knob(False, "forced-choice annotator: never tie or both bad (for a tiny random model)")
    taste: str = knob("form", "the annotator's taste, for its votes, demonstrations and judging: "
                      + "; ".join(f"{name}: {rules.summary}" for name, rules in TASTES.items()),
                      choices=tuple(TASTES))
    preset: str = knob("quick", "preset of every training stage")
    sft_args: str = knob("--eval-prompts 0", "extra flags for `train sft` (its own eval is redundant with step 7)")
    reward_args: str = knob("--eval-fraction 0.5", "extra flags for `train reward` (held-out share of own requests)")
    ppo_args: str = knob("--eval-every 4 --eval-prompts 16", "extra flags for `train ppo` (evaluations: step 6)")
    eval_prompts: int = knob(72, "held-out requests for the final evaluation (at most 72)")
    eval_max_new_tokens: int = knob(160, "token budget per list in the final evaluation (`core eval`'s default)")
    seed: int = knob(0, "seed of the annotator and of the evaluation's sampling and judging")
    reuse_votes: str = knob("", "a previous loop's database (its --out/loop.duckdb): skip steps 1-2 and train on "
                                "the votes the annotator cast there (to re-run the training stages with new settings)")

    def __post_init__(self):
        check(self.votes > 0, "votes must be at least 1, e.g. --votes 300.")
        check(0 <= self.own_requests <= 1, "own-requests is a share between 0 and 1, e.g. --own-requests 0.4.")
        check(0 <= self.rate <= 1, "rate is a share between 0 and 1, e.g. --rate 0.3.")
        check(self.both_bad_demonstrations >= 0, "both-bad-demonstrations must be 0 or more, e.g. 10.")
        check(1 <= self.eval_prompts <= 72, "eval-prompts must be between 1 and 72 (the held-out requests).")
        for stage, extra in (("sft", self.sft_args), ("reward", self.reward_args), ("ppo", self.ppo_args)):
            check_flags(config_class(stage), ["--preset", self.preset, *shlex.split(extra)], f"--{stage}-args")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the arena exited with code {process.returncode}; see its log")
        try:
            urllib.request.urlopen(url + "config", timeout=5)
            return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"the arena did not answer at {url} within {timeout_s:.0f} s")


class StageFailed(RuntimeError):
    """A stage's process exited non-zero; its output is in logs/<name>.log."""

    def __init__(self, name: str, returncode: int, log: Path):
        super().__init__(f"{name} failed (exit {returncode}): see {log}")
        self.returncode = returncode


def entry_point(main) -> None:
    """A benchmark's `__main__`: a stage that fails ends the script with one line naming its log (exit 1), not a
    traceback; the stage's own traceback, if any, is in that log. What core reports to a person as one line (a
    model or adapter that will not load, a bad setting: core.records.USER_ERRORS) ends it the same way."""
    try:
        main()
    except (StageFailed, *USER_ERRORS) as failed:
        raise SystemExit(f"error: {failed}") from None


def run_stage(name: str, args: list[str], logs: Path) -> float:
    """`python -m ARGS` with its output in logs/<name>.log; returns the wall time in seconds."""
    started = time.perf_counter()
    with open(logs / f"{name}.log", "w") as log:
        done = subprocess.run([sys.executable, "-m", *args], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if done.returncode:
        raise StageFailed(name, done.returncode, logs / f"{name}.log")
    return round(time.perf_counter() - started, 1)


def check_variants(loop: str, variants: list[str], known: dict) -> None:
    """A benchmark that trains variants on a finished loop (bench/seed_lists.py, bench/ppo_budget.py) needs the
    loop's folder and variants it knows; otherwise one line saying what to pass."""
    unknown = set(variants) - set(known)
    if not loop or unknown:
        raise SystemExit(f"pass --loop LOOP_DIR and --variants from {', '.join(known)}"
                         + (f" (not {', '.join(sorted(unknown))})" if unknown else ""))


@dataclass
class FinishedLoop:
    """A finished loop's folder as the benchmarks that train variants on it read it."""
    folder: Path
    report: dict  # its loop.json
    out: Path  # where the variants' runs, logs and report go
    base_model: str
    taste: Taste

    def run(self, stage: str) -> Path:
        return Path(self.report["runs"][stage])


def finished_loop(loop: str, out: str, base_model: str) -> FinishedLoop:
    """The loop in folder `loop` (its loop.json names its SFT, reward and PPO runs), the output folder with logs/
    made (`out`, else the loop's folder), and the base model and taste it ran with unless `base_model` says."""
    folder = Path(loop)
    report = read_json(folder / "loop.json")  # {} when there is none
    if not all(report.get("runs", {}).get(stage) for stage in ("sft", "reward", "ppo")):
        raise SystemExit(f"{folder} holds no finished loop (no loop.json naming its runs): pass a bench/loop.py --out.")
    target = Path(out or folder)
    (target / "logs").mkdir(parents=True, exist_ok=True)
    return FinishedLoop(folder, report, target, base_model or report["config"].get("base_model", ""),
                        Taste(name=report["config"].get("taste", "form")))


def held_out_answers(policies: dict[str, str], base_model: str, prompts: int, max_new_tokens: int,
                     seed: int, seeds: dict[str, int] | None = None) -> tuple[list[str], dict[str, list[str]]]:
    """The held-out requests and each policy's answers to them ({label: run folder or "base"}), sampled as
    `python -m core eval` samples them: one base model loaded as it loads it, every adapter on it, one seed (or a
    label's own in `seeds`: bench/best_of_n.py draws one policy several times)."""
    ecfg = EvalConfig(policy="base", base_model=base_model, prompts=prompts, max_new_tokens=max_new_tokens, seed=seed)
    requests = [p.text for p in load_prompts(split="eval")][:ecfg.prompts]
    loaded = load(base_model or None, None, ecfg.engine)
    return requests, {k: [c.text for c in v] for k, v in sample(loaded, policies, requests, ecfg, seeds).items()}


def taste_of_votes(db: Path) -> str | None:
    """The taste that cast a previous loop's votes, from the loop.json beside its database (None if it has none)."""
    report = db.parent / "loop.json"
    return json.loads(report.read_text()).get("config", {}).get("taste", "form") if report.exists() else None


def stored_votes(db: Path) -> dict:
    """The annotator's counts, read back from a database it voted into (for --reuse-votes)."""
    store = Store(db)
    votes = store.votes()
    counts = {c: int((votes.choice == c).sum()) for c in ("left", "right", "tie", "both_bad")}
    return {**counts, "demonstrations": store.counts()["demonstrations"], "votes": len(votes),
            "own_requests": int(votes.split.isna().sum()), "reused_from": str(db)}


def outcomes(requests, texts_a, texts_b, rng, taste) -> list[str]:
    """The annotator's verdict on a (policy, other) pair per request, from the policy's side: tie and both bad are
    ties (counted half). The policy is shown on the left; the taste is symmetric in sides."""
    verdict = {"left": "win", "right": "loss", "tie": "tie", "both_bad": "tie"}
    return [verdict[judge(r, a, b, rng, taste)[0]] for r, a, b in zip(requests, texts_a, texts_b)]


def judge_ppo_evaluations(ppo_dir: Path, taste: Taste, seed: int) -> list[dict]:
    """Step 6: judgements.jsonl, one row per evaluation step: the annotator's win rate of that step's held-out
    answers against the answers at step 0 to the same requests."""
    by_step: dict[int, dict[str, str]] = {}
    folder = RunFolder(ppo_dir)
    for row in read_jsonl(folder.eval_samples):
        by_step.setdefault(row["step"], {})[row["prompt"]] = row["text"]
    reference = by_step.get(0, {})
    rows = []
    for step in sorted(by_step):
        prompts = [p for p in by_step[step] if p in reference]
        result = win_rate(outcomes(prompts, [by_step[step][p] for p in prompts], [reference[p] for p in prompts],
                                   random.Random(seed + step), taste)).as_dict()
        rows.append({"step": step, "reference": "step 0", "judge": f"bench/annotator.py --taste {taste.name}",
                     "win_rate": result.pop("rate"), **result})
    folder.judgements.unlink(missing_ok=True)
    append_jsonl(folder.judgements, rows)
    return rows


def mean_scores(reward_dir: Path | str, requests: list[str], answers: dict[str, list[str]]) -> dict[str, float]:
    """Each policy's mean reward-model score over its held-out answers (bench/rounds.py, bench/ppo_budget.py)."""
    scorer = RewardScorer.from_folder(reward_dir)
    return {k: sum(s := scorer.score(requests, texts)) / len(s) for k, texts in answers.items()}


def evaluate_policies(cfg: LoopConfig, sft_dir: Path, reward_dir: Path, ppo_dir: Path, taste: Taste) -> dict:
    """Step 7: base, SFT and PPO on the held-out requests; every figure with its count and 95 % interval."""
    requests, answers = held_out_answers({"base": "base", "sft": str(sft_dir), "ppo": str(ppo_dir)}, cfg.base_model,
                                         cfg.eval_prompts, cfg.eval_max_new_tokens, cfg.seed)
    scorer = RewardScorer.from_folder(reward_dir)
    scores = {k: scorer.score(requests, texts) for k, texts in answers.items()}
    report = {"prompts": len(requests), "well_formed": {}, "mean_rm_score": {}, "rm_win_rate": {},
              "annotator_win_rate": {}}
    for k, texts in answers.items():
        report["well_formed"][k] = proportion(sum(parse_list(t).well_formed for t in texts), len(texts))
        report["mean_rm_score"][k] = sum(scores[k]) / len(scores[k])
    agree = []
    for n, (a, b) in enumerate([("ppo", "base"), ("ppo", "sft"), ("sft", "base")]):
        judged = outcomes(requests, answers[a], answers[b], random.Random(cfg.seed + 1000 + n), taste)
        rm = [outcome(x, y) for x, y in zip(scores[a], scores[b])]
        report["annotator_win_rate"][f"{a}_vs_{b}"] = win_rate(judged).as_dict()
        report["rm_win_rate"][f"{a}_vs_{b}"] = win_rate(rm).as_dict()
        agree += [j == r for j, r in zip(judged, rm) if j != "tie"]
    report["rm_agrees_with_annotator"] = proportion(sum(agree), len(agree))
    report["samples"] = [{"prompt": r, **{f"{k}_text": answers[k][i] for k in answers},
                          **{f"{k}_score": scores[k][i] for k in scores}} for i, r in enumerate(requests)]
    return report


def main(argv: list[str] | None = None) -> dict:
    cfg = command_config(LoopConfig, sys.argv[1:] if argv is None else argv, prog="python -m bench.loop",
                         description=__doc__.split("\n")[0])
    out = Path(cfg.out)
    logs, db = out / "logs", out / "loop.duckdb"
    if cfg.reuse_votes and Path(cfg.reuse_votes).resolve() == db.resolve():
        raise SystemExit("--reuse-votes must name another loop's database: pass a new --out.")
    cast_with = taste_of_votes(Path(cfg.reuse_votes)) if cfg.reuse_votes else None
    if cast_with not in (None, cfg.taste):
        raise SystemExit(f"--reuse-votes: those votes were cast with --taste {cast_with}; judging them with another "
                         f"taste mixes two people: pass --taste {cast_with}.")
    logs.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("loop.duckdb*"):
        stale.unlink()  # a fresh database every time
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    runs = Path(cfg.runs_dir or REPO / "models" / "runs")
    run = {stage: runs / f"{stage}-{stamp}-loop" for stage in ("sft", "reward", "ppo")}
    base = ["--base-model", cfg.base_model] if cfg.base_model else []
    # the forced-choice protocol is for votes only: judging answers, identical or equally good lists are ties
    vote_taste, taste, wall = Taste(forced_choice=cfg.forced_choice, name=cfg.taste), Taste(name=cfg.taste), {}
    started = time.perf_counter()

    if cfg.reuse_votes:
        shutil.copyfile(cfg.reuse_votes, db)
        votes = stored_votes(db)
    else:
        # 1. the arena on a fresh database
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        arena_log = open(logs / "arena.log", "w")
        arena = subprocess.Popen([sys.executable, "-m", "apps.arena", "--db", str(db), "--port", str(port),
                                  "--annotator", "scripted", *base], cwd=REPO, stdout=arena_log,
                                 stderr=subprocess.STDOUT)
        try:
            wait_until_up(url, arena)
            wall["arena_start"] = round(time.perf_counter() - started, 1)
            # 2. votes and demonstrations through gradio_client
            votes = annotate(url, cfg.votes, cfg.demonstrations, cfg.seed, "scripted", vote_taste,
                             cfg.own_requests, cfg.rate, cfg.both_bad_demonstrations)
            wall["votes"] = votes["seconds"]
        finally:
            arena.terminate()
            arena.wait(timeout=60)
            arena_log.close()
    stored = Store(db).counts()
    # 3-5. the three training stages through the CLI
    common = ["--preset", cfg.preset, *base]
    wall["sft"] = run_stage("sft", ["core", "train", "sft", *common, "--db", str(db), "--output-dir", str(run["sft"]),
                                    *shlex.split(cfg.sft_args)], logs)
    wall["reward"] = run_stage("reward", ["core", "train", "reward", *common, "--db", str(db), "--output-dir",
                                          str(run["reward"]), *shlex.split(cfg.reward_args)], logs)
    wall["ppo"] = run_stage("ppo", ["core", "train", "ppo", *common, "--sft-adapter", str(run["sft"]),
                                    "--reward-model", str(run["reward"]), "--output-dir", str(run["ppo"]),
                                    *shlex.split(cfg.ppo_args)], logs)
    # 6. the annotator's view of PPO's periodic held-out answers
    t = time.perf_counter()
    judgements = judge_ppo_evaluations(run["ppo"], taste, cfg.seed)
    wall["judge_ppo_evaluations"] = round(time.perf_counter() - t, 1)
    # 7. base, SFT and PPO on the held-out requests
    t = time.perf_counter()
    evaluation = evaluate_policies(cfg, run["sft"], run["reward"], run["ppo"], taste)
    wall["evaluate"] = round(time.perf_counter() - t, 1)
    wall["after_votes"] = round(sum(wall[k] for k in ("sft", "reward", "ppo", "judge_ppo_evaluations", "evaluate")), 1)
    wall["total"] = round(time.perf_counter() - started, 1)

    # 8. the report

    result = summarise(cfg=asdict(cfg), runs={k: str(v) for k, v in run.items()}, votes=votes, stored=stored,
                       wall=wall, judgements=judgements, evaluation=evaluation)
    write_report(result, out)
    print(json.dumps({k: result[k] for k in ("goals", "wall_s")}))
    return result


if __name__ == "__main__":
    entry_point(main)
