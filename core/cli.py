"""Command line: `python -m core <command>`.

    python -m core prepare-model              # convert the embedded SmolLM2-135M-Instruct once (idempotent)
    python -m core import-votes votes.jsonl   # prompt, response_a, response_b, choice[, annotator, created_at]
    python -m core export-votes prefs.jsonl   # TRL preference format (prompt, chosen, rejected[, margin])
    python -m core stats                      # what the database holds; annotator agreement (core/judge/agreement.py)
    python -m core train sft|reward|ppo|dpo|rloo|rejection [--preset quick] [--help for every setting]
    python -m core score --reward-model RUN --prompt "Top 5 ..." --response "1. ..." [--response "1. ..."]
    python -m core eval --policy RUN [--against base|RUN] [--reward-model RUN]   # win rate, well-formed rate
    python -m core leaderboard [--reward-model RUN|newest|none] [--bootstrap 1000]  # Bradley-Terry ratings
    python -m core weak-spots [--policy NAME]  # per category, where a policy loses votes (core/collect/focus.py)
    python -m core next-round [--method online-dpo|ppo|dpo|rloo|rejection] [--best RUN]  # reward model, policy, arena

The database is $RLHF_DB (default data/rlhf.duckdb), or --db. A stage's flags come from its config dataclass
(core/config.py); the stages themselves are listed in core/stages.py.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from pathlib import Path

from core.collect import focus
from core.judge import agreement, leaderboard
from core.records import USER_ERRORS, InputError
from core.runs import newest_finished_run
from core.stages import STAGES, config_class, stage_module
from core.store.database import Store
from core.store.preferences import export_votes, import_file
from core.train.rounds import METHODS, ONLINE_DPO_LISTS, RECOMMENDED, next_round


def _heavy(module: str):
    """A module that imports torch, transformers, PEFT or TRL (seconds, and ~300 MB before any work): loaded only
    by the commands that use it, so `stats` answers at once and `import-votes` keeps its memory for the votes."""
    return importlib.import_module(module)


def _prepare_model(args) -> None:
    print(f"embedded model ready at {_heavy('core.model').prepare_embedded_model()}")


def _import_votes(args) -> None:
    print(import_file(Store(args.db), args.file))


def _export_votes(args) -> None:
    print(export_votes(Store.existing(args.db), args.out))


def _stats(args) -> None:
    store = Store.existing(args.db, timeout_s=args.wait)  # a read-only look: a mistyped --db starts no database
    print(f"{store.path}: " + ", ".join(f"{v} {k}" for k, v in store.counts().items()) + "\n")
    print(agreement.summary(store.votes()))


def _train(args) -> None:
    module = stage_module(args.stage)
    parse_config = _heavy("core.config").parse_config
    cfg = parse_config(config_class(args.stage), args.settings, prog=f"python -m core train {args.stage}",
                       description=(module.__doc__ or "").split("\n\n")[0])
    print(f"run folder: {module.train(cfg)}")


def _score(args) -> None:
    reward_model = _heavy("core.train.reward_model")
    calibration = _heavy("core.calibration")
    if not args.response:
        raise InputError("give at least one --response to score.")
    scorer = reward_model.RewardScorer.from_folder(args.reward_model, device=args.device)
    scores = scorer.score([args.prompt] * len(args.response), args.response)
    for n, score in enumerate(scores, start=1):
        print(f"response {n}: reward {score:+.3f}")
    if len(scores) == 2:
        print(f"P(response 1 preferred) = {float(calibration.preference_probability(scores[0], scores[1])):.3f}")


def _eval(args) -> None:
    evaluate = _heavy("core.judge.evaluate")
    cfg = _heavy("core.config").parse_config(evaluate.EvalConfig, args.settings, prog="python -m core eval",
                       description=(evaluate.__doc__ or "").split("\n\n")[0])
    print(evaluate.summary(evaluate.evaluate(cfg)))
    if cfg.out:
        print(f"report: {cfg.out}")


def _next_round(args) -> None:
    next_round(Store.existing(args.db), args.method, args.best, args.preset, args.stamp, plan_only=args.plan_only,
               lists=args.lists)


def _leaderboard(args) -> None:
    votes = Store.existing(args.db, timeout_s=args.wait).votes()
    board = leaderboard.leaderboard(votes, bootstrap=args.bootstrap, seed=args.seed)  # refuses no votes, first
    run = (None if args.reward_model == "none" else newest_finished_run("reward") if args.reward_model == "newest"
           else Path(args.reward_model))
    if run:
        board = leaderboard.with_mean_rewards(board, leaderboard.mean_reward_under(run, votes, args.device))
    print(leaderboard.summary(board))
    print(f"\nmean RM: reward model {run}" if run else "\nmean RM: no reward model (none finished, or --reward-model "
          "none)")


def _weak_spots(args) -> None:
    policy, table = focus.weak_spots_in(Store.existing(args.db, timeout_s=args.wait), args.policy)
    print(f"{policy}: votes with it on either side, by the request's category, weakest first (a 'both bad' counts as "
          f"lost; focus %: the share of the next library requests under `--focus weak`)\n")
    print(focus.readable(table).to_string())


def seconds(text: str) -> float:
    """--wait's value: a number of seconds, 0 or more (argparse turns the error into its one line)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} seconds: pass 0 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("prepare-model", help="convert the embedded model once").set_defaults(run=_prepare_model)
    imp = commands.add_parser("import-votes", help="add votes from a JSONL or Parquet file (all or nothing)")
    imp.add_argument("file")
    imp.set_defaults(run=_import_votes)
    exp = commands.add_parser("export-votes", help="write standing votes in TRL's preference format")
    exp.add_argument("out", help="a .jsonl or .parquet path")
    exp.set_defaults(run=_export_votes)
    commands.add_parser("stats", help="count votes, ratings and demonstrations; self- and inter-annotator "
                        "agreement").set_defaults(run=_stats)
    for sub in (imp, exp, commands.choices["stats"]):
        sub.add_argument("--db", default=None, help="DuckDB file (default $RLHF_DB or data/rlhf.duckdb)")
    commands.choices["stats"].add_argument("--wait", type=seconds, default=30.0,
                                           help="seconds to wait for a database another process holds")

    # A stage's (and eval's) settings are parsed by its own config parser, so only that stage's module is loaded.
    train = commands.add_parser("train", help="run a training stage; each run writes a folder under models/runs/")
    train.add_argument("stage", choices=sorted(STAGES), help="the stage; `train STAGE --help` lists its settings")
    train.add_argument("settings", nargs=argparse.REMAINDER, help="the stage's settings")
    train.set_defaults(run=_train)
    evaluation = commands.add_parser("eval", add_help=False, help="judge a policy against another: reward-model "
                                     "win rate and well-formed rate on held-out requests (`eval --help`)")
    evaluation.add_argument("settings", nargs=argparse.REMAINDER)
    evaluation.set_defaults(run=_eval)

    score = commands.add_parser("score", help="score request + list pairs with a trained reward model")
    score.add_argument("--reward-model", required=True, help="a reward run folder (or its adapter/ folder)")
    score.add_argument("--prompt", required=True, help="the request, e.g. 'Top 5 ideas for a Thanksgiving meal'")
    score.add_argument("--response", action="append", default=[], help="a list to score (repeat to compare)")
    score.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    score.set_defaults(run=_score)

    nxt = commands.add_parser("next-round", help="train a reward model on every vote, tune a new policy from the "
                              "current best, then pair the two in the arena as a new round (core/train/rounds.py)")
    nxt.add_argument("--method", default=RECOMMENDED, choices=METHODS,
                     help=f"how the new policy is tuned (default {RECOMMENDED}: the best measured, bench/README.md)")
    nxt.add_argument("--best", help="the run (or base) to start from and pair against; default: the current best")
    nxt.add_argument("--preset", help="each step's preset, e.g. quick (default: the stages' own defaults)")
    nxt.add_argument("--lists", type=int, default=ONLINE_DPO_LISTS, help="online-dpo: lists sampled for each "
                     f"training request, the best paired with the worst (default {ONLINE_DPO_LISTS}: bench/README.md)")
    nxt.add_argument("--stamp", help="the timestamp in the run folders' names (default: now)")
    nxt.add_argument("--plan-only", action="store_true", help="print the plan and check its settings; start nothing")
    nxt.add_argument("--db", default=None, help="DuckDB file (default $RLHF_DB or data/rlhf.duckdb)")
    nxt.set_defaults(run=_next_round)

    board = commands.add_parser("leaderboard", help="Bradley-Terry ratings of every policy in arena and blind demo "
                                "votes, 95 %% bootstrap intervals, win rates, mean reward-model score")
    board.add_argument("--db", default=None, help="DuckDB file (default $RLHF_DB or data/rlhf.duckdb)")
    board.add_argument("--wait", type=seconds, default=30.0,
                       help="seconds to wait for a database another process holds")
    board.add_argument("--reward-model", default="newest", help="a reward run folder whose mean score per policy "
                       "shows beside its rating, `newest` (the newest finished reward run, the default) or `none`")
    board.add_argument("--bootstrap", type=int, default=leaderboard.BOOTSTRAP, help="resamples for the intervals")
    board.add_argument("--seed", type=int, default=0, help="seed of the resampling")
    board.add_argument("--device", default=None, help="auto (default), cpu or cuda, for the reward model")
    board.set_defaults(run=_leaderboard)
    weak = commands.add_parser("weak-spots", help="where a policy loses votes, by the request's category, and what "
                               "the arena's focus `weak` makes of it (core/collect/focus.py)")
    weak.add_argument("--policy", help="the policy as the votes name it (default: the arena's challenger, the "
                      "pairing's second side, as the arena last said)")
    weak.add_argument("--db", default=None, help="DuckDB file (default $RLHF_DB or data/rlhf.duckdb)")
    weak.add_argument("--wait", type=seconds, default=30.0, help="seconds to wait for a database another process holds")
    weak.set_defaults(run=_weak_spots)
    return parser


def main(argv: list[str] | None = None) -> int:
    # transformers 5 renames "gradient checkpointing"; PEFT and TRL still ask by the old name on every run
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated", category=FutureWarning)
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command == "eval":  # `eval --flag ...`: a leading option is not captured by the remainder
        args.settings = unknown + args.settings
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(message)s")
    logging.getLogger().handlers[0].setLevel(level)  # a Run lowers the root level so that train.log gets INFO
    try:
        args.run(args)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
