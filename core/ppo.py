"""PPO for language models, written out here because TRL removed its PPOTrainer in 1.13.

    python -m core train ppo --reward-model models/runs/reward-... --preset quick
    python -m core train ppo --reward-model RUN --sft-adapter models/runs/sft-...    # start from the SFT policy
    python -m core train ppo --resume models/runs/ppo-...                             # after a stop, crash or kill -9
    accelerate launch -m core train ppo --reward-model RUN ...                        # several GPUs

The method follows Ziegler et al. 2019 / Stiennon et al. 2020 as implemented in TRL's former PPOTrainer and
checked against Huang et al. 2024 ("The N+ implementation details of RLHF with PPO"). Where it departs:
1. One copy of the base weights serves policy, reference, value and (same base) reward model: see policy_value.py.
2. The value function is a linear head on the frozen reference's hidden states (which the KL term computes
   anyway), not a separate fully trained model (TRL's design): the critic costs no forward pass of its own and
   its loss never pulls on the policy's weights. The rollout's log-probs are those generation computed.
3. Reward-model scores are normalised with a mean and std measured once on the starting policy's samples
   (Stiennon et al. 2020), so kl_coef means the same thing whatever reward model is plugged in.
4. Sampling is plain temperature sampling (top_k 0, top_p 1): log-probs are computed from logits / T, the very
   distribution sampled from, or the PPO ratio is wrong from the first step.
5. Every update is a pure function of (checkpoint, update index): prompts come from a seeded per-epoch shuffle and
   the sampling seed is seed + update, so a run resumed after kill -9 retraces an uninterrupted one.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from core.config import check, knob
from core.generate import SYSTEM_PROMPT

log = logging.getLogger(__name__)


@dataclass
class PPOConfig:
    reward_model: str = knob("", "reward-model run folder (python -m core train reward); required")
    sft_adapter: str = knob("", "SFT run or adapter folder to start from (also the KL reference); empty: the base")
    base_model: str = knob("", "base model; empty: $RLHF_BASE_MODEL or the embedded SmolLM2-135M-Instruct")
    prompts_file: str = knob("", "JSONL of {\"prompt\": ...} rows to train on; empty: the library's train split")
    system_prompt: str = knob(SYSTEM_PROMPT, "system prompt the policy is asked with (empty: the request alone)")
    resume: str = knob("", "a PPO run folder to continue from its last checkpoint (its config is reused)")
    total_updates: int = knob(100, "PPO updates (each: one rollout batch, then optimisation on it)")
    batch_size: int = knob(64, "rollouts (prompt + sampled list) per update")
    mini_batches: int = knob(4, "mini-batches each rollout batch is split into per PPO epoch")
    ppo_epochs: int = knob(4, "passes over each rollout batch")
    response_length: int = knob(128, "most tokens sampled per list")
    stop_at_eos: bool = knob(True, "end a list at its first EOS (false: always sample response_length tokens)")
    temperature: float = knob(0.7, "sampling temperature (the log-probs use the same one)")
    learning_rate: float = knob(3e-5, "Adam learning rate for the LoRA weights and value head")
    kl_coef: float = knob(0.05, "β: weight of the per-token KL penalty against the reference")
    adaptive_kl: bool = knob(False, "adapt β towards target_kl (Ziegler et al. 2019)")
    target_kl: float = knob(6.0, "KL (nats per list) the adaptive controller aims for")
    kl_horizon: int = knob(10000, "episodes over which the adaptive controller moves β")
    cliprange: float = knob(0.2, "PPO clip range for the policy ratio")
    cliprange_value: float = knob(0.2, "clip range for the value prediction around its rollout value")
    vf_coef: float = knob(0.1, "weight of the value loss")
    gamma: float = knob(1.0, "discount")
    lam: float = knob(0.95, "GAE λ")
    missing_eos_penalty: float = knob(1.0, "subtracted from the normalised score of a list that never ends")
    normalize_reward: bool = knob(True, "normalise scores with the starting policy's mean and std")
    norm_samples: int = knob(64, "rollouts sampled before training to measure that mean and std")
    max_grad_norm: float = knob(1.0, "gradient clipping")
    lora_r: int = knob(16, "LoRA rank of the policy (when not starting from an SFT adapter)")
    lora_alpha: int = knob(32, "LoRA scaling numerator")
    lora_targets: list = knob(["q_proj", "k_proj", "v_proj", "o_proj"], "module names that get LoRA adapters")
    sample_every: int = knob(5, "log sample generations with their scores every this many updates")
    checkpoint_every: int = knob(1, "save a resumable checkpoint every this many updates")
    eval_every: int = knob(0, "every this many updates (and before the first), answer held-out requests and log "
                              "eval/* (reward score, KL, well-formed rate): the over-optimisation view; 0: off")
    eval_prompts: int = knob(16, "held-out requests answered at each evaluation")
    device: str = knob("auto", "where to train: auto (GPU if present), cpu or cuda", choices=("auto", "cpu", "cuda"))
    seed: int = knob(0, "seed for prompt order, sampling and initialisation")
    output_dir: str = knob("", "run folder; empty: models/runs/ppo-<timestamp>")

    PRESETS: ClassVar[dict] = {
        # 160 tokens: SFT's lists run ~110 tokens (the seed lists: median 106, max 153), so a 96-token cap cut most
        # of them and the missing-EOS penalty drowned the reward model's signal. lr 2e-4 with 4 epochs was too big
        # a step (clipfrac 0.12 at the first update, KL 3.4 nats and well-formed 0.88 -> 0.50 by the third).
        "quick": dict(total_updates=12, batch_size=8, mini_batches=2, ppo_epochs=2, response_length=160,
                      norm_samples=16, learning_rate=1e-4, sample_every=2),
    }

    def __post_init__(self):
        check(bool(self.reward_model) or bool(self.resume),
              "PPO needs a reward model: pass --reward-model models/runs/reward-<timestamp>.")
        check(self.total_updates > 0 and self.batch_size > 0, "total-updates and batch-size must be positive.")
        check(self.mini_batches > 0 and self.batch_size % self.mini_batches == 0,
              f"batch-size ({self.batch_size}) must split evenly into mini-batches ({self.mini_batches}).")
        check(self.ppo_epochs > 0 and self.response_length > 0, "ppo-epochs and response-length must be positive.")
        check(self.temperature > 0, "temperature must be positive, e.g. 0.7.")
        check(0 < self.learning_rate < 1, "learning-rate should be small and positive, e.g. 3e-5.")
        check(self.kl_coef >= 0 and self.target_kl > 0, "kl-coef must be >= 0 and target-kl positive.")
        check(0 < self.cliprange < 1 and self.cliprange_value > 0, "cliprange must be in (0, 1), e.g. 0.2.")
        check(0 <= self.gamma <= 1 and 0 <= self.lam <= 1, "gamma and lam must be in [0, 1].")
        check(self.norm_samples >= 2 or not self.normalize_reward, "norm-samples must be at least 2.")
        check(self.sample_every > 0 and self.checkpoint_every > 0, "sample-every and checkpoint-every must be >= 1.")
        check(self.eval_every >= 0 and self.eval_prompts > 0, "eval-every must be >= 0 and eval-prompts positive.")


# ---- the maths (each checked against hand-computed values in tests/test_ppo_maths.py) ------------------------------
def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance over the masked entries (Bessel's correction, as TRL)."""
    n = mask.sum()
    centred = (x - masked_mean(x, mask)) * mask
    return (centred ** 2).sum() / (n - 1).clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    whitened = (x - masked_mean(x, mask)) * torch.rsqrt(masked_var(x, mask) + 1e-8)
    return whitened if shift_mean else whitened + masked_mean(x, mask)


def kl_estimators(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token KL(π‖π_ref) estimates from samples of π (Schulman 2020): k1 = log r⁻¹, unbiased but noisy and
    negative per token; k3 = (r − 1) − log r with r = π_ref/π, unbiased and always >= 0."""
    log_ratio = ref_logprobs - logprobs
    return -log_ratio, log_ratio.exp() - 1 - log_ratio


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation (Schulman et al. 2016) over (B, R) right-padded responses.

    A_t = δ_t + γλ·A_{t+1}, δ_t = r_t + γ·V_{t+1} − V_t, with V and r zero past the last token.
    Returns (advantages, returns = advantages + values).
    """
    values, rewards = values * mask, rewards * mask
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(values[:, t])
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = next_advantage
    return advantages * mask, (advantages + values) * mask


def policy_loss(logprobs, old_logprobs, advantages, mask, cliprange: float):
    """Clipped surrogate: mean of max(−A·ρ, −A·clip(ρ, 1 ± ε)); also the clip fraction, approx KL and ratio."""
    ratio = (logprobs - old_logprobs).exp()
    unclipped, clipped = -advantages * ratio, -advantages * ratio.clamp(1 - cliprange, 1 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    stats = {"clipfrac": masked_mean((clipped > unclipped).float(), mask),
             "approxkl": 0.5 * masked_mean((logprobs - old_logprobs) ** 2, mask), "ratio": masked_mean(ratio, mask)}
    return loss, stats


def value_loss(values, old_values, returns, mask, cliprange_value: float):
    """0.5 · mean of max((V − R)², (V_clipped − R)²), V clipped to old_values ± ε_v; also the clip fraction."""
    clipped = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)
    unclipped_loss, clipped_loss = (values - returns) ** 2, (clipped - returns) ** 2
    return 0.5 * masked_mean(torch.maximum(unclipped_loss, clipped_loss), mask), \
        masked_mean((clipped_loss > unclipped_loss).float(), mask)


def per_token_rewards(scores, kl, mask, kl_coef: float):
    """r_t = −β·KL_t on every response token, plus the sequence score on its last token: (B, R)."""
    rewards = -kl_coef * kl * mask
    last = (mask.sum(1) - 1).clamp(min=0).long()  # (B,)
    rewards[torch.arange(rewards.shape[0]), last] += scores
    return rewards


def adaptive_kl_coef(kl_coef: float, current_kl: float, target: float, horizon: int, n_steps: int) -> float:
    """Ziegler et al. 2019: β ← β·(1 + clip(KL/target − 1, ±0.2)·n/horizon)."""
    error = min(max(current_kl / target - 1, -0.2), 0.2)
    return kl_coef * (1 + error * n_steps / horizon)


def truncate_after_eos(responses: torch.Tensor, eos: list[int], pad_id: int):
    """Keep each (B, R) response up to and including its first EOS; pad what follows. Returns (responses, mask,
    ended) with mask (B, R) 1 on kept tokens and ended (B,) whether an EOS was sampled."""
    is_eos = torch.isin(responses, torch.tensor(eos, device=responses.device))
    ended = is_eos.any(1)
    first = torch.where(ended, is_eos.int().argmax(1), torch.full_like(ended, responses.shape[1] - 1, dtype=torch.long))
    mask = (torch.arange(responses.shape[1], device=responses.device)[None] <= first[:, None]).long()
    return responses.masked_fill(mask == 0, pad_id), mask, ended


def prompt_batch(prompts: list[str], update: int, batch_size: int, seed: int, process: int = 0,
                 processes: int = 1) -> list[str]:
    """The prompts of one update for one process: walk a seeded shuffle of the prompts, reshuffled every pass.
    A pure function of its arguments, which is what makes resuming exact."""
    start = (update * processes + process) * batch_size
    batch = []
    for i in range(start, start + batch_size):
        epoch, offset = divmod(i, len(prompts))
        order = random.Random(seed * 1_000_003 + epoch).sample(range(len(prompts)), len(prompts))
        batch.append(prompts[order[offset]])
    return batch


# ---- the loop --------------------------------------------------------------------------------------------------------
@dataclass
class Rollout:
    """One update's experience; every tensor is (B, R) over response tokens unless noted."""
    prompts: list[str]
    texts: list[str]
    input_ids: torch.Tensor  # (B, Q + R): left-padded query, then the response
    attention_mask: torch.Tensor  # (B, Q + R)
    context_length: int  # Q
    mask: torch.Tensor  # 1 on kept response tokens (up to and including the first EOS)
    ended: torch.Tensor  # (B,) an EOS was sampled
    logprobs: torch.Tensor  # under the policy that sampled them, from generation's own logits
    ref_logprobs: torch.Tensor
    features: torch.Tensor  # (B, R, H) the reference's hidden states: what the value head reads
    values: torch.Tensor
    raw_scores: torch.Tensor  # (B,) the reward model's output
    scores: torch.Tensor  # (B,) normalised, minus the missing-EOS penalty


class PPOTrainer:
    """Holds the models and optimiser for one run; `rollout` and `optimise` are one update."""

    def __init__(self, cfg: PPOConfig, accelerator, pv, optimizer, tokenizer, scorer):
        from core.generate import eos_ids

        self.cfg, self.accelerator, self.pv, self.optimizer = cfg, accelerator, pv, optimizer
        self.tokenizer, self.scorer = tokenizer, scorer
        self.model = accelerator.unwrap_model(pv)
        self.eos = eos_ids(self.model.lm, tokenizer)
        self.chunk = cfg.batch_size // cfg.mini_batches

    def _chunked(self, fn, *tensors):
        """fn over mini-batch-sized slices (bounds the (B, R, V) logits in memory), outputs concatenated."""
        outs = [fn(*(t[i:i + self.chunk] for t in tensors)) for i in range(0, tensors[0].shape[0], self.chunk)]
        return [torch.cat(parts) for parts in zip(*outs)] if isinstance(outs[0], tuple) else torch.cat(outs)

    @torch.no_grad()
    def rollout(self, prompts: list[str], seed: int, score_mean: float, score_std: float) -> Rollout:
        from transformers import GenerationConfig

        from core.generate import chat_text
        from core.policy_value import response_logprobs

        cfg, tok, model = self.cfg, self.tokenizer, self.model
        device = self.accelerator.device
        # 1. sample: left-padded queries (B, Q) -> responses (B, R), plain temperature sampling
        query = tok([chat_text(tok, p, cfg.system_prompt) for p in prompts], return_tensors="pt", padding=True,
                    add_special_tokens=False).to(device)
        Q = query["input_ids"].shape[1]
        generation = GenerationConfig(do_sample=True, temperature=cfg.temperature, top_k=0, top_p=1.0,
                                      max_new_tokens=cfg.response_length, pad_token_id=tok.pad_token_id,
                                      eos_token_id=self.eos if cfg.stop_at_eos else None,
                                      output_logits=True, return_dict_in_generate=True)
        torch.manual_seed(seed)
        with model.merged_policy():
            out = model.peft_model.generate(**query, generation_config=generation)
        sampled = out.sequences[:, Q:]  # (B, R)
        logprobs = torch.stack([response_logprobs(step_logits[:, None], sampled[:, t:t + 1], cfg.temperature)[0][:, 0]
                                for t, step_logits in enumerate(out.logits)], 1)  # (B, R), one (B, V) step at a time
        # 2. keep each response up to its first EOS
        responses, mask, ended = truncate_after_eos(sampled, self.eos, tok.pad_token_id)
        if not cfg.stop_at_eos:
            mask, ended = torch.ones_like(mask), torch.ones_like(ended)
        input_ids = torch.cat([query["input_ids"], responses], 1)  # (B, Q + R)
        attention_mask = torch.cat([query["attention_mask"], mask], 1)
        texts = tok.batch_decode(responses, skip_special_tokens=True)
        # 3. reference log-probs (same tokens, same temperature) and its hidden states -> values
        ref_logprobs, features = self._chunked(lambda i, a: model.reference(i, a, Q, cfg.temperature),
                                               input_ids, attention_mask)
        values = model.values(features)
        # 4. score once with the reward model, at the last kept token; normalise; penalise lists that never end
        if self.scorer is None:
            last = Q + mask.sum(1) - 1  # (B,)
            raw = self._chunked(model.reward_scores, input_ids, attention_mask, last)
        else:
            raw = torch.tensor(self.scorer.score(prompts, texts), device=device)
        scores = (raw - score_mean) / score_std
        scores = scores - cfg.missing_eos_penalty * (~ended.bool()).float()
        return Rollout(prompts, [t.strip() for t in texts], input_ids, attention_mask, Q, mask.float(), ended,
                       logprobs * mask, ref_logprobs * mask, features, values * mask, raw, scores)

    def optimise(self, r: Rollout, kl_coef: float, seed: int) -> dict:
        cfg = self.cfg
        # 5. per-token rewards: −β·KL against the reference, plus the score on the last token
        kl, kl3 = kl_estimators(r.logprobs, r.ref_logprobs)  # (B, R) each
        kl, kl3 = kl * r.mask, kl3 * r.mask
        rewards = per_token_rewards(r.scores, kl, r.mask, kl_coef)
        # 6. advantages by GAE, whitened over the response tokens
        advantages, returns = gae(rewards, r.values, r.mask, cfg.gamma, cfg.lam)
        advantages = masked_whiten(advantages, r.mask)
        # 7. several epochs of clipped policy + value loss over shuffled mini-batches
        generator = torch.Generator().manual_seed(seed)
        logs = []
        for _ in range(cfg.ppo_epochs):
            for mb in torch.randperm(cfg.batch_size, generator=generator).split(self.chunk):
                mb = mb.to(r.input_ids.device)
                logprobs, entropy, values = self.pv(r.input_ids[mb], r.attention_mask[mb], r.context_length,
                                                    cfg.temperature, r.features[mb])
                mask = r.mask[mb]
                pg_loss, pg = policy_loss(logprobs, r.logprobs[mb], advantages[mb], mask, cfg.cliprange)
                vf_loss, vf_clipfrac = value_loss(values, r.values[mb], returns[mb], mask, cfg.cliprange_value)
                self.optimizer.zero_grad()
                self.accelerator.backward(pg_loss + cfg.vf_coef * vf_loss)
                self.accelerator.clip_grad_norm_(self.pv.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                logs.append(torch.stack([pg_loss, vf_loss, pg["clipfrac"], vf_clipfrac, pg["approxkl"], pg["ratio"],
                                         masked_mean(entropy, mask)]).detach())
        per_mb = torch.stack(logs)  # (epochs * mini-batches, 7)
        means = per_mb.mean(0)
        non_score = (-kl_coef * kl).sum(1)  # (B,)
        return {
            "objective/kl": kl.sum(1).mean(), "objective/kl3": kl3.sum(1).mean(),
            "objective/entropy": (-r.logprobs).sum(1).mean(), "objective/non_score_reward": non_score.mean(),
            "objective/rlhf_reward": (r.scores + non_score).mean(), "objective/scores": r.raw_scores.mean(),
            "objective/scores_normalized": r.scores.mean(),
            "loss/policy_avg": means[0], "loss/value_avg": means[1], "policy/clipfrac_avg": means[2],
            "val/clipfrac_avg": means[3], "policy/approxkl_avg": means[4], "val/ratio": means[5],
            "val/ratio_var": per_mb[:, 5].var() if len(per_mb) > 1 else torch.tensor(0.0),
            "policy/entropy_avg": means[6], "val/num_eos_tokens": r.ended.float().sum(),
            "val/mean_value": masked_mean(r.values, r.mask), "val/mean_return": masked_mean(returns, r.mask),
        }


def measure_score_stats(trainer: PPOTrainer, prompts: list[str], n: int, seed: int) -> tuple[float, float]:
    """Mean and std of reward-model scores on the starting policy's samples (Stiennon et al. 2020)."""
    scores = []
    for k in range(-(-n // trainer.cfg.batch_size)):
        batch = prompt_batch(prompts, k, trainer.cfg.batch_size, seed + 7919)
        scores.append(trainer.rollout(batch, seed + 7919 + k, 0.0, 1.0).raw_scores)
    scores = trainer.accelerator.gather(torch.cat(scores))
    return scores.mean().item(), max(scores.std().item(), 1e-3)


def evaluate_held_out(trainer: PPOTrainer, prompts: list[str], state: dict, seed: int) -> tuple[dict, list[dict]]:
    """The policy on held-out requests, always with the same seed: mean reward-model score, KL to the reference
    (and its square root, the x-axis of Gao et al.'s over-optimisation curves), well-formed rate; and the samples,
    so that a judge other than the reward model (a person, the scripted annotator) can score them later."""
    from core.lists import parse_list

    r = trainer.rollout(prompts, seed, state["score_mean"], state["score_std"])
    kl = (kl_estimators(r.logprobs, r.ref_logprobs)[0] * r.mask).sum(1)  # (B,)
    well_formed = [parse_list(t).well_formed for t in r.texts]
    metrics = {"eval/scores": r.raw_scores.mean().item(), "eval/kl": kl.mean().item(),
               "eval/sqrt_kl": kl.clamp(min=0).sqrt().mean().item(),
               "eval/well_formed": sum(well_formed) / len(well_formed), "eval/response_length": r.mask.sum(1).mean().item()}
    samples = [{"prompt": p, "text": t, "score": s.item(), "kl": k.item(), "well_formed": w}
               for p, t, s, k, w in zip(r.prompts, r.texts, r.raw_scores, kl, well_formed)]
    return metrics, samples


def stop_requested(run, accelerator) -> bool:
    """Whether any rank was asked to stop: all ranks must leave the loop at the same update."""
    flag = torch.tensor(float(run.stop.requested), device=accelerator.device)
    return accelerator.reduce(flag, "sum").item() > 0


def peak_memory_mb() -> dict:
    import resource

    peak = {"memory/peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        peak["memory/cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return peak


def save_checkpoint(path: Path, trainer: PPOTrainer, state: dict) -> None:
    """Everything an update depends on, written whole or not at all (a kill mid-save keeps the previous one)."""
    import os

    from peft import get_peft_model_state_dict

    from core.policy_value import POLICY

    path.mkdir(parents=True, exist_ok=True)
    payload = {"policy": get_peft_model_state_dict(trainer.model.peft_model, adapter_name=POLICY),
               "value_head": trainer.model.value_head.state_dict(), "optimizer": trainer.optimizer.state_dict(),
               "state": state}
    torch.save(payload, path / "state.pt.tmp")
    os.replace(path / "state.pt.tmp", path / "state.pt")


def load_checkpoint(path: Path, trainer: PPOTrainer) -> dict:
    from peft import set_peft_model_state_dict

    from core.policy_value import POLICY

    payload = torch.load(path / "state.pt", map_location=trainer.accelerator.device, weights_only=True)
    set_peft_model_state_dict(trainer.model.peft_model, payload["policy"], adapter_name=POLICY)
    trainer.model.value_head.load_state_dict(payload["value_head"])
    trainer.optimizer.load_state_dict(payload["optimizer"])
    return payload["state"]


def train(cfg: PPOConfig) -> Path:
    import time

    from accelerate import Accelerator
    from peft import LoraConfig

    from core import policy_value
    from core.lists import parse_list
    from core.model import describe_device, load_causal_lm, load_tokenizer, pick_device, resolve_base_model
    from core.reward_model import RewardScorer
    from core.runs import Run, append_jsonl, prepare_run_dir, rewind_logs
    from core.snapshot import take_prompts

    device = pick_device(cfg.device)
    accelerator = Accelerator(cpu=device.type == "cpu")
    run_dir = prepare_run_dir("ppo", cfg.output_dir, cfg.resume)
    checkpoint = run_dir / "checkpoint"
    with Run(run_dir, total=cfg.total_updates) as run:
        # 0. set up: prompts snapshot, one base model in four roles, the optimiser over the policy's weights
        prompts, _ = take_prompts(run_dir, "train", cfg.prompts_file or None)
        base_name = resolve_base_model(cfg.base_model or None)
        torch.manual_seed(cfg.seed)
        tokenizer = load_tokenizer(base_name)
        base = load_causal_lm(base_name, accelerator.device)
        shared = policy_value.reward_shares_base(cfg.reward_model, base_name)
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                          target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM")
        pv = policy_value.build(base, tokenizer, lora, cfg.sft_adapter or None, cfg.reward_model if shared else None)
        scorer = None if shared else RewardScorer.from_folder(cfg.reward_model, device=str(accelerator.device))
        optimizer = torch.optim.AdamW([p for p in pv.parameters() if p.requires_grad], lr=cfg.learning_rate, eps=1e-5)
        pv, optimizer = accelerator.prepare(pv, optimizer)
        trainer = PPOTrainer(cfg, accelerator, pv, optimizer, tokenizer, scorer)
        run.save_config(cfg, base_model_resolved=base_name, device_name=describe_device(accelerator.device),
                        processes=accelerator.num_processes, reward_model_shares_base=shared)

        if (checkpoint / "state.pt").exists():
            state = load_checkpoint(checkpoint, trainer)
            log.info("resumed %s at update %d", run_dir.name, state["update"])
        else:
            state = {"update": 0, "kl_coef": cfg.kl_coef, "score_mean": 0.0, "score_std": 1.0}
            if cfg.normalize_reward:
                run.set_status("running", message="measuring the starting policy's reward scale")
                state["score_mean"], state["score_std"] = measure_score_stats(trainer, prompts, cfg.norm_samples,
                                                                              cfg.seed)
            save_checkpoint(checkpoint, trainer, state) if accelerator.is_main_process else None
        if accelerator.is_main_process:
            rewind_logs(run_dir, state["update"])  # drop rows logged after the checkpoint we continue from
        run.restart_at(state["update"])
        held_out = take_prompts(run_dir, "eval")[0][:cfg.eval_prompts] if cfg.eval_every else []

        def maybe_evaluate():
            if held_out and state["update"] % cfg.eval_every == 0 and accelerator.is_main_process:
                metrics, samples = evaluate_held_out(trainer, held_out, state, cfg.seed + 424_242)
                run.log_metrics(state["update"], metrics)
                append_jsonl(run_dir / "eval_samples.jsonl", [{"step": state["update"], **s} for s in samples])

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
            rollout = trainer.rollout(batch, cfg.seed * 100_003 + update, state["score_mean"], state["score_std"])
            rollout_s = time.perf_counter() - started
            stats = trainer.optimise(rollout, state["kl_coef"], cfg.seed * 100_003 + update)
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
                "time/rollout_s": rollout_s, **peak_memory_mb()})
            if state["update"] % cfg.sample_every == 0 or update == 0:
                run.log_samples(state["update"], [
                    {"prompt": p, "text": t, "score": s.item(), "score_normalized": n.item(), "well_formed": w,
                     "ended": bool(e)} for p, t, s, n, w, e in zip(rollout.prompts, rollout.texts, rollout.raw_scores,
                                                                   rollout.scores, well_formed, rollout.ended)][:4])
            maybe_evaluate()
            if accelerator.is_main_process and (state["update"] % cfg.checkpoint_every == 0 or run.stop.requested):
                save_checkpoint(checkpoint, trainer, state)

        if accelerator.is_main_process:
            save_checkpoint(checkpoint, trainer, state)
            trainer.model.peft_model.save_pretrained(run_dir / "adapter", selected_adapters=[policy_value.POLICY])
        stopped = state["update"] < cfg.total_updates
        run.complete(stopped, how_to_continue=f"continue with --resume {run_dir}")
    return run_dir

if __name__ == "__main__":
    from core.__main__ import main

    raise SystemExit(main(["train", "ppo", *__import__("sys").argv[1:]]))
