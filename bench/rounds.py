"""Rounds of the loop with the scripted annotator: does another round help, and which stage-3 method wins?

    .venv/bin/python -m bench.rounds --out bench/out/rounds --taste terse            # hours on 2 cores
    .venv/bin/python -m bench.rounds --round1 bench/out/loop-terse --out ...          # reuse a finished loop
    .venv/bin/python -m bench.rounds --round1 LOOP --reuse-round2 ROUNDS_OUT --out ... --methods dpo \
        --dpo-args "--max-steps -1 --epochs 1"      # another method or setting on the same round-2 votes and RM
    .venv/bin/python -m bench.rounds --previous ROUNDS_OUT --methods online-dpo --out ...   # round 3 after it
    .venv/bin/python -m bench.rounds --previous R2 --reuse-round2 R3 --gate-votes 60 ...  # and more votes at the gate
    (tests/test_loop.py runs it on the tiny model, a dozen votes a round, two steps a stage)

1. Round 1 is bench/loop.py (arena votes, SFT, reward model, PPO, evaluation), or a finished loop's folder
   (--round1: its loop.json names the runs, its loop.duckdb holds the votes). With --previous, the round before is a
   finished run of this benchmark instead and this run is the round after it (round 3 after a round 2, ...): its
   database, its reward model, its tuned policy (--previous-method) in round 1's PPO's place and that policy's start
   in SFT's; "round 2" below then reads "the new round", whose votes, pairing and sampling the --round2-* flags set.
2. Round 2 in the arena: a copy of round 1's database, the arena started with `--pairing PPO1,SFT1 --round "round 2:
   PPO1 vs SFT1"` (the round-1 policy against the SFT policy, sources hidden until the vote), and --round2-votes more
   votes cast by the same annotator through gradio_client, rating and writing lists as in round 1 (--rate, ...). With
   --round2-pairing self, `--pairing PPO1,PPO1` instead: two samples of round 1's policy, the comparisons among its
   own lists that a reward model needs to guide the next tuning (bench/best_of_n.py measures how well it ranks them);
   with --round2-pairing sft, two samples of round 1's SFT (round 2 then starts from it). --round2-sampling uncertain
   has the arena show, for each library request, the closest call of round 1's reward model among the arena's
   --candidates samples (core/collect/chooser.py). With --reuse-round2, a copy of that finished run's database (and
   its --round2-sampling: its votes, chosen as they were). With --gate-votes N, when the gate (core.train.best) would
   keep the incumbent while the challenger leads, the annotator votes on in the same round, a batch at a time, until
   it passes or the votes it needs no longer fit in N (what a person does when the dashboard says how many more
   decided votes would put the challenger through).
3. A reward model on every vote of both rounds (`python -m core train reward`); with --reuse-round2, that run's (unless
   the gate's votes added to them).
4. From the current best (core.train.best.current_best: the side the other was tuned from, unless the other won
   the head-to-head votes beyond chance), each of --methods is trained on the same votes and the same reward
   model: `train ppo`, `train dpo`, `train rloo`, and online-dpo as Next round runs it (core.train.rounds.plan: the
   best's own lists sampled and scored by `train rejection --sample-only`, then `train dpo --pairs-from` them with
   RPO's NLL term), each timed (wall seconds on this machine).
5. Every policy (SFT, round-1 PPO and each round-2 method) answers the held-out library requests, sampled as
   `python -m core eval` samples them; the annotator judges each round-2 method against round 1's PPO and against
   SFT, with 95 % Wilson intervals (ties and "both bad" count half); the new reward model scores every answer.
6. The leaderboard the arena's votes produced (core.judge.leaderboard: Bradley-Terry, bootstrap intervals).
7. Report: rounds.json and rounds.md in --out, with the goals (some round-2 method preferred over round 1's PPO
   >= 60 %; some method preferred over SFT >= 65 %); stage logs in --out/logs.
"""
from __future__ import annotations

import json
import random
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path

from bench import loop
from bench.annotator import TASTES, Taste, annotate
from bench.round_gate import decided_share, merged_gate, vote_at_the_gate
from bench.rounds_report import GOALS, markdown
from core.collect.chooser import SAMPLINGS
from core.config import check, check_flags, command_config, knob
from core.judge import leaderboard
from core.records import InputError
from core.stages import config_class
from core.store.database import Store
from core.train.best import current_best, standing
from core.train.rounds import plan, round_title
from core.win_rate import win_rate

REPO = loop.REPO
METHODS = ("ppo", "dpo", "rloo", "online-dpo")
# each method's runs: (stage, the RoundsConfig knob with its extra flags, less "_args")
RUNS = {"ppo": (("ppo", "ppo"),), "dpo": (("dpo", "dpo"),), "rloo": (("rloo", "rloo"),),
        "online-dpo": (("rejection", "rejection"), ("dpo", "online_dpo"))}
# the previous round's runs (Previous's fields), by name: round 1's PPO and SFT after a loop
PAIRINGS = {"challenger": ("policy", "start"), "self": ("policy", "policy"), "sft": ("sft", "sft")}


@dataclass
class RoundsConfig:
    out: str = knob("bench/out/rounds", "folder for both rounds' databases, logs and the report")
    runs_dir: str = knob("", "where the run folders go; empty: models/runs")
    base_model: str = knob("", "base model for every stage; empty: the embedded SmolLM2-135M-Instruct")
    taste: str = knob("form", "the annotator's taste (bench/annotator.py TASTES)", choices=tuple(TASTES))
    round1: str = knob("", "a finished bench/loop.py --out folder to use as round 1; empty: run round 1 here")
    previous: str = knob("", "a finished bench/rounds.py --out folder: run the round after it (instead of round 2)")
    previous_method: str = knob("", "with --previous: which of its methods' policies goes on (empty: its only one)")
    round1_votes: int = knob(300, "round 1's votes (when round 1 runs here)")
    round2_votes: int = knob(150, "votes cast in round 2, on the round-1 policy against SFT")
    round2_pairing: str = knob("challenger", "round 2's arena pairing: challenger (round 1's PPO against SFT), "
                                             "self (round 1's PPO against itself: two samples of one policy) or sft "
                                             "(two samples of round 1's SFT, which round 2 then starts from)",
                               choices=tuple(PAIRINGS))
    round2_sampling: str = knob("random", "how round 2's arena chooses each library request's pair: random, or "
                                          "uncertain (round 1's reward model's closest call among 4 samples, "
                                          "`apps.arena --reward-model`; core/collect/chooser.py)",
                                choices=SAMPLINGS)
    gate_votes: int = knob(0, "when the gate keeps the incumbent while the challenger leads, cast up to this many "
                              "more votes in the new round, a batch at a time, until it passes (each batch: the "
                              "decided votes core.win_rate.votes_to_pass says are missing over the round's "
                              "share of decided votes, at least 10, while it fits in what is left); 0: never")
    reuse_round2: str = knob("", "a finished bench/rounds.py --out folder on the same round 1: reuse its round-2 "
                                 "votes and reward model (nothing is voted or retrained unless --gate-votes casts "
                                 "more: then a new reward model), train only --methods")
    own_requests: float = knob(0.4, "share of votes on the annotator's own requests (the reward model's held-out)")
    demonstrations: int = knob(10, "edited lists the annotator saves per round, at most")
    rate: float = knob(0.3, "share of voted pairs whose two lists the annotator also rates (bench/loop.py)")
    both_bad_demonstrations: int = knob(10, "lists the annotator writes after 'both bad' votes per round, at most")
    forced_choice: bool = knob(False, "forced-choice annotator: never tie or both bad (for a tiny random model)")
    methods: list[str] = knob(list(METHODS), "round-2 tuning methods, trained from the same start on the same votes")
    preset: str = knob("quick", "preset of every training stage")
    loop_args: str = knob("", "extra flags for round 1's bench/loop.py (its --sft-args, --ppo-args, ...)")
    eval_fraction: float = knob(0.5, "share of the annotator's own requests held out, for round 2's reward model "
                                     "and DPO alike (so both train on the same votes)")
    reward_args: str = knob("", "extra flags for round 2's `train reward`")
    ppo_args: str = knob("", "extra flags for round 2's `train ppo`")
    dpo_args: str = knob("", "extra flags for round 2's `train dpo`")
    rloo_args: str = knob("", "extra flags for round 2's `train rloo`")
    online_dpo_args: str = knob("", "extra flags for online-dpo's `train dpo` (after Next round's own settings)")
    rejection_args: str = knob("", "extra flags for online-dpo's `train rejection --sample-only`")
    eval_prompts: int = knob(72, "held-out requests for the final evaluation (at most 72)")
    eval_max_new_tokens: int = knob(160, "token budget per list in the final evaluation")
    seed: int = knob(0, "seed of the annotator and of the evaluation's sampling and judging")

    def __post_init__(self):
        unknown = sorted(set(self.methods) - set(METHODS))
        check(bool(self.methods) and not unknown,
              f"methods must be some of {', '.join(METHODS)}, not {', '.join(unknown) or 'none'}")
        check(self.round2_votes > 0, "round2-votes must be at least 1, e.g. 150.")
        check(self.gate_votes >= 0, "gate-votes must be 0 (never) or more, e.g. 60.")
        check(not self.reuse_round2 or (Path(self.reuse_round2) / "rounds.json").is_file(),
              f"--reuse-round2 {self.reuse_round2} holds no rounds.json: pass a finished bench/rounds.py --out folder.")
        check(not self.reuse_round2 or Path(self.reuse_round2).resolve() != Path(self.out).resolve(),
              "--reuse-round2 must name another rounds folder than --out (its votes would be overwritten): pass a new "
              "--out.")
        check(0 <= self.eval_fraction < 1, "eval-fraction must be in [0, 1), e.g. 0.5.")
        check(0 <= self.rate <= 1 and self.both_bad_demonstrations >= 0,
              "rate is a share between 0 and 1 (e.g. 0.3), both-bad-demonstrations 0 or more (e.g. 10).")
        for stage, knob_name in [("reward", "reward"), *(run for m in self.methods for run in RUNS[m])]:
            extra = shlex.split(getattr(self, f"{knob_name}_args"))
            check_flags(config_class(stage), ["--preset", self.preset, *extra], f"--{knob_name.replace('_', '-')}-args")
        check(not (self.round1 and self.previous), "pass --round1 (round 2 after a loop) or --previous (the round "
                                                    "after a finished rounds run), not both.")
        check(not self.previous or (Path(self.previous) / "rounds.json").is_file(),
              f"--previous {self.previous} holds no rounds.json: pass a finished bench/rounds.py --out folder.")
        if not self.round1 and not self.previous:
            check_flags(loop.LoopConfig, round_one_args(self, Path(self.out) / "round1"), "--loop-args")


def round_one_args(cfg: RoundsConfig, folder: Path) -> list[str]:
    """bench/loop.py's command line for round 1 run here, in `folder`."""
    return ["--out", str(folder), "--votes", str(cfg.round1_votes), "--taste", cfg.taste, "--own-requests",
            str(cfg.own_requests), "--demonstrations", str(cfg.demonstrations), "--rate", str(cfg.rate),
            "--both-bad-demonstrations", str(cfg.both_bad_demonstrations), "--forced-choice",
            str(cfg.forced_choice).lower(), "--preset", cfg.preset, "--eval-prompts", str(cfg.eval_prompts),
            "--eval-max-new-tokens", str(cfg.eval_max_new_tokens), "--seed", str(cfg.seed),
            *(["--runs-dir", cfg.runs_dir] if cfg.runs_dir else []),
            *(["--base-model", cfg.base_model] if cfg.base_model else []), *shlex.split(cfg.loop_args)]


@dataclass
class Previous:
    """The round this run follows: round 1 (a bench/loop.py folder) or a finished run of this benchmark."""
    number: int  # 1 after a loop
    folder: Path
    db: Path  # its votes, every round's so far
    sft: str  # the chain's SFT run, the fixed reference of every round
    policy: str  # the round's tuned policy (round 1: PPO)
    start: str  # what that policy was tuned from (round 1: SFT)
    reward: str  # the round's reward model
    votes: int | None  # votes so far


def previous_round(cfg: RoundsConfig, out: Path) -> Previous:
    """Step 1: round 1, run here or read from --round1, or the finished round in --previous."""
    folder = Path(cfg.previous or cfg.round1 or out / "round1")
    if not cfg.previous and not cfg.round1:
        loop.main(round_one_args(cfg, folder))
    report = json.loads((folder / ("rounds.json" if cfg.previous else "loop.json")).read_text())
    if report.get("config", {}).get("taste", "form") != cfg.taste:
        taste = report.get("config", {}).get("taste", "form")
        raise SystemExit(f"{folder} was voted with another taste; pass --taste {taste}.")
    if not cfg.previous:
        runs = report["runs"]
        return Previous(1, folder, folder / "loop.duckdb", runs["sft"], runs["ppo"], runs["sft"], runs["reward"],
                        report.get("stored", {}).get("votes"))
    methods = report["config"]["methods"]
    method = cfg.previous_method or (methods[0] if len(methods) == 1 else "")
    if method not in methods:
        raise SystemExit(f"--previous {folder} trained {', '.join(methods)}: pass --previous-method with one of them.")
    sft = report.get("policies", {}).get("sft") or json.loads((Path(report["round1"]) / "loop.json").read_text())[
        "runs"]["sft"]  # a rounds.json from before --previous named SFT only in its round 1's loop.json ("round1")
    db = folder / "rounds.duckdb"
    return Previous(report.get("round", 2), folder, db, sft, report["runs"][method], report["start"],
                    report["runs"]["reward"], len(Store(db).votes()))


def collect_round(cfg: RoundsConfig, db: Path, pairing: tuple[str, str], number: int, logs: Path, taste: Taste,
                  reward_model: str, batch: int = 0, votes: int = 0) -> dict:
    """Step 2: the arena on `db` serving `pairing` as round `number`, choosing pairs as cfg.round2_sampling says
    (uncertain: with the previous round's `reward_model`); the annotator casts cfg.round2_votes votes, or in a later
    `batch` of the same round (the gate's), `votes` more with no lists written and a seed of their own."""
    port = loop.free_port()
    url = f"http://127.0.0.1:{port}/"
    base = ["--base-model", cfg.base_model] if cfg.base_model else []
    base += ["--reward-model", reward_model] if cfg.round2_sampling == "uncertain" else []
    with open(logs / f"arena-round{number}{f'-gate{batch}' if batch else ''}.log", "w") as log:
        arena = subprocess.Popen([sys.executable, "-m", "apps.arena", "--db", str(db), "--port", str(port),
                                  "--annotator", "scripted", "--pairing", ",".join(pairing),
                                  "--round", round_title(number, *pairing), "--sampling", cfg.round2_sampling,
                                  *base], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            loop.wait_until_up(url, arena)
            return annotate(url, votes or cfg.round2_votes, 0 if batch else cfg.demonstrations,
                            cfg.seed + number - 1 + 1000 * batch, "scripted", taste, cfg.own_requests, cfg.rate,
                            0 if batch else cfg.both_bad_demonstrations)
        finally:
            arena.terminate()
            arena.wait(timeout=60)


def chosen_by(store: Store, round_name: str) -> dict[str, int]:
    """How the round's voted pairs were chosen: {"uncertain": n, "random": n, "repeat": n}. Uncertain choice serves
    random pairs on the annotator's own requests and until a reward model has finished, so both appear."""
    votes = store.votes()
    return {str(k): int(v) for k, v in votes[votes["round"] == round_name].chosen_by.value_counts().items()}


def train_round(cfg: RoundsConfig, db: Path, runs: Path, stamp: str, start: str, logs: Path,
                reward: str = "") -> tuple[dict, dict]:
    """Steps 3-4: the reward model on every vote (or the finished `reward` run), then each method from `start`;
    (run folders, wall seconds). `stamp` ends with the round, e.g. "20261206-172107-round2"."""
    base = ["--base-model", cfg.base_model] if cfg.base_model else []
    common = ["--preset", cfg.preset, *base]
    run = {"reward": Path(reward) if reward else runs / f"reward-{stamp}"}
    run |= {m: runs / f"{m}-{stamp}" for m in cfg.methods if m != "online-dpo"}  # online-dpo: its plan's
    held_out = ["--eval-fraction", str(cfg.eval_fraction)]  # the reward model and DPO split the votes alike
    wall = {} if reward else {"reward": loop.run_stage(f"reward-{round_of(stamp)}", [
        "core", "train", "reward", *common, "--db", str(db), "--output-dir", str(run["reward"]), *held_out,
        *shlex.split(cfg.reward_args)], logs)}
    flags = {"ppo": ["--sft-adapter", start, "--reward-model", str(run["reward"]), *shlex.split(cfg.ppo_args)],
             "dpo": ["--sft-adapter", start, "--db", str(db), *held_out, *shlex.split(cfg.dpo_args)],
             "rloo": ["--sft-adapter", start, "--reward-model", str(run["reward"]), *shlex.split(cfg.rloo_args)]}
    for method in cfg.methods:
        if method == "online-dpo":
            run[method], wall[method] = online_dpo(cfg, db, runs, stamp, start, run["reward"], logs)
            continue
        wall[method] = loop.run_stage(f"{method}-{round_of(stamp)}", ["core", "train", method, *common, "--output-dir",
                                                           str(run[method]), *flags[method]], logs)
    return run, wall


def online_dpo(cfg: RoundsConfig, db: Path, runs: Path, stamp: str, start: str, reward: Path, logs: Path
               ) -> tuple[Path, float]:
    """Step 4 for online-dpo: its two runs as Next round plans them (core.train.rounds.plan, so the benchmark measures
    the product's recipe) with this benchmark's reward model, database, held-out share and base model in their
    settings and the extra flags after; (the DPO run's folder, wall seconds of both)."""
    sample, tune = plan("online-dpo", start, runs, f"{stamp}-online", preset=cfg.preset)[1:3]
    base = {"base_model": cfg.base_model} if cfg.base_model else {}
    sample = replace(sample, settings={**sample.settings, **base, "reward_model": str(reward)})  # not the plan's own
    tune = replace(tune, settings={**tune.settings, **base, "db": str(db), "eval_fraction": str(cfg.eval_fraction)})
    suffix = round_of(stamp)
    wall = loop.run_stage(f"online-dpo-sample-{suffix}", [*sample.command[2:], *shlex.split(cfg.rejection_args)], logs)
    wall += loop.run_stage(f"online-dpo-{suffix}", [*tune.command[2:], *shlex.split(cfg.online_dpo_args)], logs)
    return tune.run_dir, round(wall, 1)


def judged(cfg: RoundsConfig, requests: list[str], answers: dict, a: str, b: str, taste: Taste, salt: int) -> dict:
    """The annotator's win rate of policy `a` over policy `b` on the same requests, with its interval."""
    outcomes = loop.outcomes(requests, answers[a], answers[b], random.Random(cfg.seed + 2000 + salt), taste)
    return win_rate(outcomes).as_dict()


def evaluate_rounds(cfg: RoundsConfig, policies: dict[str, str], reward_dir: Path, taste: Taste) -> dict:
    """Step 5: every policy on the held-out requests; annotator win rates and mean reward-model scores."""
    requests, answers = loop.held_out_answers(policies, cfg.base_model, cfg.eval_prompts, cfg.eval_max_new_tokens,
                                              cfg.seed)
    report = {"prompts": len(requests), "mean_rm_score": loop.mean_scores(reward_dir, requests, answers),
              # PPO keeps the salt it had when it was the only round-2 policy judged, so earlier reports reproduce
              "over_previous_round": {m: judged(cfg, requests, answers, m, "previous", taste,
                                               0 if m == "ppo" else 100 + n) for n, m in enumerate(cfg.methods)},
              "over_sft": {m: judged(cfg, requests, answers, m, "sft", taste, n + 1)
                           for n, m in enumerate(cfg.methods)}}
    report["samples"] = [{"prompt": r, **{f"{k}_text": answers[k][i] for k in answers}}
                         for i, r in enumerate(requests)]
    return report


def round_of(stamp: str) -> str:
    """The round a run's stamp ends with: "round3" from "20261206-172107-round3" (its stage logs' suffix)."""
    return stamp.rsplit("-", 1)[-1]


def main(argv: list[str] | None = None) -> dict:
    cfg = command_config(RoundsConfig, sys.argv[1:] if argv is None else argv, prog="python -m bench.rounds",
                         description=__doc__.split("\n")[0])
    out = Path(cfg.out)
    logs, db = out / "logs", out / "rounds.duckdb"
    logs.mkdir(parents=True, exist_ok=True)
    vote_taste, taste = Taste(forced_choice=cfg.forced_choice, name=cfg.taste), Taste(name=cfg.taste)
    # 1. the round before: round 1, or --previous
    before = previous_round(cfg, out)
    number = before.number + 1
    pairing = tuple(getattr(before, side) for side in PAIRINGS[cfg.round2_pairing])
    # 2. the new round in the arena, on a copy of the votes so far (or of a finished run's new round)
    prior = json.loads((Path(cfg.reuse_round2) / "rounds.json").read_text()) if cfg.reuse_round2 else None
    if prior and prior["pairing"] != list(pairing):
        raise SystemExit(f"--reuse-round2 {cfg.reuse_round2} paired {prior['pairing']}, not {list(pairing)}: pass "
                         "the --round1 or --previous and the --round2-pairing it ran with.")
    if prior:  # its votes, chosen as they were
        cfg.round2_sampling = prior["config"].get("round2_sampling", "random")
    for stale in out.glob("rounds.duckdb*"):
        stale.unlink()
    shutil.copyfile(Path(cfg.reuse_round2) / "rounds.duckdb" if prior else before.db, db)
    started = time.perf_counter()
    # "round2": the new round's votes, whichever its number (the key earlier reports and --reuse-round2 read)
    round2 = prior["round2"] if prior else collect_round(cfg, db, pairing, number, logs, vote_taste, before.reward)
    wall = {"round2_votes": prior["wall_s"]["round2_votes"] if prior else round(time.perf_counter() - started, 1)}
    # 2b. a close call at the gate: more votes in the same round (a new reward model then, even with --reuse-round2)
    started, title, earlier = time.perf_counter(), round_title(number, *pairing), round2.get("gate")
    gate = vote_at_the_gate(cfg.gate_votes, lambda: standing(Store(db)), lambda batch, votes: collect_round(
        cfg, db, pairing, number, logs, vote_taste, before.reward, batch, votes),
        lambda: decided_share(Store(db), title),
        first_batch=(earlier or {}).get("batches", 0) + 1)  # a reused run's batches keep their seeds
    round2["gate"] = merged_gate(earlier, gate)
    wall["gate_votes"] = round(time.perf_counter() - started, 1)
    round2["chosen_by"] = chosen_by(Store(db), title)
    # 3-4. the reward model on every vote, each method from the current best
    start = current_best(Store(db))
    runs = Path(cfg.runs_dir or REPO / "models" / "runs")
    run, trained = train_round(cfg, db, runs, f"{datetime.now():%Y%m%d-%H%M%S}-round{number}", start, logs,
                               prior["runs"]["reward"] if prior and not gate["cast"] else "")
    wall |= trained
    # 5. every policy on the held-out requests
    t = time.perf_counter()
    policies = {"sft": before.sft, "previous": before.policy} | {m: str(run[m]) for m in cfg.methods}
    evaluation = evaluate_rounds(cfg, policies, run["reward"], taste)
    wall["evaluate"] = round(time.perf_counter() - t, 1)
    # 6. the leaderboard of the arena's votes
    try:
        board_text = leaderboard.summary(leaderboard.leaderboard(Store(db).votes(), seed=cfg.seed))
    except InputError as e:  # e.g. a self pairing after round 1's base-vs-base votes: no two policies compared
        board_text = f"no leaderboard: {e}"
    # 7. the report
    best = max((r["rate"] for r in evaluation["over_sft"].values()), default=0.0)
    best_over_previous = max((r["rate"] for r in evaluation["over_previous_round"].values()), default=0.0)
    result = {"config": asdict(cfg), "round": number, "previous": str(before.folder), "previous_policy": before.policy,
              "policies": policies, "votes_before": before.votes, "round2": round2, "pairing": list(pairing),
              "start": start, "runs": {k: str(v) for k, v in run.items()}, "wall_s": wall,
              "evaluation": {k: v for k, v in evaluation.items() if k != "samples"},
              "leaderboard": board_text,
              "goals": {"over_previous_round": best_over_previous >= GOALS["over_previous_round"],
                        "best_method_over_sft": best >= GOALS["best_method_over_sft"]}}
    (out / "rounds.json").write_text(json.dumps(result, indent=2, default=str))
    (out / "rounds.md").write_text(markdown(result))
    with open(out / "rounds_samples.jsonl", "w") as f:
        f.writelines(json.dumps(s) + "\n" for s in evaluation["samples"])
    print(markdown(result))
    return result


if __name__ == "__main__":
    loop.entry_point(main)
