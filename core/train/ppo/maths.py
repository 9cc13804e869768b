"""PPO's maths as small tensor functions, each checked against hand-computed values in tests/test_ppo_maths.py.

Shapes: B rollouts, R response tokens; `mask` (B, R) is 1 on the tokens kept (up to and including the first EOS).
Names and conventions follow TRL's former PPOTrainer (masked_whiten, Bessel-corrected variance, k1/k3 KL).
"""
from __future__ import annotations

import torch


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
