"""Rejection-sampling fine-tuning: the policy's best of n lists under the reward model, learned with TRL's SFTTrainer.

    python -m core train rejection --reward-model models/runs/reward-... --sft-adapter models/runs/sft-... \\
        --preset quick                          # 160 requests x 4 lists, then 60 steps; sampling and scoring dominate
    python -m core train rejection --reward-model RUN --num-samples 8 --max-prompts 0   # every training request

The stage-3 method Llama 2 ran before PPO ("rejection sampling fine-tuning", Touvron et al. 2023), also RAFT (Dong
et al. 2023) and one ReST step (Gulcehre et al. 2023): best-of-n distilled into the weights. Why beside PPO, DPO and
RLOO: best-of-n under the reward model is the reference optimiser of over-optimisation studies (Gao et al. 2023), at
a KL of at most log n - (n - 1)/n nats from the policy, and on the `reasons` taste the reward model's best of 4 SFT
lists beat an SFT list more often than any PPO or RLOO run had (bench/README.md, "Best of n on `reasons`, and
rejection-sampling fine-tuning", which also times the stage: 36 min for all 288 requests on 2 shared cores).
TRL 1.16 has no best-of-n sampler or trainer, so it is written here from the pieces the other stages use:
1. Requests: the library's train split (or --prompts-file), the first --max-prompts of them (0: all).
2. The starting policy (the SFT adapter, or the base) samples --num-samples lists per request with the fast
   sampling engine (core/engine.py), as `core eval` samples, draw d seeded seed + 10000 d. Only text is kept, so the
   engine's tiny distance from fp32 does not matter here (no log-probabilities are reused).
3. The reward model scores every list (RewardScorer, exactly as its held-out accuracy was measured); a list that
   never ended loses --missing-eos-penalty (PPO's and RLOO's rule). Each request's best list is kept when it ended
   and it beats the mean of its siblings by at least --min-gap (0: always).
4. SFT on the kept lists (loss on the list tokens only, tokenised as sft.py does), continuing the starting
   adapter, so the result is a whole policy on the base like every other run (dpo.py, point 3, says why not a merge);
   a fresh LoRA when training starts from the base.
`--candidates-from RUN` skips steps 1-3 and re-picks that run's scored lists: other training settings on the same
picks in minutes (give the same --sft-adapter: the picks are that policy's own samples). With a --reward-model other
than the one that scored them it skips steps 1-2 only: the same lists judged by a newer reward model (after a round
of votes), without sampling them again. `--sample-only` stops after step 3: the scored lists for online DPO
(`python -m core train dpo --pairs-from RUN`), no adapter.
Logged: rejection/* (the candidates' and the picks' mean reward, the gain, how many kept, well-formed and unfinished
shares) at step 0, then TRL's SFT metrics; every candidate with its score and whether it was picked in samples.jsonl.
"""
from __future__ import annotations

import gc
import logging
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from peft import LoraConfig

from core.collect.generate import Generator
from core.config import check, knob, stage_main
from core.engine import ENGINES
from core.lists import parse_list
from core.model import describe_device, load, load_tokenizer, pick_device
from core.records import InputError, SamplingSettings
from core.runs import (
    RunFolder,
    RunState,
    adapter_dir,
    prepare_run_dir,
    read_adapter_config,
    read_json,
    read_jsonl,
)
from core.stages import REWARD_MADE_BY
from core.train.reward_model import RewardScorer
from core.train.run_writer import Run
from core.train.sft import supervised_trainer, tokenize_demonstration
from core.train.snapshot import note_reward_model, take_prompts
from core.train.start import base_name_for, start_policy
from core.train.trackers import report_to_knob
from core.train.trainer_run import (
    attach,
    precision_knob,
    seed_weights,
    trained_model,
    weights_for,
)

log = logging.getLogger(__name__)
DRAW_SEED_STRIDE = 10_000  # draw d of request i is seeded seed + 10000 d + i: no two lists share a seed


@dataclass
class RejectionConfig:
    reward_model: str = knob("", "reward-model run folder (python -m core train reward) that picks the best list; "
                                 "required")
    sft_adapter: str = knob("", "policy run (SFT, or PPO, DPO, RLOO) or adapter folder that samples and goes on "
                                "training; empty: the base with a fresh LoRA")
    base_model: str = knob("", "base model; empty: the SFT adapter's base, else $RLHF_BASE_MODEL or the embedded "
                               "SmolLM2-135M-Instruct")
    prompts_file: str = knob("", "JSONL of {\"prompt\": ...} rows to sample for; empty: the library's train split")
    max_prompts: int = knob(0, "sample for the first this many requests (0: all)")
    num_samples: int = knob(4, "n: lists sampled per request; the reward model keeps the best")
    candidates_from: str = knob("", "a finished rejection run whose lists to use again (no sampling): its scores, "
                                    "or re-scored when --reward-model names another reward model")
    sample_only: bool = knob(False, "sample and score only, train nothing (no adapter): the scored lists for "
                                    "`python -m core train dpo --pairs-from` (online DPO)")
    min_gap: float = knob(0.0, "keep a request's best list only if it beats its siblings' mean score by this much")
    max_new_tokens: int = knob(160, "most tokens sampled per list")
    temperature: float = knob(0.8, "sampling temperature")
    missing_eos_penalty: float = knob(1.0, "taken off the reward-model score of a list that never ends")
    engine: str = knob("auto", "sampling engine (core/engine.py): auto (llama.cpp, else int8, on a CPU), llamacpp, "
                               "int8 or plain", choices=ENGINES)
    epochs: float = knob(2.0, "passes over the kept lists")
    max_steps: int = knob(-1, "stop after this many optimiser steps (-1: run all epochs)")
    learning_rate: float = knob(2e-4, "AdamW learning rate for the LoRA weights")
    batch_size: int = knob(8, "lists per optimiser step")
    max_length: int = knob(512, "longest request + list in tokens; longer ones are truncated")
    lora_r: int = knob(16, "LoRA rank of a fresh adapter (an SFT adapter keeps its own)")
    lora_alpha: int = knob(32, "LoRA scaling numerator of a fresh adapter")
    lora_targets: list[str] = knob(["q_proj", "k_proj", "v_proj", "o_proj"], "module names that get LoRA adapters "
                                                                             "(a fresh adapter only)")
    device: str = knob("auto", "where to train: auto (GPU if present), cpu or cuda", choices=("auto", "cpu", "cuda"))
    precision: str = precision_knob()
    seed: int = knob(0, "seed for sampling, data order and LoRA initialisation")
    output_dir: str = knob("", "run folder; empty: models/runs/rejection-<timestamp>")
    report_to: str = report_to_knob()

    PRESETS: ClassVar[dict] = {
        # best of 4 scored as high as best of 8 on `reasons`; 160 requests x 4 lists sample in ~5 min with llama.cpp
        # on 2 cores. The policy's own lists are already likely under it: 2 epochs at 1e-4 left the loss flat
        # (0.694 -> 0.691) and the policy level with SFT, 3 at 5e-4 moved it (0.693 -> 0.579; 56.4 % over SFT)
        # (bench/README.md, "Best of n on `reasons`, and rejection-sampling fine-tuning")
        "quick": dict(num_samples=4, max_prompts=160, epochs=3.0, batch_size=8, learning_rate=5e-4),
    }

    def __post_init__(self):
        check(bool(self.reward_model) or bool(self.candidates_from), "rejection sampling needs a reward model: "
              "pass --reward-model models/runs/reward-<timestamp>.")
        check(not (self.sample_only and self.candidates_from and not self.reward_model), "sample-only with "
              "candidates-from has nothing to do: pass --reward-model to re-score the lists, or drop one of them.")
        check(self.num_samples >= 2, "num-samples must be at least 2 (the best of one is no choice), e.g. 4.")
        check(self.max_prompts >= 0, "max-prompts must be >= 0 (0: every request).")
        check(self.min_gap >= 0, "min-gap must be >= 0 (0 keeps every request's best list).")
        check(self.max_new_tokens > 0, "max-new-tokens must be positive, e.g. 160.")
        check(self.temperature > 0, "temperature must be positive, e.g. 0.8.")
        check(self.missing_eos_penalty >= 0, "missing-eos-penalty must be >= 0, e.g. 1.0.")
        check(self.epochs > 0, "epochs must be positive, e.g. --epochs 2.")
        check(self.max_steps == -1 or self.max_steps > 0, "max-steps must be -1 (all epochs) or a positive count.")
        check(0 < self.learning_rate < 1, "learning-rate should be small and positive, e.g. 1e-4.")
        check(self.batch_size > 0, "batch-size must be at least 1.")
        check(self.max_length >= 32, "max-length must be at least 32 tokens.")
        check(self.lora_r > 0 and self.lora_alpha > 0, "lora-r and lora-alpha must be positive, e.g. 16 and 32.")
        check(bool(self.lora_targets), "lora-targets needs at least one module name, e.g. q_proj,v_proj.")


def pick_best(candidates: list[dict], min_gap: float) -> dict | None:
    """The candidate with the highest reward if it ended and beats its siblings' mean reward by min_gap; else None.
    candidates: one request's lists, each {"reward": float, "finished": bool, ...}."""
    best = max(candidates, key=lambda c: c["reward"])
    siblings = [c["reward"] for c in candidates if c is not best]
    if not best["finished"] or best["reward"] - statistics.fmean(siblings) < min_gap:
        return None
    return best


def best_over_worst(per_request: list[list[dict]]) -> list[dict]:
    """On-policy preference pairs from scored lists (`dpo --pairs-from`): per request, the best list that ended
    (chosen) over the lowest-reward list (rejected), with their reward gap; a request whose lists all tie, or whose
    every list ran on, gives none. per_request: [request][draw] as read_candidates returns them."""
    pairs = []
    for group in per_request:
        finished = [c for c in group if c["finished"]]
        if not finished:
            continue
        best, worst = max(finished, key=lambda c: c["reward"]), min(group, key=lambda c: c["reward"])
        if best["reward"] > worst["reward"]:
            pairs.append({"prompt": best["prompt"], "chosen": best["text"], "rejected": worst["text"],
                          "gap": best["reward"] - worst["reward"]})
    return pairs


def widest(pairs: list[dict], share: float) -> list[dict]:
    """The share of `pairs` (rounded, at least one) with the largest reward gaps, in their order: the closest calls
    are where a reward model is most often wrong (bench/pair_quality.py)."""
    keep = max(1, round(share * len(pairs))) if pairs else 0
    kept = {id(p) for p in sorted(pairs, key=lambda p: -p["gap"])[:keep]}
    return [p for p in pairs if id(p) in kept]


def candidate_metrics(candidates: list[dict], picks: list[dict]) -> dict:
    """What the sampling step found, under rejection/* names."""
    scores = [c["reward"] for c in candidates]
    picked = [c["reward"] for c in picks]
    mean_all = statistics.fmean(scores)
    return {"rejection/candidates": len(candidates), "rejection/kept": len(picks),
            "rejection/reward_mean": mean_all, "rejection/reward_best": statistics.fmean(picked) if picks else None,
            "rejection/gain": statistics.fmean(picked) - mean_all if picks else None,
            "rejection/unfinished": sum(not c["finished"] for c in candidates) / len(candidates),
            "rejection/well_formed_all": sum(c["well_formed"] for c in candidates) / len(candidates),
            "rejection/well_formed_best": sum(c["well_formed"] for c in picks) / len(picks) if picks else None}


def sample_candidates(cfg: RejectionConfig, requests: list[str], device, on_draw=None) -> list[list[dict]] | None:
    """Step 2: num_samples lists per request from the starting policy, through the sampling engine (as `core eval`
    samples), one draw of every request at a time; before each, `on_draw(d)` says whether to go on (None: stopped):
    [request][draw] -> {"prompt", "text", "finished", "draw"}."""
    generator = Generator(load(base_name_for(cfg.base_model, cfg.sft_adapter), str(device), cfg.engine))
    adapter = str(adapter_dir(cfg.sft_adapter)) if cfg.sft_adapter else None
    sampling = SamplingSettings(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens)
    draws = []
    for d in range(cfg.num_samples):
        if on_draw is not None and not on_draw(d):
            return None  # stopped between draws
        draws.append(generator.answer_all(requests, adapter, sampling, cfg.seed + DRAW_SEED_STRIDE * d))
    del generator
    gc.collect()  # the sampler's weights go before the training copy loads
    return [[{"prompt": request, "text": draw[i].text, "finished": draw[i].finished, "draw": d}
             for d, draw in enumerate(draws)] for i, request in enumerate(requests)]


def sampling_message(draw: int, draws: int, requests: int, elapsed_s: float) -> str:
    """What the run's status says before draw `draw` (from 0): which list, and after the first draw the time left
    at the pace so far (the Runs page's progress bar counts training steps, and sampling 8 lists for every request
    takes half an hour on 2 cores)."""
    said = f"sampling list {draw + 1} of {draws} for each of {requests} requests"
    if draw == 0:
        return said
    left_min = elapsed_s / draw * (draws - draw) / 60
    return f"{said}, about {left_min:.0f} min left" if left_min >= 1 else f"{said}, under a minute left"


def sampled_and_scored(cfg: RejectionConfig, run: Run, run_dir: Path, device) -> list[list[dict]] | None:
    """Steps 1-3: the requests (snapshot in the run's data/), n lists for each, every list scored; None if stopped
    while sampling."""
    requests, _ = take_prompts(run_dir, "train", cfg.prompts_file or None)
    requests = requests[:cfg.max_prompts] if cfg.max_prompts else requests

    started = time.monotonic()

    def on_draw(d: int) -> bool:
        run.set_status("running", message=sampling_message(d, cfg.num_samples, len(requests),
                                                           time.monotonic() - started))
        return not run.stop.requested

    per_request = sample_candidates(cfg, requests, device, on_draw)
    if per_request is None or run.stop.requested:
        return None
    return scored(cfg, run, per_request, device)


def scored(cfg: RejectionConfig, run: Run, per_request: list[list[dict]], device) -> list[list[dict]]:
    """Step 3: every list scored by cfg.reward_model (score), less the penalty when it never ended (reward)."""
    candidates = [c for group in per_request for c in group]
    run.set_status("running", message=f"scoring {len(candidates)} lists with the reward model")
    scorer = RewardScorer.from_folder(cfg.reward_model, device=str(device))
    scores = scorer.score([c["prompt"] for c in candidates], [c["text"] for c in candidates])
    del scorer
    for c, score in zip(candidates, scores):
        c.update(score=score, reward=score - (0.0 if c["finished"] else cfg.missing_eos_penalty),
                 well_formed=parse_list(c["text"]).well_formed)
    return per_request


def resolved(folder: str) -> Path | None:
    """A run or adapter folder as one path however it was written (relative or absolute); None for "" (the base,
    or no reward model)."""
    return Path(folder).resolve() if folder else None


def warn_unless_own_lists(run: str, source: dict, start: str, flag: str) -> None:
    """Log a warning when the scored lists of `run` (its config.json: `source`) were sampled by another policy than
    the one this run starts from (`start`, an adapter path or "" for the base): then they are not its own lists."""
    sampled_by = source.get("sft_adapter", "")
    if resolved(sampled_by) != resolved(start):
        log.warning("%s %s sampled from %s, and this run starts from %s: the lists are not this policy's own", flag,
                    run, sampled_by or "the base", start or "the base")


def read_candidates(run: str, missing_eos_penalty: float | None = None) -> list[list[dict]]:
    """A finished rejection run's scored lists (samples.jsonl, step 0) grouped by request, rewards recomputed with
    `missing_eos_penalty` (None: the penalty that run scored them with, as dpo --pairs-from takes them):
    [request][draw] as sample_candidates + scoring leave them."""
    if missing_eos_penalty is None:
        missing_eos_penalty = read_json(RunFolder(run).config).get("missing_eos_penalty", 1.0)
    rows = [r for r in read_jsonl(RunFolder(run).samples) if r.get("step") == 0 and "score" in r]
    if not rows:
        raise InputError(f"{run} holds no scored lists (samples.jsonl): pass the folder of a finished "
                         "`python -m core train rejection` run (--candidates-from, dpo's --pairs-from).")
    groups: dict[str, list[dict]] = {}
    for r in rows:
        c = {key: r[key] for key in ("prompt", "text", "finished", "draw", "score", "well_formed")}
        groups.setdefault(r["prompt"], []).append(c | {"reward": c["score"] - (0.0 if c["finished"]
                                                                               else missing_eos_penalty)})
    return list(groups.values())


def train(cfg: RejectionConfig) -> Path:
    run_dir = prepare_run_dir("rejection", cfg.output_dir)
    with Run(run_dir, total=max(cfg.max_steps, 0), cfg=cfg) as run:
        source = read_json(RunFolder(cfg.candidates_from).config) if cfg.candidates_from else {}
        rescore = bool(cfg.candidates_from) and bool(cfg.reward_model) and (
            resolved(cfg.reward_model) != resolved(source.get("reward_model", "")))
        if cfg.candidates_from and not rescore:  # the lineage names the reward model that scored them
            cfg = replace(cfg, reward_model=source.get("reward_model", ""))
        if rescore and cfg.sample_only and not cfg.sft_adapter:  # nothing trains: the lists' sampler is the policy
            cfg = replace(cfg, sft_adapter=source.get("sft_adapter", ""))
        if cfg.candidates_from:
            warn_unless_own_lists(cfg.candidates_from, source, cfg.sft_adapter, "--candidates-from")
        if rescore or not cfg.candidates_from:  # a reward model will score: refuse a wrong folder before sampling
            read_adapter_config(cfg.reward_model, "SEQ_CLS", REWARD_MADE_BY)
        device = pick_device(cfg.device)
        seed_weights(cfg.seed)
        run.save_config(cfg, base_model_resolved=base_name_for(cfg.base_model, cfg.sft_adapter),
                        device_name=describe_device(device))
        if cfg.reward_model:  # the scoring reward model (the candidates' own when not re-scored): its rounds
            note_reward_model(run_dir, cfg.reward_model)
        if cfg.candidates_from:  # steps 1-2 (and 3 unless re-scored) done by that run
            per_request = read_candidates(cfg.candidates_from, cfg.missing_eos_penalty)
            if rescore:
                per_request = scored(cfg, run, per_request, device)
        else:
            per_request = sampled_and_scored(cfg, run, run_dir, device)
            if per_request is None:
                run.finish(RunState.STOPPED, message="stopped while sampling; nothing trained")
                return run_dir
        candidates = [c for group in per_request for c in group]
        picks = [p for p in (pick_best(group, cfg.min_gap) for group in per_request) if p is not None]
        picked = {id(p) for p in picks}
        for c in candidates:
            c["picked"] = id(c) in picked
        found = candidate_metrics(candidates, picks)
        run.log_samples(0, candidates)
        run.log_metrics(0, found)
        if cfg.sample_only:
            done = "re-scored" if rescore else "sampled and scored"
            run.finish(RunState.FINISHED, message=f"{len(candidates)} lists {done}; nothing trained")
            return run_dir
        if not picks:
            raise InputError(f"no request kept a list: every best list was unfinished or within --min-gap "
                             f"{cfg.min_gap} of its siblings; lower --min-gap or raise --max-new-tokens.")
        log.info("kept %d of %d requests' best lists; mean reward %.3f over all lists, %.3f over the picks",
                 len(picks), len(per_request), found["rejection/reward_mean"], found["rejection/reward_best"])

        # 4. SFT on the kept lists, continuing the starting adapter
        base_name, policy = start_policy(cfg.base_model, cfg.sft_adapter, device)
        policy = weights_for(policy, cfg.precision)
        tokenizer = load_tokenizer(base_name)
        rows = [tokenize_demonstration(tokenizer, p["prompt"], p["text"], cfg.max_length) for p in picks]
        lora = None if cfg.sft_adapter else LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.05,
                                                       target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM")
        trainer = supervised_trainer(policy, tokenizer, rows, cfg, run_dir, device, lora)
        attach(trainer, run)
        trainer.train()
        if run.is_main:
            trained_model(trainer).save_pretrained(RunFolder(run_dir).adapter)
        run.complete(run.stop.requested)
    return run_dir


if __name__ == "__main__":
    sys.exit(stage_main(RejectionConfig, train, prog="python -m core.train.rejection"))
