"""Connects a Hugging Face Trainer (TRL's SFTTrainer and RewardTrainer) to a run folder.

The trainer's own log lines become flat rows in metrics.jsonl (`train/loss`, `eval/accuracy`), its step count drives
status.json and the ETA, and a SIGTERM caught by the run stops training at the next step so the adapter is saved.
"""
from __future__ import annotations

import torch
from transformers import TrainerCallback, set_seed
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from core.config import knob
from core.model import PRECISIONS, peak_memory_mb, training_dtype
from core.train.run_writer import Run


def flat_logs(logs: dict) -> dict:
    """Trainer log keys as namespaced metric names: `loss` -> `train/loss`, `eval_accuracy` -> `eval/accuracy`."""
    out = {}
    for key, value in logs.items():
        if not isinstance(value, (int, float)) or key in ("total_flos",):
            continue
        if key.startswith("eval_"):
            out[f"eval/{key[5:]}"] = value
        elif key.startswith("train_"):  # the end-of-training summary (train_runtime, train_loss ...)
            out[f"summary/{key[6:]}"] = value
        else:
            out[f"train/{key}"] = value
    return out


class RunCallback(TrainerCallback):
    """Add with `attach(trainer, run)`, which also silences the trainer's own printing (the run has a bar)."""

    def __init__(self, run: Run):
        self.run = run

    def on_train_begin(self, args, state, control, **kwargs):
        self.run.set_total(state.max_steps)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            # the end-of-training summary row also carries the process's peak memory (RSS, and the GPU's)
            memory = peak_memory_mb() if "train_runtime" in logs else {}
            self.run.log_metrics(state.global_step, {**flat_logs(logs), **memory})

    def on_step_end(self, args, state, control, **kwargs):
        if self.run.stop.requested:
            control.should_training_stop = True


def seed_weights(seed: int) -> None:
    """Seed python, numpy and torch before a stage builds its model: the reward model's score head is initialised
    when the model loads, and TRL wraps LoRA adapters around it before its Trainer seeds itself, so without this
    two runs with one --seed in one process (a benchmark's loop) start from different weights."""
    set_seed(seed)


def precision_knob():
    """The `precision` setting every training stage's config has."""
    return knob("auto", "bf16 or fp32 matmuls: auto is bf16 where the device multiplies it natively (a GPU with "
                "bf16, a CPU with AVX512-BF16 or AMX: ~3x faster there), else fp32; trained weights and Adam stay fp32",
                choices=PRECISIONS)


def weights_for(model, precision: str):
    """The loaded model as --precision asks: fp32 weights for fp32 (a GPU loads bf16 ones), else as loaded."""
    return model.float() if precision == "fp32" else model


def trainer_arguments(device: torch.device, seed: int, output_dir, precision: str = "auto", **knobs) -> dict:
    """What every stage passes to TRL's config: no checkpoints or trackers of the trainer's own (the run folder
    is the record), log every step, the device the user picked (accelerate does the placement), and bf16 mixed
    precision (accelerate's autocast over fp32 weights on a CPU) where `precision` resolves to it."""
    # TRL turns activation checkpointing on by default; these models are small enough that it only costs time.
    return dict(output_dir=str(output_dir), seed=seed, logging_steps=1, save_strategy="no", report_to=[],
                use_cpu=device.type == "cpu", disable_tqdm=True, dataloader_num_workers=0,
                activation_checkpointing=False,
                bf16=training_dtype(device, precision) == torch.bfloat16, **knobs)


def trained_model(trainer):
    """The trained model without the autocast wrapper accelerate puts on its forward under bf16 mixed precision, so
    that what the stage computes after training (scores, held-out lists) is what `core score` and the next stages
    compute from the saved adapter."""
    return trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)


def attach(trainer, run: Run) -> None:
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(RunCallback(run))
