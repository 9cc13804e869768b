"""Where the reward model reads a list: at its last token (the product's reward model, as InstructGPT's and TRL's
are) or averaged over the list's tokens. One votes database, the same split and preset as a finished reward run.

    .venv/bin/python -m bench.reward_pooling --reference models/runs/reward-...-loop --out bench/out/reward-pooling \\
        --seeds 0,1 --lora last,mean

Why: on `ontopic` the reward model stays at 71-76 % held out where the annotator's noise allows 97 %
(bench/reward_ceiling.py), and four epochs fit the training votes (0.98) without doing better held out. The tastes
add up over the items (a filler word, a request word, an item's length); a mean over the list's tokens reads such a
sum linearly, while the last token has to gather it through attention that LoRA adapts from a few hundred pairs.
Nothing here changes the product: the mean-pooled model exists only in this file, until it earns its place.
1. Frozen probes: the base model's final-layer state at the last token, its mean over the list's tokens, and the mean
   at the middle layer, for every list; a Bradley–Terry logistic regression on the feature differences (standardised,
   L2 strength by 5-fold cross-validation on the training pairs grouped by request). Judged on the reference run's
   held-out votes, and by 5-fold cross-validation over every decided vote grouped by request (4x the pairs).
2. LoRA reward models with the reference run's settings (TRL's RewardTrainer on its training pairs), pooled at the
   last token (as the product) or by the mean over the list's tokens, one per seed; judged on its held-out votes.
Report (--out/reward_pooling.json and .md): accuracy [95 % Wilson] with counts, and against the reference run on the
same held-out votes: right only here / only there with McNemar's exact p.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import LlamaForSequenceClassification
from transformers.modeling_outputs import SequenceClassifierOutputWithPast

from bench.feedback_ablation import mcnemar_p
from core import config as config_io
from core.config import knob, parse_config
from core.model import load_causal_lm, load_tokenizer, pick_device
from core.runs import RunFolder, read_json
from core.train.reward_model import (
    RewardConfig,
    RewardScorer,
    held_out_votes,
    reward_input_ids,
    reward_trainer,
    score_votes,
    training_rows,
)
from core.train.reward_probe import FOLDS, fit_bt, fold_accuracies, folds
from core.train.trainer_run import seed_weights, trained_model
from core.win_rate import wilson_interval


@dataclass
class PoolingConfig:
    reference: str = knob("", "a finished `train reward` run: its votes, split, settings and held-out accuracy")
    out: str = knob("bench/out/reward-pooling", "folder for the LoRA runs and the report")
    seeds: list[int] = knob([0, 1], "seeds of the LoRA runs")
    lora: list[str] = knob(["last", "mean"], "LoRA reward models to train: last, mean (none: probes only)")
    probes: bool = knob(True, "fit the frozen-feature probes")


def list_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor, start_id: int, newline_id: int) -> torch.Tensor:
    """(B, T) 1.0 on the list's tokens: after the newline that ends the last "<|im_start|>assistant" header."""
    positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)  # (B, T)
    last_start = torch.where(input_ids == start_id, positions, -1).max(dim=1, keepdim=True).values  # (B, 1)
    newline_after = torch.where((input_ids == newline_id) & (positions > last_start), positions, input_ids.shape[1])
    header_end = newline_after.min(dim=1, keepdim=True).values  # (B, 1)
    return ((positions > header_end) & attention_mask.bool()).float()


class ListMeanRewardModel(LlamaForSequenceClassification):
    """The score head applied to every list token's state and averaged (a linear head: the head of the mean)."""
    start_id: int = 1
    newline_id: int = 198

    def forward(self, input_ids=None, attention_mask=None, **_):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        per_token = self.score(hidden).squeeze(-1).float()  # (B, T)
        mask = list_mask(input_ids, attention_mask, self.start_id, self.newline_id)
        logits = (per_token * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1)  # (B, 1)
        return SequenceClassifierOutputWithPast(logits=logits)


# ---- 1. frozen probes ---------------------------------------------------------------------------------------------
@torch.no_grad()
def features(model, tokenizer, texts: list[tuple[str, str]], middle: int) -> dict[str, np.ndarray]:
    """(N, H) per kind: last token, mean of the list's tokens (final layer), mean of the list's tokens (`middle`)."""
    start_id, newline_id = tokenizer.convert_tokens_to_ids("<|im_start|>"), tokenizer.convert_tokens_to_ids("Ċ")
    out = {"last": [], "mean": [], "mean-middle": []}
    for prompt, text in texts:
        ids = torch.tensor([reward_input_ids(tokenizer, prompt, text)])
        mask = torch.ones_like(ids)
        states = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        on_list = list_mask(ids, mask, start_id, newline_id)[0].bool()  # (T,)
        out["last"].append(states[-1][0, -1].float().numpy())
        out["mean"].append(states[-1][0, on_list].float().mean(0).numpy())
        out["mean-middle"].append(states[middle][0, on_list].float().mean(0).numpy())
    return {kind: np.stack(rows) for kind, rows in out.items()}


def best_l2(diff: np.ndarray, margin: np.ndarray, groups: pd.Series) -> float:
    """The λ with the best mean cross-validated accuracy (the product's probe head takes the one-standard-error λ)."""
    scores = {l2: np.mean(accs) for l2, accs in fold_accuracies(diff, margin, groups).items()}
    return max(scores, key=scores.get)


def probe_rows(feats: dict, index: dict, train: pd.DataFrame, held: pd.DataFrame, decided: pd.DataFrame) -> dict:
    """Per feature kind: held-out `correct` (a Series on held's index) and cross-validated correct over `decided`."""
    results = {}
    for kind, matrix in feats.items():
        centre, spread = matrix.mean(0), matrix.std(0) + 1e-6
        z = (matrix - centre) / spread

        def diff(frame, first, second):
            return z[[index[(p, t)] for p, t in zip(frame.prompt, frame[first])]] - \
                z[[index[(p, t)] for p, t in zip(frame.prompt, frame[second])]]
        train_diff, train_margin = diff(train, "chosen", "rejected"), train.margin.to_numpy(float)
        l2 = best_l2(train_diff, train_margin, train.prompt)
        w = fit_bt(train_diff, train_margin, l2)
        held_correct = pd.Series((diff(held, "left_text", "right_text") @ w > 0) == (held.choice == "left"),
                                 index=held.index)
        # every standing left/right vote, 5-fold by request, each with its margin
        cv_diff, cv_margin, fold = diff(decided, "chosen", "rejected"), decided.margin.to_numpy(float), \
            folds(decided.prompt)
        cv_correct = np.concatenate([cv_diff[fold == f] @ fit_bt(cv_diff[fold != f], cv_margin[fold != f], l2) > 0
                                     for f in range(FOLDS)])
        results[kind] = {"l2": l2, "held": held_correct, "cv_correct": int(cv_correct.sum()), "cv_n": len(cv_correct)}
    return results


# ---- 2. LoRA reward models ----------------------------------------------------------------------------------------
def train_lora(reference: Path, pooling: str, seed: int, out: Path):
    """A LoRA reward model with the reference run's settings and training pairs (the reward stage's own trainer);
    its scores of every labelled vote."""
    saved = read_json(RunFolder(reference).config)
    cfg = replace(config_io.load(RewardConfig, RunFolder(reference).config), seed=seed)
    base_name, device = saved["base_model_resolved"], pick_device("cpu")
    tokenizer = load_tokenizer(base_name)
    seed_weights(seed)
    if pooling == "mean":
        model = ListMeanRewardModel.from_pretrained(base_name, num_labels=1, dtype=torch.float32).eval()
        model.start_id = tokenizer.convert_tokens_to_ids("<|im_start|>")
        model.newline_id = tokenizer.convert_tokens_to_ids("Ċ")
    else:
        model = load_causal_lm(base_name, device, dtype=torch.float32, head="reward")
    model.config.pad_token_id = tokenizer.pad_token_id
    pairs = pd.read_parquet(RunFolder(reference).snapshot("pairs.parquet"))
    rows = training_rows(pairs[pairs.split == "train"], tokenizer, cfg.use_margin, False)
    trainer = reward_trainer(cfg, model, tokenizer, rows, device, out)
    trainer.train()
    votes = pd.read_parquet(RunFolder(reference).scores)
    return score_votes(RewardScorer(trained_model(trainer), tokenizer), votes)


# ---- report -------------------------------------------------------------------------------------------------------
def row(name: str, correct: pd.Series, reference: pd.Series, **extra) -> dict:
    n, k = len(correct), int(correct.sum())
    low, high = wilson_interval(k, n)
    here = int((correct & ~reference).sum())
    there = int((~correct & reference).sum())
    return {"setting": name, "correct": k, "pairs": n, "accuracy": k / n, "low": low, "high": high,
            "only_here": here, "only_reference": there, "mcnemar_p": mcnemar_p(here, there), **extra}


def markdown(rows: list[dict]) -> str:
    lines = ["| setting | held-out accuracy [95 % Wilson] | vs the reference: right only here / only there "
             "(McNemar p) | 5-fold CV over every decided vote [95 % Wilson] |", "|---|---|---|---|"]
    for r in rows:
        cv = ""
        if r.get("cv_n"):
            low, high = wilson_interval(r["cv_correct"], r["cv_n"])
            cv = f"{r['cv_correct'] / r['cv_n']:.3f} [{low:.3f}, {high:.3f}] ({r['cv_correct']}/{r['cv_n']})"
        lines.append(f"| {r['setting']} | {r['accuracy']:.3f} [{r['low']:.3f}, {r['high']:.3f}] "
                     f"({r['correct']}/{r['pairs']}) | {r['only_here']} / {r['only_reference']} "
                     f"(p = {r['mcnemar_p']:.2f}) | {cv} |")
    return "\n".join(lines) + "\n"


def probes(reference: Path, held: pd.DataFrame, ref_correct: pd.Series) -> list[dict]:
    """Step 1's rows: one per kind of frozen feature."""
    pairs = pd.read_parquet(RunFolder(reference).snapshot("pairs.parquet"))
    train = pairs[pairs.split == "train"]
    decided = pairs[pairs.source == "votes"]  # every standing left/right vote, both splits, repeats out
    texts = sorted({(prompt, text) for frame, columns in ((pairs, ("chosen", "rejected")),
                                                          (held, ("left_text", "right_text")))
                    for column in columns for prompt, text in zip(frame.prompt, frame[column])})
    base = read_json(RunFolder(reference).config)["base_model_resolved"]
    tokenizer, model = load_tokenizer(base), load_causal_lm(base, pick_device("cpu"), dtype=torch.float32)
    feats = features(model, tokenizer, texts, middle=model.config.num_hidden_layers // 2)
    index = {key: i for i, key in enumerate(texts)}
    return [row(f"frozen probe: {kind}", result["held"], ref_correct, l2=result["l2"],
                cv_correct=result["cv_correct"], cv_n=result["cv_n"])
            for kind, result in probe_rows(feats, index, train, held, decided).items()]


def main(argv: list[str] | None = None) -> list[dict]:
    cfg = parse_config(PoolingConfig, argv, prog="python -m bench.reward_pooling")
    reference, out = Path(cfg.reference), Path(cfg.out)
    if not (RunFolder(reference).scores.exists() and RunFolder(reference).snapshot("pairs.parquet").exists()):
        print(f"{reference} is not a finished reward run (no scores.parquet): give --reference a `train reward` run")
        return []
    poolings = [p for p in cfg.lora if p != "none"]
    if set(poolings) - {"last", "mean"}:
        print(f"--lora takes last and/or mean (comma-separated), not {cfg.lora!r}")
        return []
    out.mkdir(parents=True, exist_ok=True)
    held = held_out_votes(pd.read_parquet(RunFolder(reference).scores))
    ref_correct = held.correct.astype(bool)
    rows = [row("reference run (LoRA, last token)", ref_correct, ref_correct)]
    if cfg.probes:
        rows += probes(reference, held, ref_correct)
        print(markdown(rows), flush=True)
    for pooling in poolings:
        for seed in cfg.seeds:
            started = time.time()
            correct = held_out_votes(train_lora(reference, pooling, seed, out / f"{pooling}-seed{seed}")).correct
            correct = pd.Series(correct.astype(bool).to_numpy(), index=held.index)  # the same votes, in order
            rows.append(row(f"LoRA, {pooling}, seed {seed}", correct, ref_correct,
                            seconds=round(time.time() - started)))
            print(markdown(rows[-1:]), flush=True)
    (out / "reward_pooling.json").write_text(json.dumps(rows, indent=2, default=float))
    (out / "reward_pooling.md").write_text(markdown(rows))
    print(markdown(rows))
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
