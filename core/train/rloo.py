"""REINFORCE leave-one-out: a LoRA policy trained against our reward model with TRL's RLOOTrainer.

    python -m core train rloo --reward-model models/runs/reward-... --preset quick     # minutes on 2 CPU cores
    python -m core train rloo --reward-model RUN --sft-adapter models/runs/sft-...     # start from (and stay near) SFT
    accelerate launch -m core train rloo --reward-model RUN --output-dir models/runs/rloo-1 ...

Each step samples k = --num-generations lists for each of batch-size / k training requests, scores them with the
reward model less β times the list's KL to the reference (k1, summed over its tokens), and pushes each list's
log-probability up by its reward minus the mean reward of its k − 1 siblings (Ahmadian et al. 2024): a baseline
with no value model. Where this stage departs from TRL's defaults, and why:
1. The reward is a bridge, `RewardModelReward`, a callable TRL calls with each batch's prompts and completions:
   our reward model is a PEFT SEQ_CLS adapter on a base (which TRL's string path cannot load), and it was trained to
   read request + list + EOS with our template (core/train/reward_model.py `reward_input_ids`). TRL's own
   model path scores the decoded text without its EOS (special tokens are skipped), so the score would be read at
   the wrong token, and re-renders conversations through the chat template, adding the newline after <|im_end|>. The
   bridge scores (request, list) with `RewardScorer`, exactly as the reward model's held-out accuracy was measured.
2. A list that never ends gets `missing_eos_penalty` taken off its score (PPO's rule, RLHF_NOTES 2): the reward
   model is shown the cut list closed by EOS and would otherwise score it as finished.
3. Prompts go to TRL as chat messages (system prompt + request): TRL applies the chat template with the generation
   prompt and no added special tokens, the very ids `chat_text` gives generation (a tokenizer without a template
   gets chat_text's plain transcript). Sampling is plain temperature sampling (top-k and top-p off), and dropout
   is off, so TRL's log-probs are those of the distribution sampled from.
4. Reference = the policy training starts from: the base (adapter disabled), or with --sft-adapter a frozen copy of
   the SFT adapter, which is also the adapter trained (core/train/dpo.py, point 3, says why it is not merged).
5. Logged under TRL's names (train/reward, train/kl, train/entropy, train/completions/*, train/clip_ratio/*), plus
   train/well_formed (share of well-formed top-5 lists) and samples.jsonl every --sample-every steps.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from datasets import Dataset
from peft import LoraConfig
from trl import RLOOConfig as TRLRLOOConfig
from trl import RLOOTrainer

from core.collect.generate import SYSTEM_PROMPT, chat_text, eos_ids
from core.config import check, knob, stage_main
from core.lists import parse_list
from core.model import describe_device, load_tokenizer, pick_device
from core.runs import RunFolder, prepare_run_dir, read_adapter_config
from core.stages import REWARD_MADE_BY
from core.train.reward_model import RewardScorer
from core.train.run_writer import Run
from core.train.snapshot import note_reward_model, take_prompts
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
class RLOOConfig:
    reward_model: str = knob("", "reward-model run folder (python -m core train reward); required")
    sft_adapter: str = knob("", "policy run (SFT, or DPO, RLOO) or adapter folder to start from; it is then also "
                                "the KL reference. Empty: a fresh LoRA on the base")
    base_model: str = knob("", "base model; empty: the SFT adapter's base, else $RLHF_BASE_MODEL or the embedded "
                               "SmolLM2-135M-Instruct")
    prompts_file: str = knob("", "JSONL of {\"prompt\": ...} rows to train on; empty: the library's train split")
    max_steps: int = knob(200, "optimiser steps; each samples and scores one batch of lists")
    batch_size: int = knob(32, "lists sampled per step: num-generations for each of batch-size / num-generations "
                               "requests")
    num_generations: int = knob(4, "k: lists sampled per request; each one's baseline is the mean reward of the "
                                   "other k - 1")
    max_new_tokens: int = knob(160, "most tokens sampled per list")
    temperature: float = knob(0.7, "sampling temperature (the log-probs use the same one)")
    learning_rate: float = knob(3e-5, "AdamW learning rate for the LoRA weights")
    beta: float = knob(0.05, "β: weight of the KL penalty (nats per list) against the reference, taken off the "
                             "reward; 0 switches it off")
    missing_eos_penalty: float = knob(1.0, "taken off the reward-model score of a list that never ends")
    lora_r: int = knob(16, "LoRA rank of a fresh adapter (an SFT adapter keeps its own)")
    lora_alpha: int = knob(32, "LoRA scaling numerator of a fresh adapter")
    lora_targets: list[str] = knob(["q_proj", "k_proj", "v_proj", "o_proj"], "module names that get LoRA adapters "
                                                                             "(a fresh adapter only)")
    sample_every: int = knob(5, "keep the sampled lists with their scores in samples.jsonl every this many steps")
    device: str = knob("auto", "where to train: auto (GPU if present), cpu or cuda", choices=("auto", "cpu", "cuda"))
    precision: str = precision_knob()
    seed: int = knob(0, "seed for prompt order, sampling and LoRA initialisation")
    output_dir: str = knob("", "run folder; empty: models/runs/rloo-<timestamp>")
    report_to: str = report_to_knob()

    PRESETS: ClassVar[dict] = {
        # two requests x 4 lists per step; 160 tokens as PPO's quick preset: at 128 a first batch from the base had
        # 3 of 8 lists cut (and penalised), SFT's lists run ~110 tokens
        "quick": dict(max_steps=8, batch_size=8, num_generations=4, max_new_tokens=160, learning_rate=1e-4,
                      sample_every=2),
    }

    def __post_init__(self):
        check(bool(self.reward_model), "RLOO needs a reward model: pass --reward-model models/runs/reward-<timestamp>.")
        check(self.max_steps > 0, "max-steps must be a positive count, e.g. --max-steps 200.")
        check(self.num_generations >= 2, "num-generations must be at least 2: the baseline of each list is the mean "
                                         "of the others, e.g. --num-generations 4.")
        check(self.batch_size > 0 and self.batch_size % self.num_generations == 0,
              f"batch-size ({self.batch_size}) must be a multiple of num-generations ({self.num_generations}), "
              f"e.g. --batch-size {2 * self.num_generations}.")
        check(self.max_new_tokens > 0, "max-new-tokens must be positive, e.g. 160.")
        check(self.temperature > 0, "temperature must be positive, e.g. 0.7.")
        check(0 < self.learning_rate < 1, "learning-rate should be small and positive, e.g. 3e-5.")
        check(self.beta >= 0, "beta must be >= 0 (0 switches the KL penalty off), e.g. 0.05.")
        check(self.missing_eos_penalty >= 0, "missing-eos-penalty must be >= 0, e.g. 1.0.")
        check(self.lora_r > 0 and self.lora_alpha > 0, "lora-r and lora-alpha must be positive, e.g. 16 and 32.")
        check(bool(self.lora_targets), "lora-targets needs at least one module name, e.g. q_proj,v_proj.")
        check(self.sample_every > 0, "sample-every must be at least 1.")


def rollout_prompt(tokenizer, request: str):
    """A request as TRL samples from it (docstring, point 3): the chat messages, or chat_text's transcript."""
    if not tokenizer.chat_template:
        return chat_text(tokenizer, request)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": request}]


def completion_text(completion) -> str:
    """TRL's completion: the assistant message of a conversational prompt, else the text itself."""
    return completion[-1]["content"] if isinstance(completion, list) else completion


class RewardModelReward:
    """The bridge (docstring, point 1): a TRL reward function scoring each (request, list) with our reward model,
    less `missing_eos_penalty` for a list that never ended. TRL passes the batch's prompts, completions and token ids
    and the dataset's other columns (`request`) as keywords. `on_scored(step, rows)` sees every scored batch."""

    def __init__(self, scorer: RewardScorer, eos: list[int], missing_eos_penalty: float, on_scored=None):
        self.scorer, self.eos, self.on_scored = scorer, set(eos), on_scored
        self.missing_eos_penalty = missing_eos_penalty
        self.__name__ = "reward_model"  # TRL names the function's metrics after it: rewards/reward_model/mean

    def __call__(self, prompts, completions, completion_ids, request, trainer_state=None, log_metric=None,
                 **columns) -> list[float]:
        lists = [completion_text(c) for c in completions]
        ended = [bool(ids) and ids[-1] in self.eos for ids in completion_ids]
        scores = self.scorer.score(list(request), lists)
        rewards = [s - (0.0 if e else self.missing_eos_penalty) for s, e in zip(scores, ended)]
        well_formed = [parse_list(text).well_formed for text in lists]
        if log_metric is not None:
            log_metric("well_formed", sum(well_formed) / len(lists))
        if self.on_scored is not None:
            step = trainer_state.global_step + 1 if trainer_state is not None else 0  # the step these lists train
            self.on_scored(step, [{"prompt": r, "text": t, "score": s, "reward": w, "finished": e, "well_formed": f}
                                  for r, t, s, w, e, f in zip(request, lists, scores, rewards, ended, well_formed)])
        return rewards


def train(cfg: RLOOConfig) -> Path:
    run_dir = prepare_run_dir("rloo", cfg.output_dir)
    with Run(run_dir, total=cfg.max_steps, cfg=cfg) as run:
        # 1. prompts snapshot, the reward model, the starting policy
        read_adapter_config(cfg.reward_model, "SEQ_CLS", REWARD_MADE_BY)
        requests, _ = take_prompts(run_dir, "train", cfg.prompts_file or None)
        note_reward_model(run_dir, cfg.reward_model)
        device = pick_device(cfg.device)
        seed_weights(cfg.seed)
        base_name, policy = start_policy(cfg.base_model, cfg.sft_adapter, device)
        policy = weights_for(policy, cfg.precision)
        tokenizer = load_tokenizer(base_name)
        scorer = RewardScorer.from_folder(cfg.reward_model, device=str(device))
        run.save_config(cfg, base_model_resolved=base_name, device_name=describe_device(device))
        log.info("RLOO on %d requests, k=%d, starting from %s", len(requests), cfg.num_generations,
                 cfg.sft_adapter or "the base")

        # 2. the bridge: reward-model scores, samples kept every sample_every steps
        def keep_samples(step: int, rows: list[dict]) -> None:
            if step % cfg.sample_every == 0 or step == 1:
                run.log_samples(step, rows)

        reward = RewardModelReward(scorer, eos_ids(policy, tokenizer), cfg.missing_eos_penalty, keep_samples)
        dataset = Dataset.from_list([{"prompt": rollout_prompt(tokenizer, r), "request": r} for r in requests])

        # 3. train: sample k lists per request, leave-one-out advantages, clipped REINFORCE update
        args = TRLRLOOConfig(**trainer_arguments(
            device, cfg.seed, run_dir, cfg.precision, max_steps=cfg.max_steps, learning_rate=cfg.learning_rate,
            per_device_train_batch_size=cfg.batch_size, num_generations=cfg.num_generations,
            max_completion_length=cfg.max_new_tokens, temperature=cfg.temperature, top_p=1.0, top_k=0,
            beta=cfg.beta, disable_dropout=True))
        lora = None if cfg.sft_adapter else LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                                       target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM")
        trainer = RLOOTrainer(model=policy, reward_funcs=reward, args=args, train_dataset=dataset,
                              processing_class=tokenizer, peft_config=lora)
        attach(trainer, run)
        trainer.train()
        if run.is_main:
            trainer.model.save_pretrained(RunFolder(run_dir).adapter, selected_adapters=[POLICY_ADAPTER])
        run.complete(run.stop.requested)
    return run_dir


if __name__ == "__main__":
    sys.exit(stage_main(RLOOConfig, train, prog="python -m core.train.rloo"))
