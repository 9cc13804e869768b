"""Command line: `python -m core <command>`.

    python -m core prepare-model              # convert the embedded SmolLM2-135M-Instruct once (idempotent)
    python -m core import-votes votes.jsonl   # prompt, response_a, response_b, choice[, annotator, created_at]
    python -m core export-votes prefs.jsonl   # TRL preference format (prompt, chosen, rejected[, margin])
    python -m core stats                      # what the database holds
    python -m core train sft|reward|ppo [--preset quick] [--help for every setting]
    python -m core score --reward-model RUN --prompt "Top 5 ..." --response "1. ..." [--response "1. ..."]
    python -m core eval --policy RUN [--against base|RUN] [--reward-model RUN]   # win rate, well-formed rate

The database is $RLHF_DB (default data/rlhf.duckdb), or --db.
"""
from __future__ import annotations

import argparse
import logging
import sys
import warnings

from core.config import add_arguments
from core.model import ModelLoadError
from core.records import InputError
from core.store import StoreBusy


def _prepare_model(args) -> None:
    from core.model import prepare_embedded_model

    print(f"embedded model ready at {prepare_embedded_model()}")


def _import_votes(args) -> None:
    from core.preferences import import_votes
    from core.store import Store

    store = Store(args.db)
    print(f"imported {import_votes(store, args.file)} votes from {args.file} into {store.path}")


def _export_votes(args) -> None:
    from core.preferences import export_votes
    from core.store import Store

    print(export_votes(Store(args.db), args.out))


def _stats(args) -> None:
    from core.store import Store

    store = Store(args.db)
    print(f"{store.path}: " + ", ".join(f"{v} {k}" for k, v in store.counts().items()))


STAGES = {  # stage -> (module, config class); modules load lazily so `--help` stays fast
    "sft": ("core.sft", "SFTConfig"),
    "reward": ("core.reward_model", "RewardConfig"),
    "ppo": ("core.ppo", "PPOConfig"),
}


def stage_module(stage: str):
    import importlib

    return importlib.import_module(STAGES[stage][0])


def stage_config_class(stage: str):
    return getattr(stage_module(stage), STAGES[stage][1])


def _train(args) -> None:
    from core.config import from_arguments

    cfg = from_arguments(stage_config_class(args.stage), args)
    print(f"run folder: {stage_module(args.stage).train(cfg)}")


def _score(args) -> None:
    from core.calibration import preference_probability
    from core.reward_model import RewardScorer

    if not args.response:
        raise InputError("give at least one --response to score.")
    scorer = RewardScorer.from_folder(args.reward_model, device=args.device)
    scores = scorer.score([args.prompt] * len(args.response), args.response)
    for n, score in enumerate(scores, start=1):
        print(f"response {n}: reward {score:+.3f}")
    if len(scores) == 2:
        print(f"P(response 1 preferred) = {float(preference_probability(scores[0], scores[1])):.3f}")


def _eval(args) -> None:
    from core.config import from_arguments
    from core.evaluate import EvalConfig, evaluate, summary

    cfg = from_arguments(EvalConfig, args)
    print(summary(evaluate(cfg)))
    if cfg.out:
        print(f"report: {cfg.out}")


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
    commands.add_parser("stats", help="count votes, ratings and demonstrations").set_defaults(run=_stats)
    train = commands.add_parser("train", help="run a training stage; each run writes a folder under models/runs/")
    stages = train.add_subparsers(dest="stage", required=True)
    for stage in STAGES:
        sub = stages.add_parser(stage, help=f"train the {stage} stage", description=_first_paragraph(stage))
        add_arguments(sub, stage_config_class(stage))
        sub.set_defaults(run=_train)
    score = commands.add_parser("score", help="score request + list pairs with a trained reward model")
    score.add_argument("--reward-model", required=True, help="a reward run folder (or its adapter/ folder)")
    score.add_argument("--prompt", required=True, help="the request, e.g. 'Top 5 ideas for a Thanksgiving meal'")
    score.add_argument("--response", action="append", default=[], help="a list to score (repeat to compare)")
    score.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    score.set_defaults(run=_score)
    from core.evaluate import EvalConfig

    evaluation = commands.add_parser("eval", help="judge a policy against another: reward-model win rate and "
                                                  "well-formed rate on held-out requests")
    add_arguments(evaluation, EvalConfig)
    evaluation.set_defaults(run=_eval)
    for sub in (imp, exp, commands.choices["stats"]):
        sub.add_argument("--db", default=None, help="DuckDB file (default $RLHF_DB or data/rlhf.duckdb)")
    return parser


def _first_paragraph(stage: str) -> str:
    return (stage_module(stage).__doc__ or "").split("\n\n")[0]


def main(argv: list[str] | None = None) -> int:
    # transformers 5 renames "gradient checkpointing"; PEFT and TRL still ask by the old name on every run
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated", category=FutureWarning)
    args = build_parser().parse_args(argv)
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(message)s")
    logging.getLogger().handlers[0].setLevel(level)  # a Run lowers the root level so that train.log gets INFO
    try:
        args.run(args)
    except (InputError, ModelLoadError, StoreBusy) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
