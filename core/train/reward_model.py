"""Reward model: a LoRA sequence classifier (one output) trained on the arena's votes with TRL's RewardTrainer.

    python -m core train reward --preset quick                 # minutes on 2 CPU cores
    python -m core train reward --swap-labels true             # sanity check: held-out accuracy must fall to ~0
    python -m core score --reward-model RUN_DIR --prompt "Top 5 ..." --response "1. ..." --response "1. ..."

How feedback enters training (core/train/feedback.py has the table; TRL models neither ties nor "both bad"):
1. A left/right vote is a (chosen, rejected) pair. Loss: Bradley–Terry −log σ(r⁺ − r⁻ − m), with m the vote's
   strength as a margin (1/3, 2/3, 1: Llama 2's small-margin scale; 0 without a strength; `--use-margin false` to
   ignore it).
2. An edited list beats the list it was edited from (`--from-edits`); a list the annotator wrote for a request
   beats both lists of their "both bad" votes on it (`--from-both-bad`); of two rated lists of one request the one
   with more stars wins, margin from the gap (`--from-ratings`); a tie becomes a 0.5 target (`--from-ties`, off:
   it did not help held-out accuracy, bench/README.md's ablation). "Both bad" with no demonstration trains nothing.
3. Held-out split by prompt (core/train/snapshot.py): library prompts keep their shipped split, others hash to one.
   Held-out accuracy is measured on held-out left/right votes only (a repeat's vote counted once), whatever trains.

The score head starts random, or (`--head-init probe`) as a Bradley–Terry probe on the frozen model's features, which
LoRA then fine-tunes (LP-FT; core/train/reward_probe.py).

Inputs are tokenised here exactly as PPO will score a rollout: chat-templated request + list + EOS; the score is
read at the last token. After training every labelled pair, train and held-out, is scored (scores.parquet, for
browsing disagreements), and held-out accuracy with counts, ECE, accuracy against score gap and accuracy per round
of collection are reported (metrics.jsonl and calibration.json).
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel
from trl import RewardConfig as TRLRewardConfig
from trl import RewardTrainer

from core.calibration import (
    accuracy_by_margin,
    accuracy_by_round,
    expected_calibration_error,
    preference_probability,
    reliability_bins,
)
from core.collect.generate import prompt_and_answer_ids
from core.config import check, knob, stage_main
from core.model import (
    describe_device,
    load_causal_lm,
    load_tokenizer,
    pick_device,
    resolve_base_model,
)
from core.records import InputError, ModelLoadError
from core.runs import (
    RunFolder,
    adapter_dir,
    prepare_run_dir,
    read_adapter_config,
    readable_adapter,
    write_json,
    write_parquet,
)
from core.stages import REWARD_MADE_BY
from core.store.database import Store
from core.store.preferences import is_repeat
from core.train.feedback import SOURCES, FeedbackSources
from core.train.reward_probe import init_head_from_probe
from core.train.run_writer import Run
from core.train.snapshot import DEFAULT_EVAL_FRACTION, take_preferences
from core.train.trackers import report_to_knob
from core.train.trainer_run import (
    attach,
    precision_knob,
    seed_weights,
    trained_model,
    trainer_arguments,
    weights_for,
)

log = logging.getLogger(__name__)


@dataclass
class RewardConfig:
    base_model: str = knob("", "Hugging Face id or folder the reward model starts from; empty: the policy's base "
                               "($RLHF_BASE_MODEL or the embedded SmolLM2-135M-Instruct)")
    db: str = knob("", "DuckDB file holding the votes; empty: $RLHF_DB or data/rlhf.duckdb")
    eval_fraction: float = knob(DEFAULT_EVAL_FRACTION, "share of custom (non-library) prompts held out; library prompts keep their split")
    use_margin: bool = knob(True, "use a vote's strength (and a rating gap) as a margin in the loss")
    from_edits: bool = knob(True, "train on edits: an edited list beats the list it was edited from")
    from_both_bad: bool = knob(True, "train on 'both bad' votes with a list the annotator wrote for the request: "
                                     "it beats both")
    from_ratings: bool = knob(True, "train on ratings: of two rated lists of a request, more stars wins")
    from_ties: bool = knob(False, "train on ties as a 0.5 target (off: it did not help held-out accuracy)")
    swap_labels: bool = knob(False, "sanity check: train on swapped chosen/rejected (held-out accuracy must fall)")
    epochs: float = knob(2.0, "passes over the training pairs")
    max_steps: int = knob(-1, "stop after this many optimiser steps (-1: run all epochs)")
    learning_rate: float = knob(2e-4, "AdamW learning rate (LoRA weights and the score head)")
    batch_size: int = knob(8, "pairs per optimiser step")
    center_rewards: float = knob(0.01, "weight of TRL's penalty on the mean reward, keeping scores near 0 "
                                       "(Eisenstein et al. 2023); 0 to switch off")
    head_init: str = knob("random", "the score head's start: random, or probe (a Bradley–Terry probe on the frozen "
                                    "model's features first, then LoRA: LP-FT)", choices=("random", "probe"))
    lora_r: int = knob(16, "LoRA rank")
    lora_alpha: int = knob(32, "LoRA scaling numerator (the update is scaled by alpha / r)")
    lora_dropout: float = knob(0.05, "dropout on the LoRA input during training")
    lora_targets: list[str] = knob(["q_proj", "k_proj", "v_proj", "o_proj"], "module names that get LoRA adapters")
    max_length: int = knob(512, "longest request + list in tokens; longer pairs are left out of training")
    device: str = knob("auto", "where to train: auto (GPU if present), cpu or cuda", choices=("auto", "cpu", "cuda"))
    precision: str = precision_knob()
    seed: int = knob(0, "seed for data order and initialisation")
    output_dir: str = knob("", "run folder; empty: models/runs/reward-<timestamp>")
    report_to: str = report_to_knob()

    PRESETS: ClassVar[dict] = {
        # one epoch at 2e-4 left 163 scripted-annotator pairs underfit (train accuracy 0.69, held-out 20/30): the
        # fresh score head barely moves in 21 steps at that rate
        "quick": dict(epochs=2.0, batch_size=8, max_length=384, learning_rate=5e-4)}

    def __post_init__(self):
        check(0 <= self.eval_fraction < 1, "eval-fraction must be in [0, 1), e.g. 0.2.")
        check(self.epochs > 0, "epochs must be positive, e.g. --epochs 2.")
        check(self.max_steps == -1 or self.max_steps > 0, "max-steps must be -1 (all epochs) or a positive count.")
        check(0 < self.learning_rate < 1, "learning-rate should be small and positive, e.g. 2e-4.")
        check(self.batch_size > 0, "batch-size must be at least 1.")
        check(self.center_rewards >= 0, "center-rewards must be >= 0 (0 switches it off).")
        check(self.lora_r > 0 and self.lora_alpha > 0, "lora-r and lora-alpha must be positive, e.g. 16 and 32.")
        check(0 <= self.lora_dropout < 1, "lora-dropout must be in [0, 1).")
        check(bool(self.lora_targets), "lora-targets needs at least one module name, e.g. q_proj,v_proj.")
        check(self.max_length >= 32, "max-length must be at least 32 tokens.")


def reward_input_ids(tokenizer, prompt: str, response: str) -> list[int]:
    """What the reward model reads: chat-templated request (our system prompt) + list + EOS."""
    prompt_ids, response_ids = prompt_and_answer_ids(tokenizer, prompt, response)
    return prompt_ids + response_ids


def training_rows(pairs, tokenizer, use_margin: bool, swap_labels: bool) -> list[dict]:
    """TRL's pre-tokenised preference rows: chosen_ids, rejected_ids[, margin]."""
    rows = []
    for pair in pairs.itertuples():
        chosen, rejected = (pair.rejected, pair.chosen) if swap_labels else (pair.chosen, pair.rejected)
        row = {"chosen_ids": reward_input_ids(tokenizer, pair.prompt, chosen),
               "rejected_ids": reward_input_ids(tokenizer, pair.prompt, rejected)}
        if use_margin:
            row["margin"] = float(pair.margin)
        rows.append(row)
    return rows


def held_out_votes(scores):
    """The votes held-out accuracy is measured on: held-out left/right votes, a repeat's vote left out."""
    return scores[(scores.split == "eval") & scores.choice.isin(["left", "right"]) & ~is_repeat(scores)]


def held_out_report(scores, n_bins: int = 5) -> dict:
    """Accuracy (with counts), ECE, reliability bins and accuracy by score gap on decided held-out votes."""
    held = held_out_votes(scores)
    left_won = (held.choice == "left").to_numpy()
    correct = int(held.correct.sum())
    return {"pairs": len(held), "correct": correct, "accuracy": correct / len(held) if len(held) else None,
            "ece": expected_calibration_error(held.p_left, left_won, n_bins) if len(held) else None,
            "reliability": reliability_bins(held.p_left, left_won, n_bins),
            "accuracy_by_margin": accuracy_by_margin(held.score_left, held.score_right, left_won),
            "accuracy_by_round": accuracy_by_round(held.get("round"), held.correct)}


def score_votes(scorer, votes):
    """Every labelled pair scored on both sides: score_left/right, p_left = σ(Δ), and `correct` for decided votes."""
    left = scorer.score(list(votes.prompt), list(votes.left_text))
    right = scorer.score(list(votes.prompt), list(votes.right_text))
    out = votes[["comparison_id", "pair_id", "prompt_id", "prompt", "split", "choice", "strength", "annotator",
                 "left_text", "right_text", "created_at", "repeat_of", "round"]].copy()
    out["score_left"], out["score_right"] = left, right
    out["p_left"] = preference_probability(left, right)
    decided = out.choice.isin(["left", "right"])
    out["correct"] = np.where(decided, (out.score_left > out.score_right) == (out.choice == "left"), None)
    return out


class RewardScorer:
    """A reward model (a PEFT sequence classifier) with its tokenizer: scores request + list pairs."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.device = next(model.parameters()).device

    @classmethod
    def from_folder(cls, path: str | Path, device: str | None = None) -> "RewardScorer":
        """A reward-model run folder (or its adapter/ folder), on the base model it was trained from."""
        base_name = read_adapter_config(path, "SEQ_CLS", REWARD_MADE_BY).get("base_model_name_or_path")
        if not isinstance(base_name, str):  # the scorer loads the base the adapter names: none, one line
            raise ModelLoadError(f"{adapter_dir(path)}/adapter_config.json names no base model "
                                 f"(base_model_name_or_path); pass a folder made by `{REWARD_MADE_BY}`.")
        untrained = cls.untrained(base_name, device)
        # A scorer never trains: LoRA folded into the base weights scores the same (to ~1e-5) without the adapter's
        # extra matmuls per layer (with score() sorting by length, 1.43x in bench/reward_scoring_speed.py).
        with readable_adapter(path, REWARD_MADE_BY):
            merged = PeftModel.from_pretrained(untrained.model, str(adapter_dir(path))).merge_and_unload()
        return cls(merged, untrained.tokenizer)

    @classmethod
    def untrained(cls, base_name: str, device: str | None = None) -> "RewardScorer":
        """The base model with a fresh (random) score head: its `features` are the frozen base's."""
        tokenizer = load_tokenizer(base_name)
        base = load_causal_lm(base_name, pick_device(device), dtype=torch.float32, head="reward")
        base.config.pad_token_id = tokenizer.pad_token_id
        return cls(base, tokenizer)

    def score(self, prompts: list[str], responses: list[str], batch_size: int = 16) -> list[float]:
        """One score per (request, list), in the order given."""
        return self._by_length(prompts, responses, batch_size, lambda batch: self.model(**batch).logits[:, 0]).tolist()

    def features(self, prompts: list[str], responses: list[str], batch_size: int = 16) -> np.ndarray:
        """(N, hidden) what the score head reads for each (request, list): the backbone's last hidden state at the
        last non-pad token, so `score` is the head applied to these (the informative choice of
        core/collect/design.py, measured in bench/label_efficiency.py, measures how new a pair is in this space)."""
        backbone = self.model.get_submodule(self.model.base_model_prefix)

        def pooled(batch):
            hidden = backbone(**batch).last_hidden_state  # (B, T, hidden)
            # the sequence classifier's own pooling: the last token that is not padding (left or right padded)
            positions = torch.arange(hidden.shape[1], device=hidden.device)
            last = (positions * (batch["input_ids"] != self.model.config.pad_token_id)).argmax(-1)  # (B,)
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

        return self._by_length(prompts, responses, batch_size, pooled).numpy()

    def _by_length(self, prompts, responses, batch_size, forward) -> torch.Tensor:
        """forward(batch) for every (request, list), stacked in the order given. Scoring is compute-bound on a CPU,
        so the lists go through in order of length (each batch pads to its longest) and come back in the caller's
        order."""
        ids = [reward_input_ids(self.tokenizer, p, r) for p, r in zip(prompts, responses)]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        parts = []
        for start in range(0, len(ids), batch_size):
            batch = self.tokenizer.pad({"input_ids": [ids[i] for i in order[start:start + batch_size]]},
                                       return_tensors="pt")
            with torch.inference_mode():
                parts.append(forward(batch.to(self.device)).float().cpu())
        stacked = torch.cat(parts) if parts else torch.zeros(0)
        return stacked[torch.as_tensor(np.argsort(order), dtype=torch.long)] if parts else stacked


def reward_trainer(cfg: RewardConfig, model, tokenizer, rows: list[dict], device, run_dir) -> RewardTrainer:
    """TRL's RewardTrainer on pre-tokenised rows with this stage's settings: a fresh LoRA, the score head trained
    whole beside it (bench/reward_pooling.py trains other heads with it)."""
    args = TRLRewardConfig(**trainer_arguments(
        device, cfg.seed, run_dir, cfg.precision, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate, per_device_train_batch_size=cfg.batch_size, max_length=cfg.max_length,
        center_rewards_coefficient=cfg.center_rewards or None, lr_scheduler_type="cosine", warmup_steps=0.1))
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_targets), task_type="SEQ_CLS", modules_to_save=["score"])
    return RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=lora)


def train(cfg: RewardConfig) -> Path:
    run_dir = prepare_run_dir("reward", cfg.output_dir)
    with Run(run_dir, total=max(cfg.max_steps, 0), cfg=cfg) as run:
        # 1. snapshot the votes; split by prompt
        sources = FeedbackSources(cfg.from_edits, cfg.from_both_bad, cfg.from_ratings, cfg.from_ties)
        votes, pairs, lineage = take_preferences(Store.existing(cfg.db or None), run_dir, cfg.eval_fraction, sources,
                                                 cfg.use_margin)
        train_pairs = pairs[pairs.split == "train"]
        if len(train_pairs) < 2:
            raise InputError(f"only {len(train_pairs)} training pairs on training prompts; vote left/right on a few "
                             "more pairs in the arena, or edit a list (a tie or 'both bad' alone teaches nothing).")
        base_name, device = resolve_base_model(cfg.base_model or None), pick_device(cfg.device)
        tokenizer = load_tokenizer(base_name)
        seed_weights(cfg.seed)
        model = weights_for(load_causal_lm(base_name, device, head="reward"), cfg.precision)
        model.config.pad_token_id = tokenizer.pad_token_id  # where the score is read (RewardScorer, and TRL's own)
        run.save_config(cfg, base_model_resolved=base_name, device_name=describe_device(device))
        log.info("reward model on %d train / %d held-out pairs (%s)", len(train_pairs), lineage["eval_pairs"],
                 ", ".join(f"{lineage[f'pairs_from_{name}']} from {name}" for name in SOURCES))

        # 2. optionally start the score head as a probe on the frozen model (LP-FT, core/train/reward_probe.py)
        if cfg.head_init == "probe":
            run.set_status("running", message="fitting the score head as a probe on the frozen model")
            fit = init_head_from_probe(model, RewardScorer(model, tokenizer), train_pairs, cfg.use_margin,
                                       cfg.swap_labels, cfg.center_rewards)
            run.log_metrics(0, fit)
            log.info("score head from a probe: %s", fit)
        # 3. train the LoRA adapter and score head with TRL's Bradley–Terry loss
        rows = training_rows(train_pairs, tokenizer, cfg.use_margin, cfg.swap_labels)
        trainer = reward_trainer(cfg, model, tokenizer, rows, device, run_dir)
        attach(trainer, run)
        trainer.train()
        stopped = run.stop.requested
        if not run.is_main:  # rank 0 saves and evaluates
            run.finish()
            return run_dir
        folder = RunFolder(run_dir)
        model = trained_model(trainer)
        model.save_pretrained(folder.adapter)
        # 4. score every labelled pair; report held-out accuracy, calibration, accuracy by margin
        run.set_status("running", message="scoring every labelled pair")
        scores = score_votes(RewardScorer(model, tokenizer), votes)
        write_parquet(folder.scores, scores)
        report = held_out_report(scores)
        write_json(folder.calibration, report)
        train_scored = scores[(scores.split == "train") & scores.choice.isin(["left", "right"])]
        run.log_metrics(run.step, {"eval/accuracy": report["accuracy"], "eval/pairs": report["pairs"],
                                   "eval/correct": report["correct"], "eval/ece": report["ece"],
                                   "eval/train_accuracy": train_scored.correct.mean() if len(train_scored) else None})
        log.info("held-out accuracy %s (%d/%d pairs), ECE %s", report["accuracy"], report["correct"],
                 report["pairs"], report["ece"])
        run.complete(stopped)
    return run_dir


if __name__ == "__main__":
    sys.exit(stage_main(RewardConfig, train, prog="python -m core.train.reward_model"))
