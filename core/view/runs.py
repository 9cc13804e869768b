"""What the dashboard shows of run folders: tables of runs, metric frames, config diffs, lineage and samples.

Pure readers over core/runs.py: a missing, torn or damaged file gives an empty frame or dict, never an exception,
so one bad folder cannot take a page down.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from core.runs import RunFolder, RunInfo, read_json, read_jsonl

# The curves each stage's runs plot, by panel: (title, metric keys). Keys a run did not log are skipped.
PANELS = {
    "ppo": [
        ("Reward", ["objective/scores", "objective/rlhf_reward"]),
        ("KL to the reference (nats) and beta", ["objective/kl", "objective/kl3", "objective/kl_coef"]),
        ("Entropy", ["objective/entropy"]),
        ("Clip fraction", ["policy/clipfrac_avg", "val/clipfrac_avg"]),
        ("Probability ratio", ["val/ratio"]),
        ("Losses", ["loss/policy_avg", "loss/value_avg"]),
        ("Response length (tokens)", ["val/response_length"]),
        ("Well-formed rate", ["objective/well_formed", "eval/well_formed"]),
        ("Held-out reward score", ["eval/scores"]),
    ],
    "reward": [
        ("Loss", ["train/loss"]),
        ("Accuracy", ["train/accuracy", "eval/accuracy"]),
        ("Reward margin (chosen - rejected)", ["train/margin"]),
    ],
    "sft": [
        ("Loss", ["train/loss"]),
        ("Token accuracy", ["train/mean_token_accuracy"]),
        ("Learning rate", ["train/learning_rate"]),
    ],
    "dpo": [
        ("Loss", ["train/loss", "eval/loss"]),
        ("Implicit-reward accuracy (chosen above rejected)", ["train/rewards/accuracies",
                                                              "eval/rewards/accuracies", "eval/accuracy"]),
        ("Implicit rewards β·log(π/π_ref)", ["train/rewards/chosen", "train/rewards/rejected",
                                             "train/rewards/margins"]),
        ("Log-probabilities of the lists", ["train/logps/chosen", "train/logps/rejected"]),
        ("Learning rate", ["train/learning_rate"]),
    ],
    "rejection": [
        ("Loss on the reward model's picks", ["train/loss"]),
        ("Token accuracy", ["train/mean_token_accuracy"]),
        ("Learning rate", ["train/learning_rate"]),
    ],
    "rloo": [
        ("Reward (reward model, less the missing-EOS penalty)", ["train/reward", "train/reward_std"]),
        ("KL to the reference (nats per token)", ["train/kl"]),
        ("Entropy", ["train/entropy"]),
        ("Clip fraction", ["train/clip_ratio/region_mean"]),
        ("List length (tokens)", ["train/completions/mean_length", "train/completions/mean_terminated_length"]),
        ("Share of lists that never ended", ["train/completions/clipped_ratio"]),
        ("Well-formed rate", ["train/well_formed"]),
        ("Groups whose k rewards were all equal", ["train/frac_reward_zero_std"]),
    ],
}


def runs_table(runs: list[RunInfo]) -> pd.DataFrame:
    """One row per run: name, stage, state, progress, ETA, message."""
    rows = []
    for run in runs:
        s = run.status
        step, total = s.get("step"), s.get("total")
        rows.append({"run": run.name, "stage": run.stage, "state": s.get("state", "damaged"),
                     "step": step, "total": total,
                     "progress": step / total if isinstance(step, int) and isinstance(total, int) and total else None,
                     "eta_min": round(s["eta_s"] / 60, 1) if isinstance(s.get("eta_s"), (int, float)) else None,
                     "updated": s.get("updated_at"), "message": s.get("message", "")})
    return pd.DataFrame(rows, columns=["run", "stage", "state", "step", "total", "progress", "eta_min", "updated",
                                       "message"])


def metrics_frame(run_dir: Path) -> pd.DataFrame:
    """metrics.jsonl as a frame (one row per logged step; columns are the flat metric keys)."""
    rows = read_jsonl(RunFolder(run_dir).metrics)
    frame = pd.DataFrame(rows)
    if "step" not in frame:
        frame["step"] = pd.Series(dtype=float)
    return frame


def panels_for(stage: str, *frames: pd.DataFrame) -> list[tuple[str, list[str]]]:
    """The stage's panels, each with the keys that at least one of `frames` logged (numeric, one value or more):
    overlaid runs that logged different keys share one panel per title."""
    def logged(key: str) -> bool:
        return any(key in f and pd.to_numeric(f[key], errors="coerce").notna().any() for f in frames)

    present = [(title, [k for k in keys if logged(k)]) for title, keys in PANELS.get(stage, [])]
    return [(title, keys) for title, keys in present if keys]


def final_figures(frame: pd.DataFrame) -> dict:
    """The last logged value of every eval/ and summary/ key (what a run ends with)."""
    keys = [c for c in frame.columns if c.startswith(("eval/", "summary/"))]
    return {k: frame[k].dropna().iloc[-1] for k in keys if frame[k].notna().any()}


def config_diff(a: Path, b: Path) -> pd.DataFrame:
    """The settings in which two runs' config.json differ (a setting only one has shows as missing)."""
    left, right = read_json(RunFolder(a).config), read_json(RunFolder(b).config)
    keys = sorted(set(left) | set(right))
    rows = [{"setting": k, Path(a).name: _shown(left.get(k, "(missing)")), Path(b).name: _shown(right.get(k, "(missing)"))}
            for k in keys if left.get(k, "(missing)") != right.get(k, "(missing)")]
    return pd.DataFrame(rows, columns=["setting", Path(a).name, Path(b).name])


def lineage(run_dir: Path) -> dict:
    """What the run trained on: data/lineage.json (counts, newest vote, database)."""
    return read_json(RunFolder(run_dir).lineage)


def samples(run_dir: Path, held_out: bool = False) -> pd.DataFrame:
    """Generations the run kept (samples.jsonl, or with `held_out` eval_samples.jsonl), with a step column."""
    folder = RunFolder(run_dir)
    frame = pd.DataFrame(read_jsonl(folder.eval_samples if held_out else folder.samples))
    return frame if "step" in frame else pd.DataFrame(columns=["step"])


def _shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)
