"""Direct preference optimisation: a LoRA policy trained straight on the arena's votes with TRL's DPOTrainer.

    python -m core train dpo --preset quick                                   # minutes on 2 CPU cores
    python -m core train dpo --sft-adapter models/runs/sft-...                # start from (and stay near) SFT
    accelerate launch -m core train dpo --output-dir models/runs/dpo-1 ...    # several GPUs

No reward model and no sampling: DPO (Rafailov et al. 2023) minimises −log σ(β·[log π/π_ref(y⁺|x) −
log π/π_ref(y⁻|x)]) over the vote pairs, so β·log π/π_ref is the policy's implicit reward. Where this stage departs
from TRL's defaults, and why:
1. Pairs: the same snapshot and split as the reward model (core/train/snapshot.py `take_preferences`, default
   feedback sources: votes, edits, both-bad lists, ratings; ties are off, there is no winner to prefer). Train-split
   requests only; vote strength (the reward model's margin) is not used: the sigmoid DPO loss has none.
2. Tokenised here, not by TRL: each row is the chat-templated request with our system prompt (prompt_ids) and each
   list + EOS (chosen_ids, rejected_ids), by the very call SFT and the reward model use (`prompt_and_answer_ids`).
   TRL 1.16's DPOTrainer has no pre-tokenised input (SFTTrainer and RewardTrainer have): its text path tokenises
   with the tokenizer's special tokens (a second BOS for Llama-3-style templates) and prompt + list as one string,
   and its conversational path renders the answer through the chat template, so the newline after <|im_end|> becomes
   part of every completion. `_TokenisedDPOTrainer` hands our rows to TRL's own collator unchanged.
3. Reference = the policy training starts from. Without --sft-adapter: a fresh LoRA, reference = adapter disabled
   (the base). With it: the SFT adapter is loaded as the trainable adapter and TRL copies it, frozen, as a "ref"
   adapter that serves as the reference. Merging SFT into the base and training a fresh LoRA on top would give the
   same reference, but its adapter would be a delta on the merged weights that loads wrongly on the plain base
   (eval, the arena, PPO all load adapter + base); continuing SFT's adapter keeps ours a whole policy on the base,
   shaped like SFT's (the lora-* settings apply to a fresh adapter only).
4. --pairs-from RUN (a finished `core train rejection` run): instead of the votes, the reward model's pairs among
   the policy's own lists, each request's best finished list over its worst (rejection.best_over_worst). This is
   online DPO with a reward model ("iterative DPO", Xiong et al. 2024; Dong et al. 2024, "RLHF Workflow"): on-policy
   pairs, which the reward model orders best where their scores are far apart. The reference must be the policy that
   sampled them, so an empty --sft-adapter takes that run's. --pairs-top keeps the share with the widest reward
   gaps: on `reasons` most of the pairs the annotator reverses are in the closest quarter (bench/pair_quality.py).
   data/pairs.parquet then holds those pairs (source "reward_model", margin = reward gap) beside the votes'
   held-out pairs, which still give point 5.
   DPO lowers the likelihood of the chosen lists too, only less than the rejected ones': on `terse`, where the two
   lists of a pair are alike, that drift moved the policy to lists neither side looked like (headings, bullets).
   --sft-weight adds the chosen lists' negative log-likelihood (RPO, Pang et al. 2024; TRL's "sft" loss beside
   "sigmoid"), which holds them up: 43.6 % over SFT without it, 60.6 % with weight 1 (bench/README.md, "Online DPO
   with round 2's reward model, on `terse`, and what its pairs get right").
5. Held-out: DPO's implicit-reward accuracy on held-out left/right votes (a repeat counted once), one pair per
   evaluation batch so TRL's batch means are exact: eval/rewards/* under TRL's names, plus eval/accuracy with
   eval/correct and eval/pairs.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import pandas as pd
from datasets import Dataset
from peft import LoraConfig
from trl import DPOConfig as TRLDPOConfig
from trl import DPOTrainer

from core.collect.generate import prompt_and_answer_ids
from core.config import check, knob, stage_main
from core.model import (
    describe_device,
    load_tokenizer,
    pick_device,
)
from core.records import InputError
from core.runs import RunFolder, prepare_run_dir, read_json
from core.store.database import Store
from core.train.feedback import COLUMNS
from core.train.rejection import (
    best_over_worst,
    read_candidates,
    warn_unless_own_lists,
    widest,
)
from core.train.run_writer import Run
from core.train.snapshot import DEFAULT_EVAL_FRACTION, save_pairs, take_preferences
from core.train.start import POLICY_ADAPTER, start_policy
from core.train.trackers import report_to_knob
from core.train.trainer_run import (
    attach,
    precision_knob,
    seed_weights,
    trainer_arguments,
    weights_for,
)

log = logging.getLogger(__name__)


@dataclass
class DPOConfig:
    sft_adapter: str = knob("", "policy run (SFT, or DPO, RLOO) or adapter folder to start from; it is then also "
                                "the reference the policy is kept near. Empty: a fresh LoRA on the base")
    base_model: str = knob("", "Hugging Face id or folder of the base model; empty: the SFT adapter's base, else "
                               "$RLHF_BASE_MODEL or the embedded SmolLM2-135M-Instruct")
    db: str = knob("", "DuckDB file holding the votes; empty: $RLHF_DB or data/rlhf.duckdb")
    pairs_from: str = knob("", "a finished rejection run whose reward-scored lists give the training pairs instead "
                               "of the votes: each request's best list over its worst (online DPO with a reward "
                               "model); an empty --sft-adapter then starts from the policy that sampled them")
    pairs_top: float = knob(1.0, "with --pairs-from: train on this share of the pairs, those with the largest "
                                 "reward-model gaps (1: all); the closest calls are the ones it gets wrong most")
    eval_fraction: float = knob(DEFAULT_EVAL_FRACTION, "share of custom (non-library) prompts held out; library "
                                                       "prompts keep their split")
    beta: float = knob(0.1, "β: the implicit reward is β·log(π/π_ref); larger keeps the policy nearer the reference")
    sft_weight: float = knob(0.0, "weight of a negative log-likelihood term on the chosen lists beside DPO's loss "
                                  "(RPO, Pang et al. 2024): keeps them likely while DPO pushes the pair apart")
    epochs: float = knob(2.0, "passes over the training pairs")
    max_steps: int = knob(-1, "stop after this many optimiser steps (-1: run all epochs)")
    learning_rate: float = knob(5e-5, "AdamW learning rate for the LoRA weights")
    batch_size: int = knob(8, "pairs per optimiser step")
    lora_r: int = knob(16, "LoRA rank of a fresh adapter (an SFT adapter keeps its own)")
    lora_alpha: int = knob(32, "LoRA scaling numerator of a fresh adapter (the update is scaled by alpha / r)")
    lora_targets: list[str] = knob(["q_proj", "k_proj", "v_proj", "o_proj"], "module names that get LoRA adapters "
                                                                             "(a fresh adapter only)")
    max_length: int = knob(512, "longest request + list in tokens; longer lists are cut, a request that fills it "
                                "leaves its pair out")
    device: str = knob("auto", "where to train: auto (GPU if present), cpu or cuda", choices=("auto", "cpu", "cuda"))
    precision: str = precision_knob()
    seed: int = knob(0, "seed for data order and LoRA initialisation")
    output_dir: str = knob("", "run folder; empty: models/runs/dpo-<timestamp>")
    report_to: str = report_to_knob()

    PRESETS: ClassVar[dict] = {
        # a step of 4 pairs costs about as much as an SFT step of 8 lists (two sides, plus the reference's forward);
        # on 48 scripted votes one update at 1e-4 already took held-out loss 0.69 -> 0.61 (4/4 pairs right)
        "quick": dict(max_steps=16, batch_size=4, max_length=384, learning_rate=1e-4),
    }

    def __post_init__(self):
        check(0 <= self.eval_fraction < 1, "eval-fraction must be in [0, 1), e.g. 0.2.")
        check(0 < self.pairs_top <= 1, "pairs-top must be in (0, 1], e.g. 0.75 (1 trains on every pair).")
        check(self.sft_weight >= 0, "sft-weight must be >= 0, e.g. 1.0 (0: DPO's loss alone).")
        check(self.beta > 0, "beta must be positive, e.g. --beta 0.1 (DPO's β, not a KL weight that can be 0).")
        check(self.epochs > 0, "epochs must be positive, e.g. --epochs 2.")
        check(self.max_steps == -1 or self.max_steps > 0, "max-steps must be -1 (all epochs) or a positive count.")
        check(0 < self.learning_rate < 1, "learning-rate should be small and positive, e.g. 5e-5.")
        check(self.batch_size > 0, "batch-size must be at least 1.")
        check(self.lora_r > 0 and self.lora_alpha > 0, "lora-r and lora-alpha must be positive, e.g. 16 and 32.")
        check(bool(self.lora_targets), "lora-targets needs at least one module name, e.g. q_proj,v_proj.")
        check(self.max_length >= 32, "max-length must be at least 32 tokens.")


def preference_rows(tokenizer, pairs, max_length: int) -> list[dict]:
    """TRL's tokenised explicit-prompt rows: prompt_ids (chat-templated request), chosen_ids and rejected_ids (a list
    + EOS), as generation and the reward model see them. A pair whose request alone fills max_length is left out:
    TRL's collator cuts from the end, so no list token would remain."""
    rows = []
    for pair in pairs.itertuples():
        prompt_ids, chosen_ids = prompt_and_answer_ids(tokenizer, pair.prompt, pair.chosen)
        _, rejected_ids = prompt_and_answer_ids(tokenizer, pair.prompt, pair.rejected)
        if len(prompt_ids) < max_length:
            rows.append({"prompt_ids": prompt_ids, "chosen_ids": chosen_ids, "rejected_ids": rejected_ids})
    return rows


def with_reward_model_pairs(cfg: DPOConfig, pairs: pd.DataFrame, run_dir: Path) -> tuple[DPOConfig, pd.DataFrame]:
    """Docstring, point 4: the rejection run's best-over-worst pairs train, the votes' held-out pairs stay; the
    config's sft_adapter defaults to the policy that sampled them."""
    source = read_json(RunFolder(cfg.pairs_from).config)
    if not cfg.sft_adapter and source.get("sft_adapter"):
        cfg = replace(cfg, sft_adapter=source["sft_adapter"])
        log.info("--pairs-from %s: starting from (and staying near) %s, the policy that sampled them",
                 cfg.pairs_from, cfg.sft_adapter)
    warn_unless_own_lists(cfg.pairs_from, source, cfg.sft_adapter, "--pairs-from")
    per_request = read_candidates(cfg.pairs_from)  # rewards with the penalty that run scored them with
    every = best_over_worst(per_request)
    scored = widest(every, cfg.pairs_top)
    on_policy = pd.DataFrame([("reward_model", None, None, "train", p["prompt"], p["chosen"], p["rejected"], p["gap"])
                              for p in scored], columns=COLUMNS)
    pairs = pd.concat([on_policy, pairs[pairs.split == "eval"]], ignore_index=True)
    save_pairs(run_dir, pairs, pairs_from=cfg.pairs_from, train_pairs=len(on_policy),
               requests_without_pair=len(per_request) - len(every), pairs_left_out_close=len(every) - len(scored))
    return cfg, pairs


class _TokenisedDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer fed rows tokenised by `preference_rows` (docstring, point 2): its text preparation is
    skipped, its collator takes prompt_ids / chosen_ids / rejected_ids as they are."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset


def train(cfg: DPOConfig) -> Path:
    run_dir = prepare_run_dir("dpo", cfg.output_dir)
    with Run(run_dir, total=max(cfg.max_steps, 0), cfg=cfg) as run:
        # 1. snapshot the votes (split by prompt) and load the starting policy
        _, pairs, _ = take_preferences(Store.existing(cfg.db or None), run_dir, cfg.eval_fraction)
        if cfg.pairs_from:
            cfg, pairs = with_reward_model_pairs(cfg, pairs, run_dir)
        train_pairs = pairs[pairs.split == "train"]
        held_out = pairs[(pairs.split == "eval") & (pairs.source == "votes")]
        if len(train_pairs) < 2 and cfg.pairs_from:
            raise InputError(f"{cfg.pairs_from} gives only {len(train_pairs)} pairs (a request whose lists all "
                             "tie, or never end, gives none): sample more lists per request with rejection.")
        if len(train_pairs) < 2:
            raise InputError(f"only {len(train_pairs)} training pairs on training prompts; vote left/right on a few "
                             "more pairs in the arena, or edit a list (a tie or 'both bad' alone teaches nothing).")
        device = pick_device(cfg.device)
        seed_weights(cfg.seed)
        base_name, policy = start_policy(cfg.base_model, cfg.sft_adapter, device)
        policy = weights_for(policy, cfg.precision)
        tokenizer = load_tokenizer(base_name)
        run.save_config(cfg, base_model_resolved=base_name, device_name=describe_device(device))
        log.info("DPO on %d train pairs (%d held-out votes), starting from %s", len(train_pairs), len(held_out),
                 cfg.sft_adapter or "the base")

        # 2. tokenise exactly as generation and the reward model do
        rows = preference_rows(tokenizer, train_pairs, cfg.max_length)
        if not rows:
            raise InputError(f"max-length {cfg.max_length} leaves no room for the lists: the chat-templated requests "
                             "alone fill it; pass a larger --max-length, e.g. 512.")
        eval_rows = preference_rows(tokenizer, held_out, cfg.max_length)

        # 3. train: TRL's sigmoid DPO loss against the reference (docstring, point 3), plus its mean token NLL on
        # the chosen lists when --sft-weight > 0 (TRL's "sft" loss type)
        args = TRLDPOConfig(**trainer_arguments(
            device, cfg.seed, run_dir, cfg.precision, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
            beta=cfg.beta, **({"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, cfg.sft_weight]}
                              if cfg.sft_weight else {}),
            learning_rate=cfg.learning_rate, per_device_train_batch_size=cfg.batch_size, max_length=cfg.max_length,
            per_device_eval_batch_size=1, prediction_loss_only=True, lr_scheduler_type="cosine", warmup_steps=0.1))
        lora = None if cfg.sft_adapter else LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                                       target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM")
        trainer = _TokenisedDPOTrainer(model=policy, args=args, train_dataset=Dataset.from_list(rows),
                                       processing_class=tokenizer, peft_config=lora)
        attach(trainer, run)
        trainer.train()
        stopped = run.stop.requested
        if run.is_main:  # the policy adapter only: TRL's frozen "ref" copy is the starting point, already saved
            trainer.model.save_pretrained(RunFolder(run_dir).adapter, selected_adapters=[POLICY_ADAPTER])

        # 4. held-out implicit-reward accuracy, one vote pair per batch (every process takes part)
        if eval_rows and not stopped:
            run.set_status("running", message="implicit-reward accuracy on held-out votes")
            metrics = trainer.evaluate(eval_dataset=Dataset.from_list(eval_rows))
            accuracy = metrics["eval_rewards/accuracies"]
            run.log_metrics(run.step, {"eval/accuracy": accuracy, "eval/correct": round(accuracy * len(eval_rows)),
                                       "eval/pairs": len(eval_rows)})
            log.info("held-out implicit-reward accuracy %.3f (%d pairs)", accuracy, len(eval_rows))
        run.complete(stopped)
    return run_dir


if __name__ == "__main__":
    sys.exit(stage_main(DPOConfig, train, prog="python -m core.train.dpo"))
