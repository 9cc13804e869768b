"""Which reward-model settings learn a taste best: one votes database, several `train reward` settings, each judged
on the same held-out votes.

    .venv/bin/python -m bench.reward_variants --db bench/out/loop-ontopic/loop.duckdb \\
        --out bench/out/reward-variants-ontopic --reference models/runs/reward-...-loop --variants quick,mlp,epochs4
    .venv/bin/python -m bench.reward_variants --db DB --out OUT --report-only true   # the table from finished runs

Every loop so far missed the reward model's goal (held-out accuracy >= 85 %) at 67-84 %, and PPO over SFT missed
with it (bench/ppo_budget.py showed more PPO does not help). Train accuracy after the quick preset was ~0.80, so
the LoRA may underfit; these variants ask whether more capacity or more steps fix that on the same votes.

1. Each variant is `python -m core train reward --preset quick --db DB --seed 0 COMMON FLAGS` (VARIANTS below),
   in --out/runs/<variant>. `--reference RUN` stands for `quick` with a finished run of that preset on the same
   database (the loop's own reward model), saving its training time; its config.json must hold the settings
   --common gives the preset.
2. `ensemble` is not trained: when quick, seed1 and seed2 have finished, it averages their scores of each pair
   (a deep ensemble, Lakshminarayanan et al. 2017; reward-model ensembles: Coste et al. 2024).
3. Report (--out/reward_variants.json and .md): held-out accuracy [95 % Wilson] with counts, train accuracy, the
   paired comparison with `quick` on the same held-out votes (right only here / only there, exact McNemar p), and
   the training's wall time.
"""
from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from bench.feedback_ablation import mcnemar_p
from bench.loop import entry_point, run_stage
from core.config import command_config, knob, parse_config
from core.runs import RunFolder, read_json
from core.train.reward_model import RewardConfig, held_out_votes
from core.win_rate import wilson_interval

ALL_LAYERS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
VARIANTS = {
    "quick": [],  # the preset as every loop trains it: LoRA r=16 on attention, 2 epochs at 5e-4
    "mlp": ["--lora-targets", ALL_LAYERS],  # LoRA on the MLPs too: word-level taste lives there as much as anywhere
    "r64": ["--lora-r", "64", "--lora-alpha", "128"],
    "epochs4": ["--epochs", "4"],
    "lr1e-3": ["--learning-rate", "1e-3"],
    "mlp-epochs4": ["--lora-targets", ALL_LAYERS, "--epochs", "4"],
    "seed1": ["--seed", "1"],
    "seed2": ["--seed", "2"],
    "mlp-seed1": ["--lora-targets", ALL_LAYERS, "--seed", "1"],  # compared with seed1: the same initial draw
    "mlp-seed2": ["--lora-targets", ALL_LAYERS, "--seed", "2"],
    "fp32": ["--precision", "fp32"],  # against quick where auto means bf16: does the precision change what it learns?
    "bf16-epochs4": ["--precision", "bf16", "--epochs", "4"],  # what bf16's speed buys: twice the epochs
    # LP-FT: the score head starts as a probe on the frozen model, not at random (core/train/reward_probe.py)
    "probe": ["--head-init", "probe"],
    "probe-seed1": ["--head-init", "probe", "--seed", "1"],  # compared with seed1: the same initial draw
    "probe-seed2": ["--head-init", "probe", "--seed", "2"],
}
ENSEMBLE = ("quick", "seed1", "seed2")


@dataclass
class VariantsConfig:
    db: str = knob("", "the votes database every variant trains on (a loop's loop.duckdb, a label-efficiency votes.duckdb)")
    out: str = knob("bench/out/reward_variants", "folder for the runs, their logs and the report")
    variants: list[str] = knob(["quick", "mlp", "epochs4"], f"settings to train, from {', '.join(VARIANTS)}")
    reference: str = knob("", "a finished quick-preset reward run on --db that stands for `quick` (not retrained)")
    common: str = knob("--eval-fraction 0.5", "flags every variant gets (the loop's held-out share of own requests)")
    base_model: str = knob("", "base model under the reward models; empty: the embedded")
    report_only: bool = knob(False, "rebuild the report from the finished runs in --out")

    def __post_init__(self):
        unknown = set(self.variants) - set(VARIANTS)
        if unknown or not self.variants:
            raise SystemExit(f"pass --variants from {', '.join(VARIANTS)}"
                             + (f" (not {', '.join(sorted(unknown))})" if unknown else ""))
        if not self.report_only and not Path(self.db).is_file():
            raise SystemExit(f"no votes database at '{self.db}': pass --db, e.g. bench/out/loop-ontopic/loop.duckdb")


def run_dirs(cfg: VariantsConfig) -> dict[str, Path]:
    runs = {name: Path(cfg.out) / "runs" / name for name in VARIANTS}
    if cfg.reference:
        runs["quick"] = Path(cfg.reference)
    return runs


def check_reference(cfg: VariantsConfig) -> None:
    """The reference must be what `quick` would train here: every setting as --common makes it, on the same db."""
    config = read_json(Path(cfg.reference) / "config.json")
    quick = vars(parse_config(RewardConfig, ["--preset", "quick", "--seed", "0", *shlex.split(cfg.common)]))
    wrong = {k: config.get(k) for k, v in quick.items()
             if k not in ("db", "output_dir", "device", "report_to", "base_model") and config.get(k) != v}
    if wrong or Path(config.get("db", "")).resolve() != Path(cfg.db).resolve():
        raise SystemExit(f"--reference {cfg.reference} is not the quick preset with --common's flags on {cfg.db}: "
                         f"{wrong or 'db ' + str(config.get('db'))}")


def held_out(run: Path) -> pd.DataFrame:
    """The run's scores of held-out left/right votes (a repeat counted once), by comparison id."""
    return held_out_votes(pd.read_parquet(RunFolder(run).scores)).set_index("comparison_id")


def train_accuracy(run: Path) -> float | None:
    scores = pd.read_parquet(RunFolder(run).scores)
    kept = scores[(scores.split == "train") & scores.choice.isin(["left", "right"])]
    return float(kept.correct.astype(bool).mean()) if len(kept) else None


def ensemble_correct(runs: list[Path]) -> pd.Series:
    """Whether the mean of the runs' scores ranks each held-out vote right: r = mean_k r_k for both lists."""
    frames = [held_out(r) for r in runs]
    common = frames[0].index
    for f in frames[1:]:
        common = common.intersection(f.index)
    left = np.mean([f.loc[common, "score_left"].to_numpy() for f in frames], axis=0)  # (pairs,)
    right = np.mean([f.loc[common, "score_right"].to_numpy() for f in frames], axis=0)
    left_won = (frames[0].loc[common, "choice"] == "left").to_numpy()
    return pd.Series((left > right) == left_won, index=common)


def baseline(name: str) -> str:
    """The preset run a variant is paired with: the same seed's (mlp-seed1 with seed1), else quick."""
    seed = name.rsplit("-", 1)[-1]
    return seed if name != seed and seed in VARIANTS and seed.startswith("seed") else "quick"


def row(name: str, correct: pd.Series, reference: pd.Series | None, train_acc: float | None,
        seconds: float | None) -> dict:
    n, k = len(correct), int(correct.sum())
    low, high = wilson_interval(k, n)
    r = {"variant": name, "flags": " ".join(VARIANTS.get(name, [])), "accuracy": k / n if n else None,
         "correct": k, "pairs": n, "ci95": [round(low, 3), round(high, 3)], "train_accuracy": train_acc,
         "seconds": seconds}
    if reference is not None and name != "quick":
        both = correct.index.intersection(reference.index)
        gain = int((correct[both] & ~reference[both]).sum())
        loss = int((reference[both] & ~correct[both]).sum())
        r["vs_preset"] = {"only_this_right": gain, "only_preset_right": loss, "mcnemar_p": round(mcnemar_p(gain, loss), 3)}
    return r


def report(cfg: VariantsConfig, seconds: dict[str, float]) -> list[dict]:
    runs = {k: v for k, v in run_dirs(cfg).items() if (v / "scores.parquet").exists()}
    correct = {name: held_out(run).correct.astype(bool) for name, run in runs.items()}
    if all(name in runs for name in ENSEMBLE):
        correct["ensemble"] = ensemble_correct([runs[n] for n in ENSEMBLE])
    rows = [row(name, c, correct.get(baseline(name)), train_accuracy(runs[name]) if name in runs else None,
                seconds.get(name)) for name, c in correct.items()]
    lines = [f"Reward-model settings on {cfg.db}", "",
             "| variant | flags | held-out accuracy [95 % Wilson] | train accuracy | vs the preset with its seed: right "
             "only here / only there (McNemar p) | s |", "|---|---|---|---|---|---|"]
    for r in rows:
        v = r.get("vs_preset")
        vs = f"{v['only_this_right']} / {v['only_preset_right']} (p = {v['mcnemar_p']:.2f})" if v else "-"
        train = "-" if r["train_accuracy"] is None else f"{r['train_accuracy']:.3f}"
        flags = r["flags"] or ("mean score of " + ", ".join(ENSEMBLE) if r["variant"] == "ensemble" else "(preset)")
        lines.append(f"| {r['variant']} | {flags} | {r['accuracy']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] "
                     f"({r['correct']}/{r['pairs']}) | {train} | {vs} | {r['seconds'] or '-'} |")
    text = "\n".join(lines) + "\n"
    out = Path(cfg.out)
    (out / "reward_variants.json").write_text(json.dumps({"config": vars(cfg), "rows": rows}, indent=2) + "\n")
    (out / "reward_variants.md").write_text(text)
    print(text, flush=True)
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    cfg = command_config(VariantsConfig, sys.argv[1:] if argv is None else argv,
                         prog="python -m bench.reward_variants", description=__doc__.split("\n")[0])
    out = Path(cfg.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    timings = out / "seconds.json"  # wall times survive a --report-only rebuild
    seconds = read_json(timings) if timings.exists() else {}
    if cfg.report_only:  # the database and reference the runs used (read_json: {} for a missing report)
        saved = read_json(out / "reward_variants.json").get("config", {})
        cfg = replace(cfg, db=cfg.db or saved.get("db", ""), reference=cfg.reference or saved.get("reference", ""))
    if cfg.reference:
        check_reference(cfg)
    if not cfg.report_only:
        runs = run_dirs(cfg)
        for name in cfg.variants:
            if name == "quick" and cfg.reference:
                continue
            model = ["--base-model", cfg.base_model] if cfg.base_model else []
            seconds[name] = run_stage(name, ["core", "train", "reward", "--preset", "quick", "--db", cfg.db,
                                             "--output-dir", str(runs[name]), "--seed", "0", *model,
                                             *shlex.split(cfg.common), *VARIANTS[name]], out / "logs")
            timings.write_text(json.dumps(seconds))
            report(cfg, seconds)  # after each variant, so a run cut short keeps what it measured
    return report(cfg, seconds)


if __name__ == "__main__":
    entry_point(main)
