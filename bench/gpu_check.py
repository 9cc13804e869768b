"""The GPU path, every stage once: wall time, throughput and peak GPU memory per stage.

    bash bench/gpu_check.sh [--out bench/out/gpu_check]          # on a CUDA machine; ~8 minutes on one H200
    .venv/bin/python -m bench.gpu_check --device cpu --sizes tiny --base-model TINY   # a dry run on a CPU

On a GPU every stage runs in bf16 where the GPU supports it (core.model.default_dtype; the HF trainers' bf16 flag):
1. prepare the embedded model (unless --base-model names another);
2. `pair`: a fresh pair of lists in the arena's generator (bench/pair_generation.py: one batched call vs two);
3. `sft` on the seed lists; `reward` on scripted votes (tests.helpers.write_preference_votes: a five-item list
   beats a one-liner) imported into a database of its own;
4. `ppo` from the SFT adapter against that reward model; `eval` of PPO against SFT on the held-out requests;
5. `dpo` on the same votes and `rloo` against the same reward model, both from the SFT adapter;
6. `decode`: ms per token of the base model's sampling at batch 2 and 64, eager and with CUDA graphs (a static KV
   cache under torch.compile's "reduce-overhead"; bench/static_compile.py), the lever for a launch-bound GPU.
Each stage is a real CLI call in its own process, as a user runs it. A stage that fails does not stop the others;
a stage whose input failed is skipped. Figures come from the run folders (metrics.jsonl: the trainers' own
`summary/samples_per_second`, PPO's `eps`, and `memory/cuda_peak_mb`, the process's peak GPU allocation)
and from the pair and eval commands' own output. Writes gpu_check.json and prints a table; exits 1 if any failed.
"""
from __future__ import annotations

import json
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from bench.loop import StageFailed, run_stage
from core.config import command_config, knob
from core.runs import read_jsonl
from tests.helpers import write_preference_votes

# Per stage: the flags that size it. `gpu` is sized from the H200 run of 2026-12-04 (bench/README.md) to ~8 minutes
# with the 135M embedded model there, where even the tiny model's stages took ~30 s each (starting Python and CUDA,
# beside the real check); `tiny` is the dry run's, seconds each on a CPU with a 2-layer model.
SIZES = {
    "gpu": {
        "votes": 400,
        "pair": "--trials 1 --tokens 160",
        "sft": "--max-steps 60 --batch-size 32 --eval-prompts 32",
        "reward": "--epochs 1 --batch-size 32",
        "ppo": "--total-updates 6 --batch-size 64 --response-length 160 --eval-every 3 --eval-prompts 16",
        "eval": "--prompts 72 --max-new-tokens 160",
        "dpo": "--max-steps 20 --batch-size 16",
        "rloo": "--max-steps 4 --batch-size 32 --num-generations 4 --max-new-tokens 160",
        "decode": "--tokens 64 --repeats 3 --batches 2,64 --ways dynamic,static_compiled",
    },
    "tiny": {
        "votes": 40,
        "pair": "--trials 1 --tokens 8",
        "sft": "--max-steps 2 --batch-size 2 --eval-prompts 2",
        "reward": "--max-steps 2 --batch-size 4",
        "ppo": "--total-updates 1 --batch-size 4 --mini-batches 2 --ppo-epochs 1 --response-length 8 "
               "--norm-samples 4 --eval-every 0",
        "eval": "--prompts 2 --max-new-tokens 8",
        "dpo": "--max-steps 1 --batch-size 2",
        "rloo": "--max-steps 1 --batch-size 4 --num-generations 2 --max-new-tokens 8",
        "decode": "--tokens 4 --repeats 2 --batches 2 --ways dynamic,static_eager",
    },
}
STAGES = ("pair", "sft", "reward", "ppo", "eval", "dpo", "rloo", "decode")
NEEDS = {"ppo": ("sft", "reward"), "eval": ("ppo", "sft", "reward"), "dpo": ("sft",), "rloo": ("sft", "reward")}
METRICS = ("summary/samples_per_second", "summary/runtime", "eps", "time/update_s", "time/rollout_s",
           "memory/cuda_peak_mb", "memory/peak_rss_mb")


@dataclass
class GPUCheckConfig:
    out: str = knob("bench/out/gpu_check", "folder for the runs, the logs and gpu_check.json (emptied first)")
    device: str = knob("cuda", "cuda (the check), or cpu for a dry run of the commands", choices=("cuda", "cpu"))
    sizes: str = knob("gpu", "stage sizes: gpu (~8 min on one H200) or tiny (the smoke test)",
                      choices=tuple(SIZES))
    base_model: str = knob("", "base model; empty: the embedded SmolLM2-135M-Instruct, prepared first")


def command(stage: str, cfg: GPUCheckConfig, out: Path) -> list[str]:
    """The stage's command line: `python -m ...` with its size flags, reading its inputs from the earlier runs."""
    runs, sizes = out / "runs", SIZES[cfg.sizes]
    base = ["--base-model", cfg.base_model] if cfg.base_model else []
    device = ["--device", cfg.device]
    flags = sizes[stage].split()
    return {
        "pair": ["bench.pair_generation", *flags, *device, *base],
        "sft": ["core", "train", "sft", "--db", str(out / "votes.duckdb"), *flags, *device, *base,
                "--output-dir", str(runs / "sft")],
        "reward": ["core", "train", "reward", "--db", str(out / "votes.duckdb"), *flags, *device, *base,
                   "--output-dir", str(runs / "reward")],
        "ppo": ["core", "train", "ppo", "--sft-adapter", str(runs / "sft"), "--reward-model", str(runs / "reward"),
                *flags, *device, "--output-dir", str(runs / "ppo")],
        "eval": ["core", "eval", "--policy", str(runs / "ppo"), "--against", str(runs / "sft"), "--reward-model",
                 str(runs / "reward"), *flags, *device, *base, "--out", str(out / "eval.json")],
        "dpo": ["core", "train", "dpo", "--db", str(out / "votes.duckdb"), "--sft-adapter", str(runs / "sft"),
                *flags, *device, "--output-dir", str(runs / "dpo")],
        "rloo": ["core", "train", "rloo", "--sft-adapter", str(runs / "sft"), "--reward-model", str(runs / "reward"),
                 *flags, *device, "--output-dir", str(runs / "rloo")],
        "decode": ["bench.static_compile", *flags, *device, *base],
    }[stage]


def last_metrics(run_dir: Path) -> dict:
    """The last value of each figure in METRICS that the run logged (empty for a stage that is no run)."""
    rows = read_jsonl(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").exists() else []
    return {k: round(row[k], 3) for row in rows for k in METRICS if isinstance(row.get(k), (int, float))}


def output_figures(stage: str, log_text: str, out: Path) -> dict:
    """Figures a stage prints rather than logs: the pair's JSON line; eval's sample count and reward win rate."""
    if stage == "pair":
        line = next((ln for ln in reversed(log_text.splitlines()) if ln.startswith('{"bench": "pair_generation"')),
                    None)
        keys = ("fixed_batched_s_median", "fixed_sequential_s_median", "natural_batched_s_total", "natural_tokens")
        return {k: v for k, v in json.loads(line).items() if k in keys} if line else {}
    if stage == "decode":
        line = next((ln for ln in reversed(log_text.splitlines()) if ln.startswith('{"machine"')), None)
        return {f"ms_per_token/{name}": row["ms_per_token"] for name, row in json.loads(line)["rows"].items()} \
            if line else {}
    if stage == "eval" and (out / "eval.json").exists():
        report = json.loads((out / "eval.json").read_text())
        return {"lists": 2 * report["prompts"], "well_formed": {k: v["rate"] for k, v in report["well_formed"].items()},
                "mean_score": report["mean_score"], "win_rate": report.get("win_rate", {}).get("rate")}
    return {}


def check_stage(stage: str, cfg: GPUCheckConfig, out: Path) -> dict:
    """One stage in its own process, its output in logs/<stage>.log (bench.loop.run_stage): status, wall time and
    its figures."""
    started = time.perf_counter()
    try:
        run_stage(stage, command(stage, cfg, out), out / "logs")
        status = "ok"
    except StageFailed as failed:
        status = f"failed (exit {failed.returncode})"
    wall = round(time.perf_counter() - started, 1)
    text = (out / "logs" / f"{stage}.log").read_text(errors="replace")
    result = {"status": status, "wall_s": wall, **last_metrics(out / "runs" / stage), **output_figures(stage, text, out)}
    if stage == "eval" and status == "ok":
        result["lists_per_s"] = round(result.get("lists", 0) / wall, 2)
    if status != "ok":
        result["log_tail"] = text[-3000:]
    return result


def check_stages(report: dict, run, report_path: Path) -> None:
    """Run each stage in order with `run(stage) -> result`; one whose input failed is skipped, not run."""
    for stage in STAGES:
        missing = [n for n in NEEDS.get(stage, ()) if report["stages"].get(n, {}).get("status") != "ok"]
        report["stages"][stage] = {"status": f"skipped (needs {', '.join(missing)})"} if missing else run(stage)
        print(f"{stage}: {json.dumps({k: v for k, v in report['stages'][stage].items() if k != 'log_tail'})}",
              flush=True)
        report_path.write_text(json.dumps(report, indent=2) + "\n")


def table(report: dict) -> str:
    lines = [f"GPU check on {report['device_name']} (torch {report['torch']}, bf16 {report['bf16']}), "
             f"sizes {report['sizes']}", "", "| stage | status | wall s | throughput | peak GPU MB |",
             "|---|---|---|---|---|"]
    for stage, r in report["stages"].items():
        rate = next((f"{r[k]} {label}" for k, label in (("summary/samples_per_second", "samples/s"),
                                                        ("eps", "episodes/s"), ("lists_per_s", "lists/s"))
                     if k in r), "")
        if stage == "decode":
            rate = ", ".join(f"{k.split('/')[1]} {v} ms/token" for k, v in r.items() if k.startswith("ms_per_token/"))
        if stage == "pair" and "fixed_batched_s_median" in r:
            rate = f"pair of 2 x {SIZES[report['sizes']]['pair'].split()[-1]} tokens: {r['fixed_batched_s_median']} s"
        peak = r.get("memory/cuda_peak_mb", "")
        lines.append(f"| {stage} | {r['status']} | {r.get('wall_s', '')} | {rate} | {peak} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    cfg = command_config(GPUCheckConfig, sys.argv[1:] if argv is None else argv, prog="python -m bench.gpu_check",
                         description=__doc__.split("\n")[0])
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU is visible: run this on a GPU machine, or pass --device cpu for a dry run")
    out = Path(cfg.out).resolve()
    for stale in ("runs", "logs"):
        shutil.rmtree(out / stale, ignore_errors=True)
    (out / "logs").mkdir(parents=True)
    # 1. the model, and the votes the reward, DPO stages learn from
    for stale in out.glob("votes.duckdb*"):
        stale.unlink()
    votes = write_preference_votes(out / "votes.jsonl", SIZES[cfg.sizes]["votes"])
    try:
        if not cfg.base_model:
            run_stage("prepare-model", ["core", "prepare-model"], out / "logs")
        run_stage("import-votes", ["core", "import-votes", votes, "--db", str(out / "votes.duckdb")], out / "logs")
    except StageFailed as failed:
        raise SystemExit(str(failed)) from None
    gpu = cfg.device == "cuda"
    report = {"date": time.strftime("%Y-%m-%d"), "config": asdict(cfg), "sizes": cfg.sizes,
              "device_name": torch.cuda.get_device_name(0) if gpu else f"cpu ({platform.processor() or 'x86'})",
              "torch": torch.__version__, "bf16": gpu and torch.cuda.is_bf16_supported(), "stages": {}}
    # 2-5. every stage, the report rewritten after each one (a check cut short keeps what it measured)
    check_stages(report, lambda stage: check_stage(stage, cfg, out), out / "gpu_check.json")
    print(table(report))
    failed = [s for s, r in report["stages"].items() if r["status"] != "ok"]
    for stage in failed:
        print(f"\n--- {stage}: {report['stages'][stage]['status']}\n{report['stages'][stage].get('log_tail', '')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
