"""Where a tuning stage (PPO, DPO, RLOO) starts: the base model and, if given, the SFT adapter on it.

Used by core/train/ppo/trainer.py, dpo.py and rloo.py, so all three read an SFT adapter the same way: with no
--base-model, the base is the one the adapter was trained on (its adapter_config.json), not the embedded default.
"""
from __future__ import annotations

import torch
from peft import PeftModel

from core.model import load_causal_lm, resolve_base_model
from core.runs import adapter_dir, read_adapter_config

POLICY_ADAPTER = "default"  # PEFT's name for a loaded trainable adapter; TRL names its frozen copy "ref"
SFT_MADE_BY = "python -m core train sft"


def base_name_for(base_model: str, sft_adapter: str) -> str:
    """The base model to load: --base-model if given, else the SFT adapter's own base, else the embedded default.
    A folder that holds no causal-LM adapter is refused here (ModelLoadError saying what to pass)."""
    saved = read_adapter_config(sft_adapter, "CAUSAL_LM", SFT_MADE_BY) if sft_adapter else {}
    return resolve_base_model(base_model or saved.get("base_model_name_or_path"))


def start_policy(base_model: str, sft_adapter: str, device: torch.device):
    """(base name, policy): the base model, or the base with the SFT adapter loaded as the trainable adapter. TRL's
    DPO and RLOO trainers take the reference from here: a PEFT model's frozen "ref" copy of a loaded adapter, else
    the model with adapters disabled; either way the policy training starts from."""
    base_name = base_name_for(base_model, sft_adapter)
    base = load_causal_lm(base_name, device)
    if not sft_adapter:
        return base_name, base
    return base_name, PeftModel.from_pretrained(base, str(adapter_dir(sft_adapter)), is_trainable=True)
