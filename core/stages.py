"""The training stages: what `python -m core train NAME` runs, and where each stage's code and config live.

Names only (modules import lazily), so the CLI, the dashboard and the run-folder readers can ask about stages
without loading torch, TRL or every stage's module.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str  # what `python -m core train NAME` takes, and the prefix of a fresh run folder
    module: str  # the module holding `train(cfg) -> Path` and the config dataclass
    config: str  # the config dataclass's name in that module
    resumable: bool  # --resume continues a stopped, failed or killed run (others are minutes long: restart them)


# the stages whose finished runs hold a policy adapter: where a tuning run can start, what an arena can serve
POLICY_STAGES = ("sft", "ppo", "dpo", "rloo", "rejection")
# what a message about an unreadable adapter tells the user to run instead
POLICY_MADE_BY = f"python -m core train {POLICY_STAGES[0]} (or {', '.join(POLICY_STAGES[1:])})"
REWARD_MADE_BY = "python -m core train reward"
# Settings that name a finished run's folder, the same name in every stage's config, and whose runs they take: the
# dashboard's form offers those runs to pick from. (Kept by name here, not in each field's metadata: transformers'
# HfArgumentParser hands a field's metadata to argparse, which refuses keys of its own.)
RUN_SETTINGS = {"reward_model": ("reward",), "sft_adapter": POLICY_STAGES,
                "candidates_from": ("rejection",), "pairs_from": ("rejection",)}  # a rejection run's scored lists
STAGES = {stage.name: stage for stage in (
    Stage("sft", "core.train.sft", "SFTConfig", resumable=False),
    Stage("reward", "core.train.reward_model", "RewardConfig", resumable=False),
    Stage("ppo", "core.train.ppo.trainer", "PPOConfig", resumable=True),
    Stage("rloo", "core.train.rloo", "RLOOConfig", resumable=False),
    Stage("rejection", "core.train.rejection", "RejectionConfig", resumable=False),
    Stage("dpo", "core.train.dpo", "DPOConfig", resumable=False),
)}


def stage_module(name: str):
    return importlib.import_module(STAGES[name].module)


def config_class(name: str) -> type:
    return getattr(stage_module(name), STAGES[name].config)


def stage_for_config(cfg) -> str:
    """The stage a config object belongs to ("" for configs that are not a training stage's, e.g. eval's)."""
    return stage_named_by_config(type(cfg).__name__)


def stage_named_by_config(config_name: str) -> str:
    return next((s.name for s in STAGES.values() if s.config == config_name), "")
