"""Time for a fresh pair of lists: one batched `generate` (what the arena does) vs two sequential calls.

    .venv/bin/python bench/pair_generation.py [--trials 6] [--tokens 96] [--base-model M]

Two measurements, each alternating the order of the two modes per trial so drift hits both alike:
- fixed: every response is exactly --tokens long (min_new_tokens = max_new_tokens), so both modes do the same
  work and the ratio is the pure cost of batching;
- natural: the arena's own path (Generator.generate, EOS stops a row), on library prompts; a batched pair waits
  for its longer list, two sequential calls each stop at their own EOS.
Prints a table and, last, one JSON line. Goal (issue 2): batched <= 0.6 x sequential.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from core.collect.generate import Generator, chat_text
from core.collect.library import load_prompts
from core.model import load
from core.records import SamplingSettings


def fixed_length_seconds(generator: Generator, request: str, batch: int, tokens: int, seed: int) -> float:
    model, tokenizer = generator.loaded.model, generator.loaded.tokenizer
    enc = tokenizer([chat_text(tokenizer, request)] * batch, return_tensors="pt", padding=True,
                    add_special_tokens=False)
    torch.manual_seed(seed)
    started = time.perf_counter()
    with torch.inference_mode():
        model.generate(**enc, do_sample=True, temperature=0.8, top_p=0.95, top_k=0, max_new_tokens=tokens,
                       min_new_tokens=tokens, pad_token_id=tokenizer.pad_token_id)
    return time.perf_counter() - started


def natural_seconds(generator: Generator, prompt, batched: bool, seed: int) -> tuple[float, int]:
    policy, sampling = generator.base_policy, SamplingSettings()
    started = time.perf_counter()
    if batched:
        gens = generator.generate(prompt, [policy, policy], sampling, seed)
    else:
        gens = generator.generate(prompt, [policy], sampling, seed) + generator.generate(prompt, [policy], sampling,
                                                                                       seed + 1)
    return time.perf_counter() - started, sum(g.num_tokens for g in gens)


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.pair_generation")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--base-model", default=None)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda (bench/gpu_check.sh)")
    return parser.parse_args(argv)


def main() -> None:
    args = arguments()
    generator = Generator(load(args.base_model, device=args.device))
    request = "Top 5 ideas for a Thanksgiving meal"
    fixed_length_seconds(generator, request, 2, 8, 0)  # warm-up

    fixed = {"batched": [], "sequential": []}
    for trial in range(args.trials):
        for mode in (("batched", "sequential") if trial % 2 == 0 else ("sequential", "batched")):
            if mode == "batched":
                fixed[mode].append(fixed_length_seconds(generator, request, 2, args.tokens, trial))
            else:
                fixed[mode].append(sum(fixed_length_seconds(generator, request, 1, args.tokens, trial + k)
                                       for k in (0, 1)))
        print(f"fixed trial {trial}: batched {fixed['batched'][-1]:.2f}s  sequential {fixed['sequential'][-1]:.2f}s",
              flush=True)

    natural = {"batched": [], "sequential": []}
    tokens = {"batched": 0, "sequential": 0}
    for trial, prompt in enumerate(load_prompts(split="train")[: args.trials]):
        for mode in (("batched", "sequential") if trial % 2 == 0 else ("sequential", "batched")):
            seconds, n = natural_seconds(generator, prompt, mode == "batched", seed=100 + trial)
            natural[mode].append(seconds)
            tokens[mode] += n
        print(f"natural trial {trial}: batched {natural['batched'][-1]:.2f}s  "
              f"sequential {natural['sequential'][-1]:.2f}s", flush=True)

    med = {k: statistics.median(v) for k, v in fixed.items()}
    result = {
        "bench": "pair_generation", "date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or
        platform.machine(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "tokens_per_response": args.tokens, "trials": args.trials,
        "fixed_batched_s_median": round(med["batched"], 2), "fixed_sequential_s_median": round(med["sequential"], 2),
        "fixed_ratio": round(med["batched"] / med["sequential"], 3),
        "natural_batched_s_total": round(sum(natural["batched"]), 1),
        "natural_sequential_s_total": round(sum(natural["sequential"]), 1),
        "natural_ratio": round(sum(natural["batched"]) / sum(natural["sequential"]), 3),
        "natural_tokens": tokens,
    }
    print(f"\nfixed {args.tokens} tokens/list: batched pair {med['batched']:.2f}s vs sequential {med['sequential']:.2f}s"
          f" -> ratio {result['fixed_ratio']:.2f} (goal <= 0.6)")
    print(f"natural (EOS), {args.trials} library prompts: ratio {result['natural_ratio']:.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
