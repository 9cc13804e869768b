"""Where a decoding step's time goes, and whether a static KV cache with torch.compile cuts it (CPU or GPU).

    .venv/bin/python -m bench.static_compile [--tokens 64] [--repeats 3]
    python -m bench.static_compile --device cuda --batches 2,64      # on a GPU: CUDA graphs ("reduce-overhead")

The base model (plain engine: fp32 on a CPU, bf16 on a GPU that has it) samples exactly --tokens new tokens (min =
max, plain temperature sampling as PPO's rollouts do) for each of --batches (default 2, a pair, and 8, PPO's quick
batch), the --ways below (default all three) in one run:
1. dynamic: transformers' default DynamicCache, eager (what the arena, `core eval` and PPO use today);
2. static_eager: `cache_implementation="static"`, compilation disabled (the cache alone);
3. static_compiled: the static cache with transformers' automatic torch.compile of the decoding step, switched on
   for CPU through CompileConfig (transformers compiles only on accelerators by default). The first call compiles.
   On a GPU transformers' default CompileConfig applies: mode "reduce-overhead", i.e. CUDA graphs, which replay a
   whole step's kernels with one launch. On the H200 lent on 2026-12-04 one forward pass of the 135M model at
   batch 2 took ~37 ms, far more than its arithmetic (bench/README.md, "The GPU path"), so there this is the lever
   to measure.
With the dynamic way, one torch.profiler pass over 16 decoding steps at the largest batch, eager, prints the
operators by self CPU time: it says whether the step is bound by the weight matmuls (aten::mm) or by Python and small-op overhead, which is what
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


def generation(tokenizer, tokens: int, way: str, device: str = "cpu") -> GenerationConfig:
    on_cpu = way == "static_compiled" and device == "cpu"  # on a GPU, transformers' default: CUDA graphs
    extra = dict(WAYS[way], **({"compile_config": cpu_compile_config()} if on_cpu else {}))
    return GenerationConfig(do_sample=True, temperature=0.7, top_k=0, top_p=1.0, max_new_tokens=tokens,
                            min_new_tokens=tokens, pad_token_id=tokenizer.pad_token_id, **extra)


def queries(tokenizer, requests: list[str], device: torch.device) -> dict:
    """Left-padded chat prompts (B, Q), as the arena and PPO batch them."""
    return tokenizer([chat_text(tokenizer, r) for r in requests], return_tensors="pt", padding=True,
                     add_special_tokens=False).to(device)


def timed_calls(model, tokenizer, requests: list[str], config: GenerationConfig, repeats: int) -> list[float]:
    device = next(model.parameters()).device
    query, seconds = queries(tokenizer, requests, device), []
    for repeat in range(repeats):
        torch.manual_seed(repeat)
        started = time.perf_counter()
        with torch.inference_mode():
            model.generate(**query, generation_config=config)
        if device.type == "cuda":
            torch.cuda.synchronize()  # a GPU runs ahead of Python: time the work, not its launch
        seconds.append(time.perf_counter() - started)
    return seconds


def operator_table(model, tokenizer, requests: list[str]) -> str:
    from torch.profiler import ProfilerActivity, profile
    device = next(model.parameters()).device
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.inference_mode(), profile(activities=activities) as prof:
        model.generate(**queries(tokenizer, requests, device),
                       generation_config=generation(tokenizer, 16, "dynamic", device.type))
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.static_compile", description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="calls per way and batch; the first compiles")
    parser.add_argument("--device", default="cpu", help="cpu (fp32) or cuda (bf16 where supported)")
    parser.add_argument("--batches", default="2,8", help="batch sizes, comma-separated (PPO's GPU batch: 64)")
    parser.add_argument("--ways", default=",".join(WAYS), help="which of " + ", ".join(WAYS))
    parser.add_argument("--base-model", default="", help="empty: the embedded model")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = arguments(argv)
    ways, batches = args.ways.split(","), [int(b) for b in args.batches.split(",")]
    if set(ways) - set(WAYS):
        raise SystemExit(f"--ways takes {', '.join(WAYS)}")
    loaded = load(args.base_model, device=args.device)
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    library = [p.text for p in load_prompts(split="train")]
    requests = [library[k % len(library)] for k in range(max(batches))]
    rows = {}
    for way in ways:
        for batch in batches:
            seconds = timed_calls(model, tokenizer, requests[:batch],
                                  generation(tokenizer, args.tokens, way, args.device), args.repeats)
            row = rows[f"{way}_b{batch}"] = {"way": way, "batch": batch, "seconds": [round(s, 2) for s in seconds],
                                             "ms_per_token": round(1000 * min(seconds[1:] or seconds) / args.tokens, 1)}
            print(f"{way:16s} batch {batch}: calls {row['seconds']} s, {row['ms_per_token']} ms/token", flush=True)
        if way == "dynamic":
            print(operator_table(model, tokenizer, requests[:max(batches)]), flush=True)
    device_name = torch.cuda.get_device_name(0) if loaded.device.type == "cuda" else ""
    result = {"machine": platform.processor() or platform.machine(), "device": device_name or "cpu",
              "threads": torch.get_num_threads(), "torch": torch.__version__, "tokens": args.tokens, "rows": rows}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
