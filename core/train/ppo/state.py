"""What makes a PPO update reproducible: named seed streams, the prompt order, the checkpoint, the shared stop flag.

Every update is a pure function of (checkpoint, update index): its prompts come from a seeded per-pass shuffle and
its sampling seed from the update's index, so a run resumed after kill -9 retraces an uninterrupted one exactly
(tests/test_ppo.py checks it).
"""
from __future__ import annotations

import random

import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict

from core.paths import write_whole
from core.runs import RunFolder
from core.train.ppo.policy_value import POLICY

# Every random draw of a run comes from its one --seed through a named stream: seed * multiplier + offset + index.
# Distinct primes and offsets keep the streams from sharing draws. The constants are the ones README's runs were
# measured with (other values would change every sample, not the method).
SEED_STREAMS = {
    "prompt_order": (1_000_003, 0),  # the shuffle of the prompts for pass `index` over them
    "update": (100_003, 0),  # sampling and mini-batch order of update `index`
    "reward_scale": (1, 7_919),  # rollouts that measure the starting policy's score mean and std (batch `index`)
    "held_out": (1, 424_242),  # held-out evaluations: the same draws at every evaluation, so they compare
}


def derive_seed(seed: int, stream: str, index: int = 0) -> int:
    """The seed of draw `index` of `stream` in a run seeded with `seed` (SEED_STREAMS)."""
    multiplier, offset = SEED_STREAMS[stream]
    return seed * multiplier + offset + index


def prompt_batch(prompts: list[str], update: int, batch_size: int, seed: int, process: int = 0,
                 processes: int = 1) -> list[str]:
    """The prompts of one update for one process: walk a seeded shuffle of the prompts, reshuffled every pass.
    A pure function of its arguments, which is what makes resuming exact."""
    start = (update * processes + process) * batch_size
    batch = []
    for i in range(start, start + batch_size):
        epoch, offset = divmod(i, len(prompts))
        order = random.Random(derive_seed(seed, "prompt_order", epoch)).sample(range(len(prompts)), len(prompts))
        batch.append(prompts[order[offset]])
    return batch


def save_checkpoint(folder: RunFolder, model, optimizer, state: dict) -> None:
    """Everything an update depends on (policy LoRA, value head, optimiser, counters), written whole or not at all:
    a kill mid-save keeps the previous checkpoint."""
    path = folder.checkpoint_state
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"policy": get_peft_model_state_dict(model.peft_model, adapter_name=POLICY),
               "value_head": model.value_head.state_dict(), "optimizer": optimizer.state_dict(), "state": state}
    write_whole(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(folder: RunFolder, model, optimizer, device) -> dict:
    """Restore what `save_checkpoint` wrote; returns the counters (update, kl_coef, score mean and std)."""
    payload = torch.load(folder.checkpoint_state, map_location=device, weights_only=True)
    set_peft_model_state_dict(model.peft_model, payload["policy"], adapter_name=POLICY)
    model.value_head.load_state_dict(payload["value_head"])
    optimizer.load_state_dict(payload["optimizer"])
    return payload["state"]


def stop_requested(run, accelerator) -> bool:
    """Whether any rank was asked to stop: all ranks must leave the loop at the same update."""
    flag = torch.tensor(float(run.stop.requested), device=accelerator.device)
    return accelerator.reduce(flag, "sum").item() > 0
