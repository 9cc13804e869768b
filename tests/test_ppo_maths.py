"""PPO's and the reward model's maths against values worked out by hand (the working is in the comments)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from core.train.ppo.maths import (
    adaptive_kl_coef,
    gae,
    kl_estimators,
    masked_mean,
    masked_var,
    masked_whiten,
    per_token_rewards,
    policy_loss,
    truncate_after_eos,
    value_loss,
)
from core.train.ppo.state import prompt_batch
from core.train.ppo.trainer import evaluate_held_out

X = torch.tensor([[1.0, 2.0, 99.0, 4.0]])
M = torch.tensor([[1.0, 1.0, 0.0, 1.0]])


def test_masked_mean_and_variance_ignore_masked_entries():
    # kept: 1, 2, 4 -> mean 7/3; deviations -4/3, -1/3, 5/3 -> squares sum 42/9; unbiased: / 2 = 7/3
    assert masked_mean(X, M).item() == pytest.approx(7 / 3)
    assert masked_var(X, M).item() == pytest.approx(7 / 3)


def test_masked_whiten_gives_zero_mean_unit_variance_on_kept_entries():
    white = masked_whiten(X, M)
    expected = torch.tensor([-4 / 3, -1 / 3, 5 / 3]) / math.sqrt(7 / 3)
    assert torch.allclose(white[M.bool()], expected, atol=1e-5)
    assert masked_mean(masked_whiten(X, M, shift_mean=False), M).item() == pytest.approx(7 / 3, abs=1e-5)


def test_gae_on_a_hand_example():
    # γ=1, λ=0.5, r=(0,0,1), V=(.5,.6,.7):
    # t2: δ=1-.7=.3, A=.3 ; t1: δ=.7-.6=.1, A=.1+.5*.3=.25 ; t0: δ=.6-.5=.1, A=.1+.5*.25=.225
    adv, ret = gae(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.5, 0.6, 0.7]]), torch.ones(1, 3), 1.0, 0.5)
    assert torch.allclose(adv, torch.tensor([[0.225, 0.25, 0.3]]))
    assert torch.allclose(ret, torch.tensor([[0.725, 0.85, 1.0]]))


def test_gae_with_lambda_one_is_discounted_return_minus_value():
    # λ=1: A_t = Σ γ^k r_{t+k} − V_t; A_0 = .9² · 1 − .5 = .31, A_1 = .9 − .6 = .3, A_2 = 1 − .7 = .3
    adv, _ = gae(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.5, 0.6, 0.7]]), torch.ones(1, 3), 0.9, 1.0)
    assert torch.allclose(adv, torch.tensor([[0.31, 0.3, 0.3]]))


def test_gae_stops_at_the_end_of_a_shorter_response():
    # mask (1,1,0): the padded step's reward 5 and value 9 must not leak back.
    # t1: δ = 1 + 0 − .7 = .3 ; t0: δ = .7 − .5 = .2, A = .2 + .5 · .3 = .35
    adv, ret = gae(torch.tensor([[0.0, 1.0, 5.0]]), torch.tensor([[0.5, 0.7, 9.0]]),
                   torch.tensor([[1.0, 1.0, 0.0]]), 1.0, 0.5)
    assert torch.allclose(adv, torch.tensor([[0.35, 0.3, 0.0]]))
    assert torch.allclose(ret, torch.tensor([[0.85, 1.0, 0.0]]))


def test_kl_estimators():
    # π = .5, π_ref = .25: k1 = log .5 − log .25 = log 2; k3 = (r − 1) − log r with r = .5: −.5 + log 2
    k1, k3 = kl_estimators(torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)]))
    assert k1.item() == pytest.approx(math.log(2))
    assert k3.item() == pytest.approx(-0.5 + math.log(2))
    k1, k3 = kl_estimators(torch.tensor([math.log(0.3)]), torch.tensor([math.log(0.3)]))
    assert k1.item() == pytest.approx(0) and k3.item() == pytest.approx(0)


def test_clipped_policy_loss():
    # ratios 1.5, 1.5, 0.5 with advantages +1, −1, +1 and ε = .2:
    #   +1 · 1.5: max(−1.5, −1.2) = −1.2 (clipped) ; −1 · 1.5: max(1.5, 1.2) = 1.5 ; +1 · .5: max(−.5, −.8) = −.5
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 1.5, 0.5]]))
    loss, stats = policy_loss(new, old, torch.tensor([[1.0, -1.0, 1.0]]), torch.ones(1, 3), 0.2)
    assert loss.item() == pytest.approx((-1.2 + 1.5 - 0.5) / 3)
    assert stats["clipfrac"].item() == pytest.approx(1 / 3)
    assert stats["ratio"].item() == pytest.approx((1.5 + 1.5 + 0.5) / 3)
    # approx KL = ½ mean (log ρ)²
    assert stats["approxkl"].item() == pytest.approx(0.5 * (2 * math.log(1.5) ** 2 + math.log(0.5) ** 2) / 3)


def test_clipped_value_loss():
    # old 0, ε_v .2, return 1: new .5 -> clipped .2, losses .25 vs .64 -> .64 ; new .1 -> inside, .81 both
    loss, clipfrac = value_loss(torch.tensor([[0.5, 0.1]]), torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1, 2), 0.2)
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.81) / 2)
    assert clipfrac.item() == pytest.approx(0.5)


def test_per_token_rewards_put_the_score_on_the_last_kept_token():
    # β=.5, KL (.1, .2, .3), mask (1, 1, 0), score 2 -> (−.05, −.1 + 2, 0)
    rewards = per_token_rewards(torch.tensor([2.0]), torch.tensor([[0.1, 0.2, 0.3]]), torch.tensor([[1.0, 1.0, 0.0]]),
                                0.5)
    assert torch.allclose(rewards, torch.tensor([[-0.05, 1.9, 0.0]]))


def test_adaptive_kl_controller():
    # error clipped to ±.2; n/horizon = 100/10000
    assert adaptive_kl_coef(0.1, 12.0, 6.0, 10000, 100) == pytest.approx(0.1 * (1 + 0.2 * 0.01))
    assert adaptive_kl_coef(0.1, 3.0, 6.0, 10000, 100) == pytest.approx(0.1 * (1 - 0.2 * 0.01))
    assert adaptive_kl_coef(0.1, 6.6, 6.0, 10000, 100) == pytest.approx(0.1 * (1 + 0.1 * 0.01))


def test_truncate_after_first_eos():
    responses, mask, ended = truncate_after_eos(torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8]]), [2], pad_id=0)
    assert responses.tolist() == [[5, 2, 0, 0], [5, 6, 7, 8]]
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert ended.tolist() == [True, False]


def test_prompt_batches_cover_every_prompt_once_per_pass_and_are_reproducible():
    prompts = [f"p{i}" for i in range(10)]
    first_pass = [p for u in range(5) for p in prompt_batch(prompts, u, 2, seed=3)]
    assert sorted(first_pass) == sorted(prompts)
    assert prompt_batch(prompts, 7, 4, seed=3) == prompt_batch(prompts, 7, 4, seed=3)
    assert prompt_batch(prompts, 0, 4, seed=3) != prompt_batch(prompts, 0, 4, seed=4)
    # two processes take disjoint slices of the same pass
    assert not set(prompt_batch(prompts, 0, 2, 3, process=0, processes=2)) & set(
        prompt_batch(prompts, 0, 2, 3, process=1, processes=2))


def test_bradley_terry_loss_with_margin_as_trl_computes_it(tiny_model_dir, tmp_path):
    """The loss our reward model trains with: −log σ(r⁺ − r⁻ − m), plus the centring term when switched on."""
    from types import SimpleNamespace

    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from core.model import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir)
    model = load_causal_lm(tiny_model_dir, torch.device("cpu"), head="reward")
    data = Dataset.from_list([{"chosen_ids": [5, 6], "rejected_ids": [7], "margin": 0.0}] * 2)
    for centre in (None, 0.01):
        args = RewardConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, bf16=False,
                            center_rewards_coefficient=centre)
        trainer = RewardTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
        stub = lambda **inputs: SimpleNamespace(logits=torch.tensor([[1.0], [0.0]]))  # r⁺ = 1, r⁻ = 0
        inputs = {"input_ids": torch.ones(2, 2, dtype=torch.long), "attention_mask": torch.ones(2, 2),
                  "margin": torch.tensor([1 / 3])}
        # −log σ(1 − 0 − 1/3) = log(1 + e^(−2/3)); centring: 0.01 · mean((r⁺ + r⁻)²) = 0.01 · 1
        expected = math.log(1 + math.exp(-2 / 3)) + (0.01 if centre else 0.0)
        assert trainer.compute_loss(stub, inputs).item() == pytest.approx(expected, abs=1e-6)


# ---- the statistics an update logs, each tied to the quantity its name says ----------------------------------------
class FixedPolicy(torch.nn.Module):
    """A stand-in for PolicyValue: returns chosen log-probs, entropies and values for the rows of a mini-batch (the
    features carry each row's index). Its one parameter has zero gradient effect at lr 0, so nothing moves."""

    def __init__(self, logprobs, entropy, values):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(()))
        self.logprobs, self.entropy, self.value = logprobs, entropy, values

    def forward(self, input_ids, attention_mask, context_length, temperature, features):
        rows = features[:, 0, 0].long()
        return self.logprobs[rows] + self.bias, self.entropy[rows], self.value[rows] + self.bias


def test_each_logged_statistic_is_the_quantity_it_names():
    from accelerate import Accelerator

    from core.train.ppo.config import PPOConfig
    from core.train.ppo.trainer import Rollout, ppo_update

    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # B = 2, R = 3; row 2 ended after two tokens
    old = torch.tensor([[-1.0, -1.0, -1.0], [-2.0, -2.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-2.0, -3.0, 0.0]])
    new = old + torch.tensor([[0.1, 0.0, 0.0], [0.0, 0.0, 0.0]])  # the policy moved on one token
    old_values = torch.tensor([[0.5, 0.5, 0.5], [0.0, 0.0, 0.0]])
    new_values = old_values + 0.3
    entropy = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    features = torch.arange(2.0).view(2, 1, 1).expand(2, 3, 4)  # (B, R, H) holding the row index
    rollout = Rollout(prompts=["a", "b"], texts=["x", "y"], input_ids=torch.zeros(2, 5, dtype=torch.long),
                      attention_mask=torch.ones(2, 5, dtype=torch.long), context_length=2, mask=mask,
                      ended=torch.tensor([True, False]), logprobs=old, ref_logprobs=ref, features=features,
                      values=old_values, raw_scores=torch.tensor([2.0, 0.0]), scores=torch.tensor([1.0, -1.0]))
    cfg = PPOConfig(reward_model="unused", batch_size=2, mini_batches=1, ppo_epochs=1, cliprange=0.05,
                    cliprange_value=0.2, learning_rate=1e-3)
    pv = FixedPolicy(new, entropy, new_values)
    optimizer = torch.optim.SGD(pv.parameters(), lr=0.0)

    stats = {k: v.item() for k, v in ppo_update(pv, optimizer, Accelerator(cpu=True), rollout, cfg, 0.1, 0).items()}

    # KL per token k1 = logπ − logπ_ref = [[0.5, 0, −0.5], [0, 1, 0]]: per-list sums 0 and 1, mean 0.5
    assert stats["objective/kl"] == pytest.approx(0.5)
    # k3 = e^x − 1 − x with x = logπ_ref − logπ: (e^−.5 − .5) + (e^.5 − 1.5) = 0.25525; e^−1 = 0.36788; mean 0.31156
    assert stats["objective/kl3"] == pytest.approx((0.25525 + 0.36788) / 2, abs=1e-4)
    assert stats["objective/entropy"] == pytest.approx((3 + 4) / 2)  # −Σ logπ per list: 3 and 4
    assert stats["objective/scores"] == pytest.approx(1.0)  # raw reward-model scores 2 and 0
    assert stats["objective/scores_normalized"] == pytest.approx(0.0)  # 1 and −1
    assert stats["objective/non_score_reward"] == pytest.approx(-0.05)  # −β·KL per list: 0 and −0.1
    assert stats["objective/rlhf_reward"] == pytest.approx(-0.05)  # (1 + 0) and (−1 − 0.1): mean −0.05
    assert stats["val/num_eos_tokens"] == 1  # one of the two lists ended
    assert stats["val/mean_value"] == pytest.approx(1.5 / 5)  # old values over the 5 kept tokens
    assert stats["policy/entropy_avg"] == pytest.approx((1 + 2 + 3 + 4 + 5) / 5)  # the policy's, kept tokens only
    assert stats["val/ratio"] == pytest.approx((math.exp(0.1) + 4) / 5)  # e^0.1 on one token, 1 on four
    assert stats["policy/approxkl_avg"] == pytest.approx(0.5 * 0.1 ** 2 / 5)  # ½·mean((Δ logπ)²)
    assert stats["val/ratio_var"] == 0.0  # one mini-batch: no spread

    # the losses and clip fractions are the maths functions' own outputs on this rollout's advantages and returns
    rewards = per_token_rewards(rollout.scores, (old - ref) * mask, mask, 0.1)
    advantages, returns = gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
    pg_loss, pg = policy_loss(new, old, masked_whiten(advantages, mask), mask, cfg.cliprange)
    vf_loss, vf_clipfrac = value_loss(new_values, old_values, returns, mask, cfg.cliprange_value)
    assert stats["loss/policy_avg"] == pytest.approx(pg_loss.item())
    assert stats["policy/clipfrac_avg"] == pytest.approx(pg["clipfrac"].item())
    assert stats["loss/value_avg"] == pytest.approx(vf_loss.item())
    assert stats["val/clipfrac_avg"] == pytest.approx(vf_clipfrac.item()) and stats["val/clipfrac_avg"] > 0
    assert stats["val/mean_return"] == pytest.approx(masked_mean(returns, mask).item())
    assert len(set(round(v, 6) for v in stats.values())) >= len(stats) - 3  # distinct values: a swap would show


def test_held_out_sqrt_kl_is_the_root_of_the_mean_kl_as_gao_et_al_plot_it():
    # per-list k1 sums: -1 (its second token masked) and 1 + 2 = 3 -> mean KL 1, sqrt 1 (the mean of roots: 0.87)
    rollout = SimpleNamespace(logprobs=torch.tensor([[-1.0, 5.0], [1.0, 2.0]]), ref_logprobs=torch.zeros(2, 2),
                              mask=torch.tensor([[1.0, 0.0], [1.0, 1.0]]), raw_scores=torch.tensor([1.0, 2.0]),
                              texts=["a", "b"], prompts=["p", "q"])
    trainer = SimpleNamespace(rollout=lambda *args: rollout)
    metrics, samples = evaluate_held_out(trainer, ["p", "q"], {"score_mean": 0.0, "score_std": 1.0}, seed=0)
    assert metrics["eval/kl"] == pytest.approx(1.0) and metrics["eval/sqrt_kl"] == pytest.approx(1.0)
    assert [s["kl"] for s in samples] == pytest.approx([-1.0, 3.0])
