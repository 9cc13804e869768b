"""PPO for language models, written out here because TRL removed its PPOTrainer in 1.13.

    python -m core train ppo --reward-model models/runs/reward-... --preset quick
    python -m core train ppo --reward-model RUN --sft-adapter models/runs/sft-...    # start from the SFT policy
    python -m core train ppo --resume models/runs/ppo-...                             # after a stop, crash or kill -9
    accelerate launch -m core train ppo --reward-model RUN ...                        # several GPUs

One update, in the numbered steps below: 1. sample, 2. truncate at EOS (unless --stop-at-eos false), 3. reference
and policy log-probs, values, 4. score (PPOTrainer.rollout); 5. per-token rewards, 6. advantages, 7. clipped updates
(ppo_update); 8. KL controller, logs, checkpoint (train). The maths is in maths.py, the shared model in
policy_value.py, seeds and checkpoints in state.py.

The method follows Ziegler et al. 2019 / Stiennon et al. 2020 as implemented in TRL's former PPOTrainer and
checked against Huang et al. 2024 ("The N+ implementation details of RLHF with PPO"). Where it departs:
1. One copy of the base weights serves policy, reference, value and (same base) reward model: see policy_value.py.
2. The value function is a linear head on the frozen reference's hidden states (which the KL term computes
   anyway), not a separate fully trained model (TRL's design): the critic costs no forward pass of its own and
   its loss never pulls on the policy's weights.
3. Reward-model scores are normalised with a mean and std measured once on the starting policy's samples
   (Stiennon et al. 2020), so kl_coef means the same thing whatever reward model is plugged in.
4. Sampling is plain temperature sampling (top_k 0, top_p 1): log-probs are computed from logits / T, the very
   distribution sampled from, or the PPO ratio is wrong from the first step. They are recomputed after sampling by
   the update's own forward pass (step 3), so the first mini-batch's ratio is exactly 1 whatever sampled. On a CPU
   the rollouts are sampled by llama.cpp (`--sampling-engine`, core/llamacpp.py): the base's GGUF loaded once, the
   policy's LoRA written to a small GGUF and applied before each batch, 8-16 lists decoded together.
5. Every update is a pure function of (checkpoint, update index) (state.py), so a run resumed after kill -9
   retraces an uninterrupted one.
6. `--precision auto` loads the base in bf16 where the device multiplies it natively (a CPU with AVX512-BF16 too):
   ~3x faster forward passes and half the weights' memory; LoRA, heads and Adam stay fp32. The price is rounding:
   once the weights move, bf16 activations round differently, so later mini-batches' ratios carry noise (a run's
   clipfrac stays ~0.008 and approxkl ~0.0018 after the first updates, against ~0 in fp32; bench/README.md).
"""
from __future__ import annotations

import logging
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from peft import LoraConfig
from transformers import GenerationConfig

from core.collect.generate import SYSTEM_PROMPT, chat_text, eos_ids
from core.config import stage_main
from core.gguf_writer import policy_gguf
from core.lists import parse_list
from core.llamacpp import LlamaCppSampler, LoraRollouts
from core.model import (
    describe_device,
    llamacpp_unsupported,
    load_causal_lm,
    load_tokenizer,
    peak_memory_mb,
    pick_device,
    training_dtype,
)
from core.records import InputError, SamplingSettings
from core.runs import RunFolder, RunState, prepare_run_dir
from core.train.ppo import policy_value
from core.train.ppo.config import PPOConfig
from core.train.ppo.maths import (
    adaptive_kl_coef,
    gae,
    kl_estimators,
    masked_mean,
    masked_whiten,
    per_token_rewards,
    policy_loss,
    truncate_after_eos,
    value_loss,
)
from core.train.ppo.state import (
    derive_seed,
    load_checkpoint,
    prompt_batch,
    save_checkpoint,
    stop_requested,
)
from core.train.reward_model import RewardScorer
from core.train.run_writer import Run, rewind_logs
from core.train.snapshot import note_reward_model, take_prompts
from core.train.start import base_name_for

__all__ = ["PPOConfig", "PPOTrainer", "Rollout", "ppo_update", "train"]
log = logging.getLogger(__name__)


@dataclass
class Rollout:
    """One update's experience; every tensor is (B, R) over response tokens unless noted."""
    prompts: list[str]
    texts: list[str]
    input_ids: torch.Tensor  # (B, Q + R): left-padded query, then the response
    attention_mask: torch.Tensor  # (B, Q + R)
    context_length: int  # Q
    mask: torch.Tensor  # 1 on kept response tokens (up to and including the first EOS; all with --stop-at-eos false)
    ended: torch.Tensor  # (B,) an EOS was sampled (all true with --stop-at-eos false)
    logprobs: torch.Tensor  # under the policy that sampled them, from generation's own logits
    ref_logprobs: torch.Tensor
    features: torch.Tensor  # (B, R, H) the reference's hidden states: what the value head reads
    values: torch.Tensor
    raw_scores: torch.Tensor  # (B,) the reward model's output
    scores: torch.Tensor  # (B,) normalised, minus the missing-EOS penalty
    seconds: dict = field(default_factory=dict)  # wall time of each step by metric name (time/sample_s, ...)


class Stopwatch:
    """Seconds between laps, by metric name: where a rollout's time goes (time/sample_s, time/reference_s, ...)."""

    def __init__(self):
        self.seconds, self._last = {}, time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name], self._last = now - self._last, now


class PPOTrainer:
    """Holds the models and optimiser for one run; `rollout` then `ppo_update` is one update."""

    def __init__(self, cfg: PPOConfig, accelerator, pv, optimizer, tokenizer, scorer,
                 rollouts: LoraRollouts | None = None, reward_prompt: str = SYSTEM_PROMPT):
        self.cfg, self.accelerator, self.pv, self.optimizer = cfg, accelerator, pv, optimizer
        self.tokenizer, self.scorer = tokenizer, scorer
        self.rollouts = rollouts  # set: llama.cpp samples step 1 (core/llamacpp.py); None: PyTorch
        self.reward_prompt = reward_prompt  # the system prompt the shared reward model's lists were asked with
        self.model = accelerator.unwrap_model(pv)
        self.eos = eos_ids(self.model.lm, tokenizer)
        if not cfg.stop_at_eos:  # generate() fills a None eos_token_id from the model's own config (TRL did this too)
            self.model.lm.generation_config.eos_token_id = None
        self.chunk = cfg.batch_size // cfg.mini_batches

    def _chunked(self, fn, *tensors):
        """fn over mini-batch-sized slices (bounds the (B, R, V) logits in memory), outputs concatenated."""
        outs = [fn(*(t[i:i + self.chunk] for t in tensors)) for i in range(0, tensors[0].shape[0], self.chunk)]
        return [torch.cat(parts) for parts in zip(*outs)] if isinstance(outs[0], tuple) else torch.cat(outs)

    @torch.no_grad()
    def rollout(self, prompts: list[str], seed: int, score_mean: float, score_std: float) -> Rollout:
        cfg, tok, model = self.cfg, self.tokenizer, self.model
        device = self.accelerator.device
        # 1. sample: left-padded queries (B, Q) -> responses (B, R), plain temperature sampling
        query = tok([chat_text(tok, p, cfg.system_prompt) for p in prompts], return_tensors="pt", padding=True,
                    add_special_tokens=False).to(device)
        Q = query["input_ids"].shape[1]
        generation = GenerationConfig(do_sample=True, temperature=cfg.temperature, top_k=0, top_p=1.0,
                                      max_new_tokens=cfg.response_length, pad_token_id=tok.pad_token_id,
                                      eos_token_id=self.eos if cfg.stop_at_eos else None)
        torch.manual_seed(seed)
        clock = Stopwatch()
        if self.rollouts:  # the base plus the policy's LoRA, sampled by llama.cpp; step 3b makes it exact
            sampled = self._sample_llamacpp(query, seed)  # (B, R)
        else:
            with model.merged_policy():
                sampled = model.peft_model.generate(**query, generation_config=generation)[:, Q:]  # (B, R)
        # 2. keep each response up to its first EOS; or, --stop-at-eos false, every sampled token (EOS or not)
        if cfg.stop_at_eos:
            responses, mask, ended = truncate_after_eos(sampled, self.eos, tok.pad_token_id)
        else:
            responses, mask = sampled, torch.ones_like(sampled)
            ended = torch.ones(sampled.shape[0], dtype=torch.bool, device=sampled.device)
        input_ids = torch.cat([query["input_ids"], responses], 1)  # (B, Q + R)
        attention_mask = torch.cat([query["attention_mask"], mask], 1)
        texts = tok.batch_decode(responses, skip_special_tokens=True)
        clock.lap("time/sample_s")
        # 3. reference log-probs (same tokens, same temperature) and its hidden states -> values
        ref_logprobs, features = self._chunked(lambda i, a: model.reference(i, a, Q, cfg.temperature),
                                               input_ids, attention_mask)
        values = model.values(features)
        clock.lap("time/reference_s")
        # 3b. the old log-probs by the update's own forward, not from generation's logits: sampling ran on merged
        # weights with a KV cache, another computation whose float noise would make the first ratio != 1 (TRL's
        # PPOTrainer recomputed them too). Costs one no-grad forward; saves keeping R x (B, V) logits.
        logprobs = self._chunked(lambda i, a, f: model(i, a, Q, cfg.temperature, f)[0], input_ids, attention_mask,
                                 features)
        clock.lap("time/old_logprobs_s")
        # 4. score once with the reward model, at the last kept token; normalise; penalise lists that never end
        if self.scorer is None:
            ids, attention, q = input_ids, attention_mask, Q
            if cfg.system_prompt != self.reward_prompt:  # it reads each list asked as the lists it learnt on
                asked = tok([chat_text(tok, p, self.reward_prompt) for p in prompts], return_tensors="pt",
                            padding=True, add_special_tokens=False).to(device)  # (B, Q')
                q = asked["input_ids"].shape[1]
                ids = torch.cat([asked["input_ids"], responses], 1)
                attention = torch.cat([asked["attention_mask"], mask], 1)
            last = q + mask.sum(1) - 1  # (B,)
            raw = self._chunked(model.reward_scores, ids, attention, last)
        else:
            raw = torch.tensor(self.scorer.score(prompts, texts), device=device)
        clock.lap("time/score_s")
        scores = (raw - score_mean) / score_std
        scores = scores - cfg.missing_eos_penalty * (~ended.bool()).float()
        return Rollout(prompts, [t.strip() for t in texts], input_ids, attention_mask, Q, mask.float(), ended,
                       logprobs * mask, ref_logprobs * mask, features, values * mask, raw, scores, clock.seconds)

    def _sample_llamacpp(self, query, seed: int) -> torch.Tensor:
        """Step 1 through llama.cpp: each left-padded query row without its padding, answers right-padded (B, R)."""
        cfg, tok = self.cfg, self.tokenizer
        prompts = [ids[mask.bool()].tolist() for ids, mask in zip(query["input_ids"], query["attention_mask"])]
        sampling = SamplingSettings(temperature=cfg.temperature, top_p=1.0, top_k=0, max_new_tokens=cfg.response_length)
        answers = self.rollouts.sample(self.model.policy_lora(), self.model.lm.config, prompts, sampling, seed,
                                       self.eos if cfg.stop_at_eos else [])
        width = max(len(a) for a in answers)
        return torch.tensor([a + [tok.pad_token_id] * (width - len(a)) for a in answers],
                            device=query["input_ids"].device)

    def optimise(self, rollout: Rollout, kl_coef: float, seed: int) -> dict:
        return ppo_update(self.pv, self.optimizer, self.accelerator, rollout, self.cfg, kl_coef, seed)


def ppo_update(pv, optimizer, accelerator, r: Rollout, cfg: PPOConfig, kl_coef: float, seed: int) -> dict:
    """Steps 5-7 on one rollout; returns the update's statistics by TRL's names (scalar tensors)."""
    chunk = cfg.batch_size // cfg.mini_batches
    # 5. per-token rewards: −β·KL against the reference, plus the score on the last token
    kl, kl3 = kl_estimators(r.logprobs, r.ref_logprobs)  # (B, R) each
    kl, kl3 = kl * r.mask, kl3 * r.mask
    rewards = per_token_rewards(r.scores, kl, r.mask, kl_coef)
    # 6. advantages by GAE, whitened over the response tokens
    advantages, returns = gae(rewards, r.values, r.mask, cfg.gamma, cfg.lam)
    advantages = masked_whiten(advantages, r.mask)
    # 7. several epochs of clipped policy + value loss over shuffled mini-batches
    generator = torch.Generator().manual_seed(seed)
    per_minibatch = defaultdict(list)  # metric name -> one value per mini-batch and epoch
    for _ in range(cfg.ppo_epochs):
        for mb in torch.randperm(cfg.batch_size, generator=generator).split(chunk):
            mb = mb.to(r.input_ids.device)
            logprobs, entropy, values = pv(r.input_ids[mb], r.attention_mask[mb], r.context_length,
                                           cfg.temperature, r.features[mb])
            mask = r.mask[mb]
            pg_loss, pg = policy_loss(logprobs, r.logprobs[mb], advantages[mb], mask, cfg.cliprange)
            vf_loss, vf_clipfrac = value_loss(values, r.values[mb], returns[mb], mask, cfg.cliprange_value)
            optimizer.zero_grad()
            accelerator.backward(pg_loss + cfg.vf_coef * vf_loss)
            accelerator.clip_grad_norm_(pv.parameters(), cfg.max_grad_norm)
            optimizer.step()
            for name, value in {"loss/policy_avg": pg_loss, "loss/value_avg": vf_loss,
                                "policy/clipfrac_avg": pg["clipfrac"], "val/clipfrac_avg": vf_clipfrac,
                                "policy/approxkl_avg": pg["approxkl"], "val/ratio": pg["ratio"],
                                "policy/entropy_avg": masked_mean(entropy, mask)}.items():
                per_minibatch[name].append(value.detach())
    per_minibatch = {name: torch.stack(values) for name, values in per_minibatch.items()}  # (epochs * mini-batches,)
    non_score = (-kl_coef * kl).sum(1)  # (B,)
    return {
        **{name: values.mean() for name, values in per_minibatch.items()},
        "val/ratio_var": per_minibatch["val/ratio"].var() if len(per_minibatch["val/ratio"]) > 1 else torch.tensor(0.0),
        "objective/kl": kl.sum(1).mean(), "objective/kl3": kl3.sum(1).mean(),
        "objective/entropy": (-r.logprobs).sum(1).mean(), "objective/non_score_reward": non_score.mean(),
        "objective/rlhf_reward": (r.scores + non_score).mean(), "objective/scores": r.raw_scores.mean(),
        "objective/scores_normalized": r.scores.mean(), "val/num_eos_tokens": r.ended.float().sum(),
        "val/mean_value": masked_mean(r.values, r.mask), "val/mean_return": masked_mean(returns, r.mask),
    }


def measure_score_stats(trainer: PPOTrainer, prompts: list[str], n: int, seed: int) -> tuple[float, float]:
    """Mean and std of reward-model scores on the starting policy's samples (Stiennon et al. 2020)."""
    scores = []
    for k in range(-(-n // trainer.cfg.batch_size)):
        batch = prompt_batch(prompts, k, trainer.cfg.batch_size, derive_seed(seed, "reward_scale"))
        scores.append(trainer.rollout(batch, derive_seed(seed, "reward_scale", k), 0.0, 1.0).raw_scores)
    scores = trainer.accelerator.gather(torch.cat(scores))
    return scores.mean().item(), max(scores.std().item(), 1e-3)


def evaluate_held_out(trainer: PPOTrainer, prompts: list[str], state: dict, seed: int) -> tuple[dict, list[dict]]:
    """The policy on held-out requests, always with the same seed: mean reward-model score, KL to the reference
    (and its square root, the x-axis of Gao et al.'s over-optimisation curves), well-formed rate; and the samples,
    so that a judge other than the reward model (a person, the scripted annotator) can score them later."""
    r = trainer.rollout(prompts, seed, state["score_mean"], state["score_std"])
    kl = (kl_estimators(r.logprobs, r.ref_logprobs)[0] * r.mask).sum(1)  # (B,)
    well_formed = [parse_list(t).well_formed for t in r.texts]
    metrics = {"eval/scores": r.raw_scores.mean().item(), "eval/kl": kl.mean().item(),
               "eval/sqrt_kl": kl.mean().clamp(min=0).sqrt().item(),  # Gao et al.'s d: the root of the mean KL
               "eval/well_formed": sum(well_formed) / len(well_formed), "eval/response_length": r.mask.sum(1).mean().item()}
    samples = [{"prompt": p, "text": t, "score": s.item(), "kl": k.item(), "well_formed": w}
               for p, t, s, k, w in zip(r.prompts, r.texts, r.raw_scores, kl, well_formed)]
    return metrics, samples


def llamacpp_rollouts(cfg: PPOConfig, device, base_name: str, base, tokenizer, scratch: Path) -> LoraRollouts | None:
    """llama.cpp for the rollouts when --sampling-engine asks for it or auto finds it can (a CPU, a Llama model);
    None: PyTorch samples. The policy's LoRA file is rewritten in `scratch` before each batch."""
    why_not = llamacpp_unsupported(base, tokenizer) if device.type == "cpu" else "it samples on a CPU only"
    if cfg.sampling_engine == "llamacpp" and why_not:
        raise InputError(f"--sampling-engine llamacpp: {why_not}; pass plain (or auto).")
    if cfg.sampling_engine == "plain" or why_not:
        return None
    return LoraRollouts(LlamaCppSampler(policy_gguf(base_name, None, tokenizer)), scratch / "policy-lora.gguf")


def train(cfg: PPOConfig) -> Path:
    device = pick_device(cfg.device)
    accelerator = Accelerator(cpu=device.type == "cpu")
    run_dir = prepare_run_dir("ppo", cfg.output_dir, cfg.resume)
    folder = RunFolder(run_dir)
    if cfg.resume and not folder.checkpoint_state.exists():  # starting over would silently drop the old curves
        raise InputError(f"{run_dir} saved no checkpoint to resume from; start a new run (leave --resume empty).")
    with Run(run_dir, total=cfg.total_updates, cfg=cfg) as run:
        # 0. set up: prompts snapshot, one base model in four roles, the optimiser over the policy's weights
        prompts, _ = take_prompts(run_dir, "train", cfg.prompts_file or None)
        note_reward_model(run_dir, cfg.reward_model)
        base_name = base_name_for(cfg.base_model, cfg.sft_adapter)  # the SFT adapter's base if none is given
        torch.manual_seed(cfg.seed)
        tokenizer = load_tokenizer(base_name)
        dtype = training_dtype(accelerator.device, cfg.precision)
        base = load_causal_lm(base_name, accelerator.device, dtype=dtype)
        shared = policy_value.reward_shares_base(cfg.reward_model, base_name)
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                          target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM")
        pv = policy_value.build(base, tokenizer, lora, cfg.sft_adapter or None, cfg.reward_model if shared else None)
        scorer = None if shared else RewardScorer.from_folder(cfg.reward_model, device=str(accelerator.device))
        optimizer = torch.optim.AdamW([p for p in pv.parameters() if p.requires_grad], lr=cfg.learning_rate, eps=1e-5)
        pv, optimizer = accelerator.prepare(pv, optimizer)
        scratch = tempfile.TemporaryDirectory(prefix="ppo-rollouts-")  # removed when the run's process ends
        rollouts = llamacpp_rollouts(cfg, accelerator.device, base_name, base, tokenizer, Path(scratch.name))
        trainer = PPOTrainer(cfg, accelerator, pv, optimizer, tokenizer, scorer, rollouts,
                             policy_value.reward_system_prompt(cfg.reward_model, cfg.system_prompt))
        run.save_config(cfg, base_model_resolved=base_name, device_name=describe_device(accelerator.device),
                        processes=accelerator.num_processes, reward_model_shares_base=shared,
                        rollout_engine="llamacpp" if rollouts else "plain", dtype=str(dtype).removeprefix("torch."))

        if folder.checkpoint_state.exists():
            state = load_checkpoint(folder, trainer.model, optimizer, accelerator.device)
            log.info("resumed %s at update %d", run_dir.name, state["update"])
        else:
            state = {"update": 0, "kl_coef": cfg.kl_coef, "score_mean": 0.0, "score_std": 1.0}
            if cfg.normalize_reward:
                run.set_status(RunState.RUNNING, message="measuring the starting policy's reward scale")
                state["score_mean"], state["score_std"] = measure_score_stats(trainer, prompts, cfg.norm_samples,
                                                                              cfg.seed)
            if accelerator.is_main_process:
                save_checkpoint(folder, trainer.model, optimizer, state)
        if accelerator.is_main_process:
            rewind_logs(run_dir, state["update"])  # drop rows logged after the checkpoint we continue from
        run.restart_at(state["update"])
        held_out = take_prompts(run_dir, "eval")[0][:cfg.eval_prompts] if cfg.eval_every else []

        def maybe_evaluate():
            if held_out and state["update"] % cfg.eval_every == 0 and accelerator.is_main_process:
                metrics, samples = evaluate_held_out(trainer, held_out, state, derive_seed(cfg.seed, "held_out"))
                run.log_metrics(state["update"], metrics)
                run.log_eval_samples(state["update"], samples)

        if state["update"] == 0:
            maybe_evaluate()  # the starting point of the over-optimisation curves

        for update in range(state["update"], cfg.total_updates):
            if stop_requested(run, accelerator):
                break
            started = time.perf_counter()
            for group in optimizer.param_groups:  # linear decay, a function of the update index alone
                group["lr"] = cfg.learning_rate * (1 - update / cfg.total_updates)
            batch = prompt_batch(prompts, update, cfg.batch_size, cfg.seed, accelerator.process_index,
                                 accelerator.num_processes)
            # 1-4. sample, truncate, reference and values, score
            seed = derive_seed(cfg.seed, "update", update)
            rollout = trainer.rollout(batch, seed, state["score_mean"], state["score_std"])
            rollout_s = time.perf_counter() - started
            # 5-7. rewards, advantages, clipped updates
            stats = trainer.optimise(rollout, state["kl_coef"], seed)
            stats = {k: accelerator.reduce(v.detach().float(), "mean").item() for k, v in stats.items()}
            # 8. the KL controller, logs, samples and a checkpoint
            if cfg.adaptive_kl:
                state["kl_coef"] = adaptive_kl_coef(state["kl_coef"], stats["objective/kl"], cfg.target_kl,
                                                    cfg.kl_horizon, cfg.batch_size * accelerator.num_processes)
            state["update"] = update + 1
            episodes = cfg.batch_size * accelerator.num_processes
            well_formed = [parse_list(t).well_formed for t in rollout.texts]
            update_s = time.perf_counter() - started
            run.log_metrics(state["update"], {
                **stats, "objective/kl_coef": state["kl_coef"],
                "objective/well_formed": sum(well_formed) / len(well_formed),
                "val/response_length": rollout.mask.sum(1).mean().item(), "lr": optimizer.param_groups[0]["lr"],
                "eps": episodes / update_s, "episode": state["update"] * episodes, "time/update_s": update_s,
                "time/rollout_s": rollout_s, **rollout.seconds, **peak_memory_mb()})
            if state["update"] % cfg.sample_every == 0 or update == 0:
                run.log_samples(state["update"], [
                    {"prompt": p, "text": t, "score": s.item(), "score_normalized": n.item(), "well_formed": w,
                     "ended": bool(e)} for p, t, s, n, w, e in zip(rollout.prompts, rollout.texts, rollout.raw_scores,
                                                                   rollout.scores, well_formed, rollout.ended)][:4])
            maybe_evaluate()
            if accelerator.is_main_process and (state["update"] % cfg.checkpoint_every == 0 or run.stop.requested):
                save_checkpoint(folder, trainer.model, optimizer, state)

        if accelerator.is_main_process:
            save_checkpoint(folder, trainer.model, optimizer, state)
            trainer.model.peft_model.save_pretrained(folder.adapter, selected_adapters=[policy_value.POLICY])
        stopped = state["update"] < cfg.total_updates
        run.complete(stopped, how_to_continue=f"continue with --resume {run_dir}")
    return run_dir


if __name__ == "__main__":
    sys.exit(stage_main(PPOConfig, train, prog="python -m core.train.ppo.trainer"))
