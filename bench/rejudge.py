"""Policies against a reference with several samples per request: win rates whose interval includes the noise of
the sampling seed.

    .venv/bin/python -m bench.rejudge --taste terse --reference sft=RUN --policies ppo=RUN,rloo=RUN --samples 4 \\
        --out bench/out/rejudge                                         # ~17 min for 5 policies x 4 x 72 on 2 cores
    .venv/bin/python -m bench.rejudge --samples-from bench/out/rejudge --reference ppo1 --policies ppo_gated \
        --out OUT                                    # another pairing of a finished run's draws, in seconds
    (tests/test_loop.py runs it on the tiny model)

Every evaluation in bench/ samples one answer per held-out request and policy, with one seed. The same PPO run read
59.7 % over SFT with one seed and 55.6 % with another (bench/README.md, "A bigger budget in round 2"): the Wilson
interval over 72 requests treats the answers as fixed and leaves that noise out, while the gaps the rounds benchmark
looks for are about that size. This asks the question again with `samples` draws per request and policy.

1. The reference and every policy answer each held-out request `samples` times, draw d sampled as `python -m core
   eval` samples it with seed + d (bench/loop.held_out_answers).
2. The annotator judges each policy's draw d against the reference's draw d, for every request and draw (ties and
   "both bad" count half; its noise drawn per draw and policy).
3. Per policy: the win rate over all requests x draws, with a 95 % percentile bootstrap over requests (a request's
   draws are not independent: resampling whole requests keeps them together); beside it, each draw's own win rate
   with its Wilson interval, what a one-seed evaluation would have read, and the mean of the taste's noiseless
   utility over all its lists (the reference's too).
4. Report: rejudge.json and rejudge.md in --out. With --samples-from, step 1 reads a finished run's draws instead,
   and --reference and --policies name its labels: any two policies of that run judged head to head.
"""
from __future__ import annotations

import json
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.annotator import TASTES, Taste, utility
from bench.best_of_n import bootstrap_interval
from bench.loop import entry_point, held_out_answers, outcomes
from bench.loop_report import mean_se
from core.config import check, command_config, knob
from core.runs import read_json
from core.win_rate import win_rate

POINTS = {"win": 1.0, "tie": 0.5, "loss": 0.0}


@dataclass
class RejudgeConfig:
    taste: str = knob("form", "the annotator's taste (bench/annotator.py TASTES)", choices=tuple(TASTES))
    reference: str = knob("", "LABEL=RUN: the policy every other is judged against (a run folder, or base); required")
    policies: list[str] = knob([], "LABEL=RUN for each policy judged against the reference; required")
    samples: int = knob(4, "draws per request and policy")
    base_model: str = knob("", "base model; empty: the embedded SmolLM2-135M-Instruct")
    eval_prompts: int = knob(72, "held-out requests (at most 72)")
    max_new_tokens: int = knob(160, "token budget per list")
    seed: int = knob(0, "first sampling seed; also the annotator's and the bootstrap's")
    resamples: int = knob(2000, "bootstrap resamples over requests")
    out: str = knob("bench/out/rejudge", "folder for the report")
    samples_from: str = knob("", "a finished bench/rejudge.py --out folder: judge its draws (then --reference and "
                                 "--policies are its labels) instead of sampling")

    def __post_init__(self):
        check(bool(self.reference and self.policies) and (bool(self.samples_from) or (
            "=" in self.reference and all("=" in p for p in self.policies))),
              "pass --reference LABEL=RUN and --policies LABEL=RUN,LABEL=RUN (e.g. sft=models/runs/sft-...), or "
              "with --samples-from the labels of its run.")
        check(self.samples > 0 and self.eval_prompts > 0 and self.resamples > 0,
              "samples, eval-prompts and resamples must be positive.")


def labelled(spec: str) -> tuple[str, str]:
    """"ppo=models/runs/ppo-1" -> ("ppo", "models/runs/ppo-1")."""
    name, _, run = spec.partition("=")
    return name.strip(), run.strip()


def per_request(verdicts: list[list[str]]) -> list[float]:
    """(draws, requests) verdicts -> each request's mean points over its draws (win 1, tie 0.5, loss 0)."""
    return [statistics.fmean(POINTS[draw[r]] for draw in verdicts) for r in range(len(verdicts[0]))]


def judged(requests, reference: list[list[str]], answers: list[list[str]], taste: Taste, seed: int,
           resamples: int) -> dict:
    """Steps 2-3 for one policy: answers and reference are (draws, requests) texts."""
    verdicts = [outcomes(requests, a, r, random.Random(seed + 7919 * d), taste)
                for d, (a, r) in enumerate(zip(answers, reference))]  # (draws, requests)
    points = per_request(verdicts)
    low, high = bootstrap_interval([(p, 1) for p in points], random.Random(seed), resamples)  # mean of points
    flat = [v for draw in verdicts for v in draw]
    return {"rate": statistics.fmean(points), "low": low, "high": high, "n": len(flat),
            "wins": flat.count("win"), "losses": flat.count("loss"), "ties": flat.count("tie"),
            "per_draw": [win_rate(draw).as_dict() for draw in verdicts]}


def mean_utilities(requests: list[str], texts: dict[str, list[list[str]]], taste: str) -> dict[str, dict]:
    """Each policy's mean noiseless utility under the taste over all its lists (draws x requests), with its
    standard error: how much the annotator likes them, beside how often it prefers them."""
    return {name: mean_se([utility(r, t, taste) for draw in draws for r, t in zip(requests, draw)])
            for name, draws in texts.items()}


def markdown(result: dict) -> str:
    cfg = result["config"]
    lines = [f"Policies against `{result['reference']}` on {result['prompts']} held-out requests, {cfg['samples']} "
             f"draws each, judged by the `{cfg['taste']}` annotator (ties half; 95 % bootstrap over requests)."
             + (f" Sampling took {result['sampling_s'] / 60:.1f} min." if result.get("sampling_s") else ""), "",
             "| policy | win rate over all draws [95 %] (W-L-T) | each draw alone (one seed, 95 % Wilson) | mean "
             "utility ± se |", "|---|---|---|---|"]
    utilities = result.get("utility", {})

    def cell(name: str) -> str:
        u = utilities.get(name)
        return f"{u['mean']:+.2f} ± {u['se']:.2f}" if u else "-"

    for name, r in result["policies"].items():
        draws = "; ".join(f"{d['rate']:.1%} [{d['low']:.1%}, {d['high']:.1%}]" for d in r["per_draw"])
        lines.append(f"| {name} | {r['rate']:.1%} [{r['low']:.1%}, {r['high']:.1%}] ({r['wins']}-{r['losses']}-"
                     f"{r['ties']}, n = {r['n']}) | {draws} | {cell(name)} |")
    lines.append(f"| {result['reference']} (the reference) | - | - | {cell(result['reference'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    cfg = command_config(RejudgeConfig, sys.argv[1:] if argv is None else argv, prog="python -m bench.rejudge",
                         description=__doc__.split("\n")[0])
    if cfg.samples_from:  # a finished run's draws: its runs, draws and seed
        saved = read_json(Path(cfg.samples_from) / "rejudge.json")
        runs = {name: saved.get("runs", {}).get(name) for name in (cfg.reference, *cfg.policies)}
        if not saved.get("samples") or not all(runs.values()):
            raise SystemExit(f"--samples-from: {cfg.samples_from} holds no rejudge.json with draws of "
                             f"{', '.join(runs)}; its labels: {', '.join(saved.get('runs', {})) or 'none'}.")
        ref_name, cfg.samples, cfg.seed = cfg.reference, saved["config"]["samples"], saved["config"]["seed"]
        requests = [row["prompt"] for row in saved["samples"]]
        keys = {(name, d): f"{name}@{d}" for name in runs for d in range(cfg.samples)}
        drawn = {key: [row[key] for row in saved["samples"]] for key in keys.values()}
        sampling_s = None  # nothing sampled here
    else:
        ref_name, ref_run = labelled(cfg.reference)
        runs = {ref_name: ref_run, **dict(labelled(p) for p in cfg.policies)}
        # 1. every policy's draws, one label per (policy, draw)
        keys = {(name, d): f"{name}@{d}" for name in runs for d in range(cfg.samples)}
        started = time.perf_counter()
        requests, drawn = held_out_answers({key: runs[name] for (name, _), key in keys.items()}, cfg.base_model,
                                           cfg.eval_prompts, cfg.max_new_tokens, cfg.seed,
                                           seeds={key: cfg.seed + d for (_, d), key in keys.items()})
        sampling_s = round(time.perf_counter() - started, 1)
    texts = {name: [drawn[keys[name, d]] for d in range(cfg.samples)] for name in runs}  # (draws, requests)
    # 2-3. each policy against the reference
    taste = Taste(name=cfg.taste)
    result = {"config": asdict(cfg), "reference": ref_name, "runs": runs, "prompts": len(requests),
              "sampling_s": sampling_s,
              "policies": {name: judged(requests, texts[ref_name], texts[name], taste, cfg.seed + 1 + i,
                                        cfg.resamples)
                           for i, name in enumerate(n for n in runs if n != ref_name)},
              "utility": mean_utilities(requests, texts, cfg.taste),
              "samples": [{"prompt": r, **{key: drawn[key][i] for key in keys.values()}}
                          for i, r in enumerate(requests)]}
    # 4. the report
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rejudge.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "rejudge.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    entry_point(main)
