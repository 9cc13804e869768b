"""PPO with a KL penalty, written out because TRL 1.13 removed its PPOTrainer (trainer.py says where it departs).

    config.py        PPOConfig: every setting, with presets
    maths.py         masked statistics, KL estimators, GAE, the clipped losses (tests/test_ppo_maths.py)
    policy_value.py  one base model in four roles: policy, reference, value head, reward model
    state.py         named seed streams, prompt order, checkpoints, the stop flag shared across ranks
    trainer.py       the loop, in numbered steps: rollout, score, rewards, advantages, updates, logs
"""
