"""PPO's settings: one dataclass is the CLI (`python -m core train ppo --help`), the dashboard's form and config.json."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from core.collect.generate import SYSTEM_PROMPT
from core.config import check, knob
from core.train.trackers import report_to_knob
from core.train.trainer_run import precision_knob


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
    sampling_engine: str = knob("auto", "what samples the rollouts: auto (llama.cpp on a CPU where it can take the "
                                "model, else plain), llamacpp (the base's GGUF plus the policy's LoRA, rewritten "
                                "each update) or plain (PyTorch); the log-probs are the policy's own either way",
                                choices=("auto", "plain", "llamacpp"))
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
    lora_targets: list[str] = knob(["q_proj", "k_proj", "v_proj", "o_proj"], "module names that get LoRA adapters")
    sample_every: int = knob(5, "log sample generations with their scores every this many updates")
    checkpoint_every: int = knob(1, "save a resumable checkpoint every this many updates")
    eval_every: int = knob(0, "every this many updates (and before the first), answer held-out requests and log "
                              "eval/* (reward score, KL, well-formed rate): the over-optimisation view; 0: off")
    eval_prompts: int = knob(16, "held-out requests answered at each evaluation")
    device: str = knob("auto", "where to train: auto (GPU if present), cpu or cuda", choices=("auto", "cpu", "cuda"))
    precision: str = precision_knob()  # PPO loads the base in this dtype itself (half the memory in bf16)
    seed: int = knob(0, "seed for prompt order, sampling and initialisation")
    output_dir: str = knob("", "run folder; empty: models/runs/ppo-<timestamp>")
    report_to: str = report_to_knob()

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
        check(0 < self.cliprange < 1, "cliprange must be in (0, 1), e.g. 0.2.")
        check(self.cliprange_value > 0, "cliprange-value must be positive, e.g. 0.2.")
        check(0 <= self.gamma <= 1 and 0 <= self.lam <= 1, "gamma and lam must be in [0, 1].")
        check(self.norm_samples >= 2 or not self.normalize_reward, "norm-samples must be at least 2.")
        check(self.sample_every > 0 and self.checkpoint_every > 0, "sample-every and checkpoint-every must be >= 1.")
        check(self.eval_every >= 0 and self.eval_prompts > 0, "eval-every must be >= 0 and eval-prompts positive.")
