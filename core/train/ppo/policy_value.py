"""One copy of the base weights serving PPO's four roles, as LoRA adapters on a single PEFT model.

- policy:    adapter "default" (trainable), started from the SFT adapter when given, else fresh (= the base);
- reference: adapter "reference" (a frozen copy of the SFT adapter), or the bare base with adapters disabled;
- value:     a linear head on the reference's last hidden state, zero-initialised (it starts by predicting the
             mean normalised reward, 0). The reference's forward pass is needed for the KL anyway, so the critic
             costs no forward pass of its own, and training it is one small matmul on features cached from the
             rollout; TRL's former design trained a whole second copy of the model for this;
- reward:    adapter "reward" + the reward model's score head, when the reward model was trained on this base.
             A reward model on another base is loaded beside it (RewardScorer) and scores decoded text.

A rollout costs generation plus three forward passes: reference, reward, and the policy's own rollout log-probs,
recomputed rather than taken from generation's logits so that the first PPO ratio is exactly 1 (trainer.py step 3b).
Each pass applies its head only where needed: the LM head on the response
positions (a 49k-wide vocabulary over the prompt would be wasted work), the score head on the last token.
"""
from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from peft.helpers import disable_input_dtype_casting
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file
from torch import nn

from core.collect.generate import SYSTEM_PROMPT
from core.runs import RunFolder, adapter_dir, read_adapter_config, run_folder
from core.stages import REWARD_MADE_BY

log = logging.getLogger(__name__)
POLICY, REFERENCE, REWARD = "default", "reference", "reward"  # "default": PEFT saves it at the folder's top


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as generate() used them: (B, T)."""
    return (attention_mask.cumsum(1) - 1).clamp(min=0)


class PolicyValue(nn.Module):
    """The PEFT model plus the value head (and the shared reward model's score head); `forward` is what PPO
    differentiates through."""

    def __init__(self, peft_model, value_head: nn.Linear, score_head: nn.Linear | None, has_reference: bool):
        super().__init__()
        self.peft_model, self.value_head, self.score_head = peft_model, value_head, score_head
        self.has_reference = has_reference

    @property
    def lm(self):
        return self.peft_model.get_base_model()

    def hidden(self, input_ids, attention_mask) -> torch.Tensor:
        """Last hidden state (B, T, H) under the active adapter."""
        backbone = getattr(self.lm, self.lm.base_model_prefix)
        with self.mixed_precision():
            return backbone(input_ids=input_ids, attention_mask=attention_mask,
                            position_ids=position_ids(attention_mask)).last_hidden_state

    @contextmanager
    def mixed_precision(self):
        """On a bf16 base, the fp32 LoRA weights multiply in bf16 too (autocast), instead of PEFT's default of
        casting each adapted layer's input to fp32: that kept a fp32 copy of the input of every adapted Linear for
        the backward pass (~100 MB per 400 tokens here) and ran slower. The weights and their Adam state stay fp32."""
        dtype, device = self.lm.get_input_embeddings().weight.dtype, self.lm.device.type
        if dtype == torch.float32 or not torch.amp.is_autocast_available(device):  # (the meta device of a test)
            yield
            return
        with torch.autocast(device, dtype=dtype), disable_input_dtype_casting(self.peft_model):
            yield

    def forward(self, input_ids, attention_mask, context_length: int, temperature: float, features: torch.Tensor):
        """Policy log-probs (B, R) of the response tokens under logits / T and their entropy (B, R); values (B, R)
        from the reference's `features` (B, R, H). One call, so that under DDP both heads' gradients are synced."""
        h = response_states(self.hidden(input_ids, attention_mask), context_length)
        logprobs, entropy = response_logprobs(self.lm.lm_head(h), input_ids[:, context_length:], temperature)
        return logprobs, entropy, self.values(features)

    def values(self, features: torch.Tensor) -> torch.Tensor:
        return self.value_head(features.float()).squeeze(-1)  # (B, R)

    @torch.no_grad()
    def reference(self, input_ids, attention_mask, context_length: int, temperature: float):
        """The reference's log-probs (B, R) of the response tokens, and its hidden states (B, R, H) before each
        token: the value head's features."""
        with self.adapter(REFERENCE if self.has_reference else None):
            h = response_states(self.hidden(input_ids, attention_mask), context_length)
        return response_logprobs(self.lm.lm_head(h), input_ids[:, context_length:], temperature)[0], h

    @contextmanager
    def adapter(self, name: str | None):
        """Run a block under another adapter (None: the bare base), then return to the policy."""
        if name is None:
            with self.peft_model.disable_adapter():
                yield
            return
        self.peft_model.set_adapter(name, inference_mode=True)  # frozen: only the policy ever trains
        try:
            yield
        finally:
            self.peft_model.set_adapter(POLICY)

    @contextmanager
    def merged_policy(self):
        """Sample with the policy's LoRA folded into copies of the weights it adapts (~15 % faster on CPU, +~100 MB
        while it lasts). The original weights are swapped back untouched, so the reference stays exact; merging in
        place and unmerging would leave rounding drift in the base after every update."""
        swapped = []
        with torch.no_grad():
            for module in self.peft_model.modules():
                if isinstance(module, LoraLayer) and POLICY in getattr(module, "lora_A", {}):
                    original = module.base_layer.weight
                    merged = original + module.get_delta_weight(POLICY).to(original.dtype)
                    module.base_layer.weight = nn.Parameter(merged, requires_grad=False)
                    swapped.append((module, original))
        try:
            with self.peft_model.disable_adapter():
                yield
        finally:
            for module, original in swapped:
                module.base_layer.weight = original

    def policy_lora(self) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
        """The policy's LoRA as (A (r, in), B (out, r), scaling) per adapted Linear, by its Hugging Face name: what the
        llama.cpp engine applies on the base to sample PPO's rollouts (core/gguf_writer.write_lora_gguf)."""
        prefix = "base_model.model."
        return {name[len(prefix):] if name.startswith(prefix) else name:
                (module.lora_A[POLICY].weight, module.lora_B[POLICY].weight, module.scaling[POLICY])
                for name, module in self.peft_model.named_modules()
                if isinstance(module, LoraLayer) and POLICY in getattr(module, "lora_A", {})}

    @torch.no_grad()
    def reward_scores(self, input_ids, attention_mask, last_index: torch.Tensor) -> torch.Tensor:
        """The shared-base reward model's score (B,) read at `last_index` (the EOS, or the last token)."""
        with self.adapter(REWARD):
            h = self.hidden(input_ids, attention_mask)  # (B, T, H)
        last = h[torch.arange(h.shape[0], device=h.device), last_index]  # (B, H)
        return self.score_head(last.to(self.score_head.weight.dtype)).squeeze(-1).float()


def response_states(hidden: torch.Tensor, context_length: int) -> torch.Tensor:
    """The states before each response token, (B, T, H) -> (B, R, H), made contiguous: PyTorch multiplied a strided
    3-D slice by the frozen bf16 LM head as a batched matmul over copies of the 49k x H weight (profiled: bmm and
    copy_), ~10x slower than one matmul (bench/train_precision.py)."""
    return hidden[:, context_length - 1:-1].contiguous()


def response_logprobs(logits: torch.Tensor, response: torch.Tensor, temperature: float):
    """log π(token) under logits / T, the distribution sampled from, and the entropy of that distribution:
    (B, R, V) logits and (B, R) tokens -> two (B, R) tensors."""
    # one fp32 (B, R, V) buffer scaled in place, rather than a cast and a quotient (peak memory)
    logprobs_all = F.log_softmax(logits.to(torch.float32, copy=True).div_(temperature), dim=-1)
    logprobs = logprobs_all.gather(-1, response.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():  # logged, never differentiated; one row at a time keeps (R, V) temporaries, not (B, R, V)
        entropy = torch.stack([-(row.exp() * row).sum(-1) for row in logprobs_all])
    return logprobs, entropy


def _train_only(peft_model, name: str) -> None:
    """PEFT's set_adapter marks the active adapter trainable; only the policy's weights may ever be."""
    for param_name, param in peft_model.named_parameters():
        param.requires_grad = f".{name}." in param_name and "lora_" in param_name


def build(base, tokenizer, lora_config, sft_adapter: str | None, reward_adapter: str | None) -> PolicyValue:
    """Wrap the loaded base causal LM (eval mode) into the four roles."""
    if sft_adapter:
        read_adapter_config(sft_adapter, "CAUSAL_LM", "python -m core train sft")
        peft_model = PeftModel.from_pretrained(base, str(adapter_dir(sft_adapter)), adapter_name=POLICY,
                                               is_trainable=True)
        peft_model.load_adapter(str(adapter_dir(sft_adapter)), adapter_name=REFERENCE, is_trainable=False)
    else:
        peft_model = get_peft_model(base, lora_config, adapter_name=POLICY)

    score_head = None
    if reward_adapter:
        folder = adapter_dir(reward_adapter)
        saved = json.loads((folder / "adapter_config.json").read_text())
        weights = load_file(str(folder / "adapter_model.safetensors"))
        score_weight = weights.pop("base_model.model.score.weight")  # (1, H), TRL's modules_to_save head
        peft_model.add_adapter(REWARD, LoraConfig(r=saved["r"], lora_alpha=saved["lora_alpha"], lora_dropout=0.0,
                                                  target_modules=saved["target_modules"], task_type="CAUSAL_LM"))
        result = set_peft_model_state_dict(peft_model, weights, adapter_name=REWARD)
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"reward adapter keys not understood: {result.unexpected_keys[:3]}")
        score_head = nn.Linear(score_weight.shape[1], 1, bias=False).to(base.device)
        score_head.weight.data.copy_(score_weight)
        score_head.requires_grad_(False)

    peft_model.set_adapter(POLICY)
    _train_only(peft_model, POLICY)
    peft_model.eval()  # PPO keeps dropout off in every role (RLHF_NOTES 1)
    hidden_size = base.config.get_text_config().hidden_size
    value_head = nn.Linear(hidden_size, 1).to(base.device)
    nn.init.zeros_(value_head.weight)
    nn.init.zeros_(value_head.bias)
    return PolicyValue(peft_model, value_head, score_head, has_reference=bool(sft_adapter))


def reward_system_prompt(reward_model: str, asked_with: str) -> str:
    """The system prompt a reward model's lists were asked with: our reward stage's runs always used SYSTEM_PROMPT
    (reward_model.reward_input_ids); a reward model from elsewhere is taken to read lists as the policy is asked."""
    return SYSTEM_PROMPT if RunFolder(run_folder(reward_model)).stage == "reward" else asked_with


def reward_shares_base(reward_adapter: str | Path, base_name: str) -> bool:
    """Whether the reward model was trained on this very base (then it rides along as one more adapter)."""
    saved = read_adapter_config(reward_adapter, "SEQ_CLS", REWARD_MADE_BY)
    same = str(saved.get("base_model_name_or_path", "")).rstrip("/")
    return same == str(base_name).rstrip("/") or (Path(same).exists() and Path(same).resolve() == Path(base_name).resolve())
