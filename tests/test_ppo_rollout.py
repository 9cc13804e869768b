"""What a PPO rollout keeps and how it is scored: every sampled token with --stop-at-eos false, and the shared reward
model reading each list asked as the lists it learnt on, whatever the policy is asked with."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from core.collect.generate import SYSTEM_PROMPT
from core.train.ppo.policy_value import reward_system_prompt
from core.train.ppo.trainer import PPOTrainer

PROMPTS = ["Top 5 fruits", "Top 5 films for a rainy day", "Give me 5 hikes", "Top 5 board games"]


def sampling(trainer, monkeypatch, sampled: list[int]) -> None:
    """Every row samples `sampled`: the llama.cpp branch of step 1, its sampler replaced."""
    trainer.rollouts = True
    monkeypatch.setattr(trainer, "_sample_llamacpp", lambda query, seed: torch.tensor([sampled] * len(PROMPTS)))


@pytest.mark.parametrize("stop_at_eos", [True, False])
def test_stop_at_eos_false_keeps_every_sampled_token(trainer, monkeypatch, stop_at_eos):
    """--stop-at-eos false (TRL's stop_token=None): what was sampled after an EOS is trained on as sampled."""
    eos, pad = trainer.eos[0], trainer.tokenizer.pad_token_id
    sampling(trainer, monkeypatch, [5, eos, 7, 8])
    trainer.cfg = dataclasses.replace(trainer.cfg, stop_at_eos=stop_at_eos)
    r = trainer.rollout(PROMPTS, seed=0, score_mean=0.0, score_std=1.0)
    kept = [5, eos, pad, pad] if stop_at_eos else [5, eos, 7, 8]
    assert r.input_ids[:, r.context_length:].tolist() == [kept] * len(PROMPTS)
    assert r.mask.tolist() == [[1.0, 1.0, float(not stop_at_eos), float(not stop_at_eos)]] * len(PROMPTS)
    assert r.ended.all()


def test_the_plain_engine_samples_the_whole_length_without_stop_at_eos(trainer):
    """generate() would stop at EOS through the model's own generation config: the trainer clears it."""
    cfg = dataclasses.replace(trainer.cfg, stop_at_eos=False)
    plain = PPOTrainer(cfg, trainer.accelerator, trainer.pv, trainer.optimizer, trainer.tokenizer, scorer=None)
    assert plain.model.lm.generation_config.eos_token_id is None
    r = plain.rollout(PROMPTS, seed=0, score_mean=0.0, score_std=1.0)
    assert r.input_ids.shape[1] - r.context_length == cfg.response_length and r.mask.all()


def test_the_shared_reward_model_scores_with_the_system_prompt_it_learnt_on(trainer, monkeypatch):
    """--system-prompt changes what the policy is asked, not what the reward model reads."""
    sampling(trainer, monkeypatch, [5, 6, 7, trainer.eos[0]])
    scores = {}
    for system_prompt in (SYSTEM_PROMPT, "Answer in French."):
        trainer.cfg = dataclasses.replace(trainer.cfg, system_prompt=system_prompt)
        scores[system_prompt] = trainer.rollout(PROMPTS, seed=0, score_mean=0.0, score_std=1.0).raw_scores
    assert torch.allclose(*scores.values())
    trainer.reward_prompt = "Answer in French."  # a reward model that read lists asked so: scored as asked
    assert not torch.allclose(trainer.rollout(PROMPTS, seed=0, score_mean=0.0, score_std=1.0).raw_scores,
                              scores[SYSTEM_PROMPT])


def test_only_our_reward_stages_runs_are_known_to_read_the_default_prompt(tiny_reward_run, tmp_path):
    assert reward_system_prompt(str(tiny_reward_run), "") == SYSTEM_PROMPT
    assert reward_system_prompt(str(tiny_reward_run / "adapter"), "") == SYSTEM_PROMPT
    (tmp_path / "config.json").write_text(json.dumps({}))  # as bench/ppo_vs_trl.py saves its random reward model
    assert reward_system_prompt(str(tmp_path), "") == ""
