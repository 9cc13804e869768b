"""Our PPO against TRL 1.12's experimental PPOTrainer, side by side in one run, on the same work.

    .venv/bin/python bench/ppo_vs_trl.py [--repeats 2] [--engines llamacpp,plain] [--precisions auto,fp32]

The anchor (bench/trl112_anchor/, copied from the team's fixed benchmark) runs TRL 1.12 unmodified in its own
virtual environment, which this script creates once outside the checkout, in ~/.cache/rlhf-playground/venv-trl112
($TRL112_VENV; setup.sh, PyPI only), so that no third-party code lies in the project's folders. Both sides get
the same work: SmolLM2-135M-Instruct fp32, the anchor's 64 "Top 5 <things> for <occasion>" prompts sent as the
request alone (the chat template's default system turn), batch 8, 2 mini-batches, 1 PPO epoch, 64 new tokens with
no EOS stop, T 0.7, lr 3e-6, β 0.05, a LoRA r=16 policy on q/k/v/o, a reward model of the same size with a random
score head, 6 updates with the first excluded as warm-up; the two sides alternate, `--repeats` times each.

What differs is the design: TRL holds three model copies (policy, a fully trained value model, a reward model);
ours holds one base and puts reference, value head and reward model on it (core/train/ppo/policy_value.py). Ours runs
once per rollout engine in --engines (`--sampling-engine`: llama.cpp sampling the base with the policy's LoRA, or
PyTorch) and per --precisions (`--precision`: auto is bf16 weights on a CPU with AVX512-BF16, the anchor's fp32
otherwise; the time each rollout step took is in each run's "median_seconds"). About 5 min per side. Figures
per side: steady s/update (median of updates 2-6), episodes/s, generated tokens/s, peak RSS of the process
(ru_maxrss).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ANCHOR = REPO / "bench" / "trl112_anchor"
OUT = REPO / "bench" / "out"
VENV = Path(os.environ.get("TRL112_VENV") or Path.home() / ".cache" / "rlhf-playground" / "venv-trl112")
from core.model import EMBEDDED_MODEL_DIR
from core.runs import RunFolder, read_jsonl


def _anchor_module():
    """The anchor script as a module, for its fixed config and prompts (it imports TRL only inside functions)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("trl112_anchor", ANCHOR / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_ANCHOR = _anchor_module()
BENCH, prompts = _ANCHOR.BENCH, _ANCHOR.prompts


def random_reward_model(folder: Path) -> Path:
    """A reward model of the same size as the anchor's: the base with a seeded random score head, saved as our
    reward stage saves one (a SEQ_CLS LoRA adapter whose B matrices are zero, plus the score head)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from core.model import load_causal_lm

    torch.manual_seed(BENCH["seed"])
    model = load_causal_lm(str(EMBEDDED_MODEL_DIR), torch.device("cpu"), dtype=torch.float32, head="reward")
    peft = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"],
                                            task_type="SEQ_CLS", modules_to_save=["score"]))
    peft.save_pretrained(RunFolder(folder).adapter)
    RunFolder(folder).config.write_text("{}\n")
    return folder


def ours(reward_model: Path, workdir: Path, engine: str, precision: str = "auto") -> dict:
    """One run of `python -m core train ppo` on the anchor's work; figures from its metrics.jsonl."""
    prompts_file = workdir / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts()))
    run = workdir / f"ppo-{datetime.now().strftime('%H%M%S%f')}"
    updates = BENCH["total_episodes"] // BENCH["per_device_train_batch_size"]
    command = [sys.executable, "-m", "core", "train", "ppo", "--reward-model", str(reward_model), "--device", "cpu",
               "--prompts-file", str(prompts_file), "--system-prompt", "", "--total-updates", str(updates),
               "--batch-size", str(BENCH["per_device_train_batch_size"]), "--mini-batches",
               str(BENCH["num_mini_batches"]), "--ppo-epochs", str(BENCH["num_ppo_epochs"]), "--response-length",
               str(BENCH["response_length"]), "--stop-at-eos", "false", "--temperature", str(BENCH["temperature"]),
               "--learning-rate", str(BENCH["learning_rate"]), "--kl-coef", str(BENCH["kl_coef"]),
               "--missing-eos-penalty", "0", "--normalize-reward", "false", "--lora-r", "16", "--lora-alpha", "32",
               "--seed", str(BENCH["seed"]), "--sample-every", "1000", "--checkpoint-every", "1000",
               "--sampling-engine", engine, "--precision", precision, "--output-dir", str(run)]
    print("=== ours:", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                   stdout=subprocess.DEVNULL)
    metrics = read_jsonl(RunFolder(run).metrics)
    dtype = json.loads(RunFolder(run).config.read_text()).get("dtype")
    step_s = [m["time/update_s"] for m in metrics]
    steady = step_s[1:]
    tokens = BENCH["per_device_train_batch_size"] * BENCH["response_length"]
    seconds = {k: round(statistics.median(m[k] for m in metrics[1:]), 3) for k in metrics[0] if k.startswith("time/")}
    return {"dtype": dtype, "step_s": [round(s, 3) for s in step_s], "median_seconds": seconds,
            "steady_step_s_median": round(statistics.median(steady), 3),
            "episodes_per_s": round(BENCH["per_device_train_batch_size"] * len(steady) / sum(steady), 4),
            "gen_tokens_per_s": round(tokens * len(steady) / sum(steady), 2),
            "rollout_share_of_update": round(sum(m["time/rollout_s"] for m in metrics[1:]) / sum(steady), 3),
            "peak_rss_mb": round(metrics[-1]["memory/peak_rss_mb"], 1),
            "objective/scores": [round(m["objective/scores"], 4) for m in metrics]}


def anchor() -> dict:
    """One run of the anchor's PPO phase in its own venv (the last stdout line is its JSON)."""
    command = [str(VENV / "bin" / "python"), str(ANCHOR / "bench.py"), "--mode", "ppo", "--model-dir",
               str(EMBEDDED_MODEL_DIR)]
    print("=== TRL 1.12:", " ".join(command), flush=True)
    done = subprocess.run(command, check=True, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result.get("ppo", result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs per side, alternating (median reported)")
    parser.add_argument("--engines", default="llamacpp,plain", help="our rollout engines, one side each")
    parser.add_argument("--precisions", default="auto", help="our --precision values (auto, bf16, fp32), one side "
                        "each per engine")
    parser.add_argument("--from-json", default="", help="print the tables of a saved report (its \"runs\") and stop")
    args = parser.parse_args()
    if args.from_json:
        runs = json.loads(Path(args.from_json).read_text())["runs"]
        summary(runs, max(len(results) for results in runs.values()))
        return
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    sides = [(e, p.strip()) for e in engines for p in args.precisions.split(",") if p.strip()]
    OUT.mkdir(parents=True, exist_ok=True)
    subprocess.run(["bash", str(ANCHOR / "setup.sh")], check=True,
                   env={**os.environ, "TRL112_VENV": str(VENV), "SMOLLM2_DIR": str(EMBEDDED_MODEL_DIR)})
    runs = {"trl_1.12": [], **{f"ours_{e}_{p}": [] for e, p in sides}}
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        reward_model = random_reward_model(Path(tmp) / "reward")
        for _ in range(args.repeats):
            runs["trl_1.12"].append(anchor())
            for engine, precision in sides:
                runs[f"ours_{engine}_{precision}"].append(ours(reward_model, Path(tmp), engine, precision))

    report = {"bench": "ppo_vs_trl112", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              **summary(runs, args.repeats), "runs": runs}
    (OUT / "ppo_vs_trl.json").write_text(json.dumps(report, indent=2) + "\n")


def summary(runs: dict, repeats: int) -> dict:
    """Each side's medians over its runs and ours against TRL's, printed as a table; the rollout's steps (sample,
    reference, old log-probs, score) as medians of each run's median."""
    keys = ("steady_step_s_median", "episodes_per_s", "gen_tokens_per_s", "peak_rss_mb", "rollout_share_of_update")
    table = {side: {k: statistics.median(r[k] for r in results) for k in keys if k in results[0]}
             for side, results in runs.items()}
    for side, results in runs.items():
        if "median_seconds" in results[0]:
            table[side]["step_seconds"] = {k: round(statistics.median(r["median_seconds"][k] for r in results), 3)
                                           for k in results[0]["median_seconds"]}
    trl = table["trl_1.12"]
    ratio = {side: {"episodes_per_s": row["episodes_per_s"] / trl["episodes_per_s"],
                    "peak_rss": row["peak_rss_mb"] / trl["peak_rss_mb"]}
             for side, row in table.items() if side != "trl_1.12"}
    print(f"\n{'side':20} {'s/update':>9} {'episodes/s':>11} {'gen tok/s':>10} {'peak RSS MB':>12} {'rollout':>8}")
    for side, row in table.items():
        print(f"{side:20} {row['steady_step_s_median']:9.2f} {row['episodes_per_s']:11.3f} "
              f"{row['gen_tokens_per_s']:10.1f} {row['peak_rss_mb']:12.0f} "
              f"{format(row['rollout_share_of_update'], '8.0%') if 'rollout_share_of_update' in row else '':>8}")
    for side, row in table.items():
        if "step_seconds" in row:
            print(f"{side}: " + ", ".join(f"{k.removeprefix('time/')} {v:.2f}" for k, v in row["step_seconds"].items()))
    for side, r in ratio.items():
        print(f"{side} / TRL 1.12: {r['episodes_per_s']:.2f}x episodes/s (goal >= 2.5x), {r['peak_rss']:.2f}x peak "
              f"memory (goal <= 0.35x); median of {repeats} runs per side")
    print(json.dumps({"table": table, "ratio": ratio}))
    return {"table": table, "ratio": ratio}


if __name__ == "__main__":
    main()
