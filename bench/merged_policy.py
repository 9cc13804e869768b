"""A policy run's LoRA adapter merged into its base, written as a plain model folder: a base another stage can start
from (for example a reward model initialised from the SFT policy, as InstructGPT's was).

    .venv/bin/python -m bench.merged_policy models/runs/sft-... bench/out/sft-merged      # ~10 s for the 135M model
    .venv/bin/python -m bench.reward_variants --db DB --base-model bench/out/sft-merged --variants quick --out OUT

The product's stages read adapter + base, never merged weights (core/train/dpo.py, point 3, says why); this is for
experiments only. fp32 weights and the base's tokenizer (with its chat template) go into the folder.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from core.runs import adapter_dir
from core.train.start import base_name_for


def merge(run: str, out: str) -> Path:
    base_name = base_name_for("", run)
    model = AutoModelForCausalLM.from_pretrained(base_name, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(adapter_dir(run))).merge_and_unload()
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_name).save_pretrained(out)  # as shipped: load_tokenizer sets pad and side
    return Path(out)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m bench.merged_policy POLICY_RUN OUT_FOLDER")
    print(f"merged model: {merge(sys.argv[1], sys.argv[2])}")
