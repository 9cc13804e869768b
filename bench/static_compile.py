"""Where a decoding step's time goes on this CPU, and whether a static KV cache with torch.compile cuts it.

    .venv/bin/python -m bench.static_compile [--tokens 64] [--repeats 3]

The base model (fp32, plain engine) samples exactly --tokens new tokens (min = max, plain temperature sampling as
PPO's rollouts do) for batches of 2 (a pair) and 8 (PPO's quick batch), three ways in one run:
1. dynamic: transformers' default DynamicCache, eager (what the arena, `core eval` and PPO use today);
2. static_eager: `cache_implementation="static"`, compilation disabled (the cache alone);
3. static_compiled: the static cache with transformers' automatic torch.compile of the decoding step, switched on
   for CPU through CompileConfig (transformers compiles only on accelerators by default). The first call compiles.
Then one torch.profiler pass over 16 decoding steps at batch 8, eager, prints the operators by self CPU time: it
says whether the step is bound by the weight matmuls (aten::mm) or by Python and small-op overhead, which is what
a static cache and compilation remove. Figures per way and batch: seconds per call (first, then the rest), and ms
per token of the fastest call after the first. Prints a table and, last, one JSON line.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from transformers import GenerationConfig
from transformers.generation.configuration_utils import CompileConfig

from core.collect.generate import chat_text
from core.collect.library import load_prompts
from core.model import load

WAYS = {"dynamic": {}, "static_eager": {"cache_implementation": "static", "disable_compile": True},
        "static_compiled": {"cache_implementation": "static"}}


def cpu_compile_config() -> CompileConfig:
    config = CompileConfig(fullgraph=False, dynamic=False)
    config._compile_all_devices = True  # transformers' own switch for compiling off accelerators
    return config


def generation(tokenizer, tokens: int, way: str) -> GenerationConfig:
    extra = dict(WAYS[way], **({"compile_config": cpu_compile_config()} if way == "static_compiled" else {}))
    return GenerationConfig(do_sample=True, temperature=0.7, top_k=0, top_p=1.0, max_new_tokens=tokens,
                            min_new_tokens=tokens, pad_token_id=tokenizer.pad_token_id, **extra)


def queries(tokenizer, requests: list[str]) -> dict:
    """Left-padded chat prompts (B, Q), as the arena and PPO batch them."""
    return tokenizer([chat_text(tokenizer, r) for r in requests], return_tensors="pt", padding=True,
                     add_special_tokens=False)


def timed_calls(model, tokenizer, requests: list[str], config: GenerationConfig, repeats: int) -> list[float]:
    query, seconds = queries(tokenizer, requests), []
    for repeat in range(repeats):
        torch.manual_seed(repeat)
        started = time.perf_counter()
        with torch.inference_mode():
            model.generate(**query, generation_config=config)
        seconds.append(time.perf_counter() - started)
    return seconds


def operator_table(model, tokenizer, requests: list[str]) -> str:
    from torch.profiler import ProfilerActivity, profile
    query = queries(tokenizer, requests)
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        model.generate(**query, generation_config=generation(tokenizer, 16, "dynamic"))
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="calls per way and batch; the first compiles")
    args = parser.parse_args()
    loaded = load("")
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    requests = [p.text for p in load_prompts(split="train")[:8]]
    rows = {}
    for way in WAYS:
        for batch in (2, 8):
            seconds = timed_calls(model, tokenizer, requests[:batch], generation(tokenizer, args.tokens, way),
                                  args.repeats)
            row = rows[f"{way}_b{batch}"] = {"way": way, "batch": batch, "seconds": [round(s, 2) for s in seconds],
                                             "ms_per_token": round(1000 * min(seconds[1:] or seconds) / args.tokens, 1)}
            print(f"{way:16s} batch {batch}: calls {row['seconds']} s, {row['ms_per_token']} ms/token", flush=True)
        if way == "dynamic":
            print(operator_table(model, tokenizer, requests[:8]), flush=True)
    print(json.dumps({"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                      "torch": torch.__version__, "tokens": args.tokens, "rows": rows}))


if __name__ == "__main__":
    main()
