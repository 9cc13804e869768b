"""Supervised fine-tuning: a LoRA adapter trained on demonstrations of good top-5 lists, with TRL's SFTTrainer.

    python -m core train sft --preset quick          # minutes on 2 CPU cores
    python -m core train sft                         # GPU-sized defaults; see --help for every setting
    accelerate launch -m core train sft ...          # several GPUs

Data: every list a user wrote or edited in the arena, each counted `--own-weight` times, plus the hand-written seed
lists in data/demonstrations.jsonl (by default only for requests the user wrote none for: `--seed-lists`), train-split
prompts only (snapshot in the run's data/). Each example is tokenised here, exactly as the policy will
see it at generation time: the chat-templated request with our system prompt, then the list and EOS. The loss is on
the list tokens only (`completion_mask`), so the model learns to answer, not to predict requests.

Reported: training loss per step, and the well-formed top-5 rate of base vs tuned policy on held-out prompts
(`eval/well_formed_base`, `eval/well_formed_tuned`, with their samples in samples.jsonl).
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from datasets import Dataset
from peft import LoraConfig
from trl import SFTConfig as TRLSFTConfig
from trl import SFTTrainer

from core.collect.generate import complete, prompt_and_answer_ids
from core.config import check, knob, stage_main
from core.lists import parse_list
from core.model import describe_device, load
from core.records import InputError, SamplingSettings
from core.runs import RunFolder, prepare_run_dir
from core.store.database import Store
from core.train.run_writer import Run
from core.train.snapshot import SEED_LISTS, take_demonstrations, take_prompts
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
class SFTConfig:
    base_model: str = knob("", "Hugging Face id or folder of the base model; empty: $RLHF_BASE_MODEL or the "
                               "embedded SmolLM2-135M-Instruct")
    db: str = knob("", "DuckDB file holding the arena's demonstrations; empty: $RLHF_DB or data/rlhf.duckdb")
    seed_lists: str = knob("fill", "the hand-written lists shipped in data/: keep (all), fill (only for requests you "
                                   "wrote no list for: yours replace them), off (yours only)", choices=SEED_LISTS)
    own_weight: int = knob(2, "times each of your own lists counts, so a few of yours outweigh the seed lists' style")
    epochs: float = knob(3.0, "passes over the demonstrations")
    max_steps: int = knob(-1, "stop after this many optimiser steps (-1: run all epochs)")
    learning_rate: float = knob(2e-4, "AdamW learning rate for the LoRA weights")
    batch_size: int = knob(8, "examples per optimiser step")
    lora_r: int = knob(16, "LoRA rank")
    lora_alpha: int = knob(32, "LoRA scaling numerator (the update is scaled by alpha / r)")
    lora_dropout: float = knob(0.05, "dropout on the LoRA input during training")
    lora_targets: list[str] = knob(["q_proj", "k_proj", "v_proj", "o_proj"], "module names that get LoRA adapters")
    max_length: int = knob(512, "longest example in tokens (request + list); longer ones are truncated")
    eval_prompts: int = knob(72, "held-out prompts sampled for the well-formed rate, base vs tuned (0: skip)")
    eval_max_new_tokens: int = knob(160, "token budget per sampled list in the evaluation")
    device: str = knob("auto", "where to train: auto (GPU if present), cpu or cuda", choices=("auto", "cpu", "cuda"))
    precision: str = precision_knob()
    seed: int = knob(0, "seed for data order, LoRA initialisation and evaluation sampling")
    output_dir: str = knob("", "run folder; empty: models/runs/sft-<timestamp>")
    report_to: str = report_to_knob()

    PRESETS: ClassVar[dict] = {
        # 40 steps of 8 (~2 passes over the seed lists) took the held-out well-formed rate from 0.12 to 0.81
        "quick": dict(max_steps=40, batch_size=8, learning_rate=5e-4, eval_prompts=16, eval_max_new_tokens=128),
    }

    def __post_init__(self):
        check(self.epochs > 0, "epochs must be positive, e.g. --epochs 3.")
        check(1 <= self.own_weight <= 20, "own-weight must be 1 to 20: how many times each of your lists counts.")
        check(self.max_steps == -1 or self.max_steps > 0, "max-steps must be -1 (all epochs) or a positive count.")
        check(0 < self.learning_rate < 1, "learning-rate should be small and positive, e.g. 2e-4.")
        check(self.batch_size > 0, "batch-size must be at least 1.")
        check(self.lora_r > 0 and self.lora_alpha > 0, "lora-r and lora-alpha must be positive, e.g. 16 and 32.")
        check(0 <= self.lora_dropout < 1, "lora-dropout must be in [0, 1).")
        check(bool(self.lora_targets), "lora-targets needs at least one module name, e.g. q_proj,v_proj.")
        check(self.max_length >= 32, "max-length must be at least 32 tokens.")
        check(self.eval_prompts >= 0 and self.eval_max_new_tokens > 0,
              "eval-prompts must be >= 0 and eval-max-new-tokens positive.")


def tokenize_demonstration(tokenizer, prompt: str, response: str, max_length: int) -> dict:
    """input_ids = chat-templated request + list + EOS; completion_mask marks the list and EOS (the loss)."""
    prompt_ids, response_ids = prompt_and_answer_ids(tokenizer, prompt, response)
    input_ids = (prompt_ids + response_ids)[:max_length]
    completion_mask = ([0] * len(prompt_ids) + [1] * len(response_ids))[:max_length]
    return {"input_ids": input_ids, "completion_mask": completion_mask}


def supervised_trainer(model, tokenizer, examples: list[dict], cfg, run_dir, device, lora: LoraConfig | None
                       ) -> SFTTrainer:
    """TRL's SFTTrainer on tokenised examples (`tokenize_demonstration`: loss on the list tokens only), a cosine
    schedule; `cfg` gives epochs, max_steps, learning_rate, batch_size, max_length, seed and precision (SFTConfig, or
    a stage that learns from lists the same way: core/train/rejection.py). `lora` None: `model` already holds the
    adapter that trains."""
    args = TRLSFTConfig(**trainer_arguments(
        device, cfg.seed, run_dir, cfg.precision, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate, per_device_train_batch_size=cfg.batch_size, max_length=cfg.max_length,
        completion_only_loss=True, lr_scheduler_type="cosine", warmup_steps=0.1))
    return SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(examples), processing_class=tokenizer,
                      peft_config=lora)


def well_formed_rate(model, tokenizer, prompts: list[str], max_new_tokens: int, seed: int) -> tuple[float, list]:
    """Share of held-out prompts answered with a well-formed top-5 list, and the samples."""
    completions = complete(model, tokenizer, prompts, SamplingSettings(max_new_tokens=max_new_tokens), seed)
    ok = [parse_list(c.text).well_formed for c in completions]
    return sum(ok) / max(len(ok), 1), [{"prompt": c.request, "text": c.text, "well_formed": w, "finished": c.finished}
                                       for c, w in zip(completions, ok)]


def train(cfg: SFTConfig) -> Path:
    run_dir = prepare_run_dir("sft", cfg.output_dir)
    with Run(run_dir, total=max(cfg.max_steps, 0), cfg=cfg) as run:
        # 1. snapshot the data and load the base
        demos, lineage = take_demonstrations(Store(cfg.db or None), run_dir, cfg.seed_lists, cfg.own_weight)
        if demos.empty:
            raise InputError("no demonstrations to train on: pass --seed-lists fill (or keep), or write some in the "
                             "arena (edit a list and save it).")
        eval_prompts, _ = take_prompts(run_dir, "eval")
        seed_weights(cfg.seed)
        loaded = load(cfg.base_model or None, cfg.device)
        weights_for(loaded.model, cfg.precision)  # in place
        tokenizer = loaded.tokenizer
        run.save_config(cfg, base_model_resolved=loaded.name, device_name=describe_device(loaded.device))
        log.info("SFT on %d demonstrations (%d seed, %d from the arena x%d; %d seed lists replaced by yours)",
                 len(demos), lineage["seed"], lineage["from_arena"], cfg.own_weight, lineage["seed_replaced"])

        # 2. tokenise exactly as generation sees it; loss on the list tokens only
        examples = [tokenize_demonstration(tokenizer, p, r, cfg.max_length) for p, r in zip(demos.prompt, demos.response)]
        trainable = [e for e in examples if 1 in e["completion_mask"]]
        if not trainable:
            longest = max(e["completion_mask"].count(0) for e in examples)
            raise InputError(f"max-length {cfg.max_length} leaves no room for the list: the chat-templated requests "
                             f"alone take up to {longest} tokens; pass a larger --max-length, e.g. 512.")
        if len(trainable) < len(examples):
            log.warning("%d of %d demonstrations left out: their request fills max-length %d",
                        len(examples) - len(trainable), len(examples), cfg.max_length)

        # 3. train the LoRA adapter with TRL (accelerate places it on the device)
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM")
        trainer = supervised_trainer(loaded.model, tokenizer, trainable, cfg, run_dir, loaded.device, lora)
        attach(trainer, run)
        trainer.train()
        model = trained_model(trainer).eval()
        if run.is_main:
            model.save_pretrained(RunFolder(run_dir).adapter)
        stopped = run.stop.requested

        # 4. held-out well-formed rate, base (adapter off) vs tuned
        if cfg.eval_prompts and not stopped and run.is_main:
            prompts = eval_prompts[:cfg.eval_prompts]
            run.set_status("running", message="evaluating base vs tuned on held-out prompts")
            with model.disable_adapter():
                base_rate, base_samples = well_formed_rate(model, tokenizer, prompts, cfg.eval_max_new_tokens, cfg.seed)
            tuned_rate, tuned_samples = well_formed_rate(model, tokenizer, prompts, cfg.eval_max_new_tokens, cfg.seed)
            run.log_samples(run.step, [{"policy": "base", **s} for s in base_samples] +
                            [{"policy": "tuned", **s} for s in tuned_samples])
            run.log_metrics(run.step, {"eval/well_formed_base": base_rate, "eval/well_formed_tuned": tuned_rate,
                                       "eval/prompts": len(prompts)})
            log.info("well-formed top-5 rate on %d held-out prompts: base %.2f -> tuned %.2f", len(prompts),
                     base_rate, tuned_rate)
        run.complete(stopped)
    return run_dir


if __name__ == "__main__":
    sys.exit(stage_main(SFTConfig, train, prog="python -m core.train.sft"))
