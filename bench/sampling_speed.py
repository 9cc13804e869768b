"""Sampling speed and quality: the plain fp32 engine against int8 weights and llama.cpp (core/engine.py), side by
side in one run.

    .venv/bin/python -m bench.sampling_speed [--pairs 6] [--eval-prompts 72] [--reward-model RUN] [--threads 0]
                                             [--torch-ao]

1. Fresh pair: the arena's Generator samples a pair of lists for each of --pairs library requests (both base, up to
   160 tokens, natural stopping at EOS, the arena's sampling settings), the engines alternating request by request
   on the same seeds; median seconds per pair.
2. Held-out quality: each engine answers the held-out library requests as `python -m core eval` samples them
   (core.judge.evaluate.sample, batches of 16, temperature 0.8, the same seed): wall time, well-formed rate with a
   95 % Wilson interval, and with --reward-model the mean reward-model score with a 95 % interval (t on the
   per-list scores).
3. Divergence: each fast engine's next-token distribution against fp32's on the plain engine's own held-out
   answers, teacher-forced: mean KL(fp32 || engine) per token and how often the two agree on the most likely token;
   with --torch-ao the same for torch.ao's dynamic int8 (`quantize_dynamic`, activations quantised per tensor too).
Prints a table and, last, one JSON line.
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
from core.judge.evaluate import EvalConfig, proportion, sample
from core.lists import parse_list
from core.model import load
from core.records import Prompt, SamplingSettings

ENGINES = ("plain", "int8", "llamacpp")


def pair_seconds(generators: dict, requests: list[str]) -> dict[str, list[float]]:
    """Step 1: seconds per fresh pair, engines alternating on the same request and seed."""
    sampling, times = SamplingSettings(), {e: [] for e in generators}
    for n, request in enumerate(requests):
        for engine, generator in generators.items():
            started = time.perf_counter()
            generator.generate(Prompt(request), [generator.base_policy] * 2, sampling, seed=n)
            times[engine].append(time.perf_counter() - started)
    return times


def mean_interval(values: list[float]) -> dict:
    mean = statistics.fmean(values)
    half = 1.96 * statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(values)}


def divergence(plain, fast, tokenizer, requests: list[str], answers: list[str]) -> dict:
    """Step 3: KL(fp32 || fast) per answer token and top-1 agreement, teacher-forced on the plain answers; `fast` is
    a torch model or a llama.cpp sampler (its `logits(ids)`)."""
    kls, agree, tokens = 0.0, 0, 0
    for request, answer in zip(requests, answers):
        ids = tokenizer(chat_text(tokenizer, request) + answer, return_tensors="pt", add_special_tokens=False)
        start = len(tokenizer(chat_text(tokenizer, request), add_special_tokens=False)["input_ids"])
        with torch.no_grad():
            p = plain(**ids).logits[0, start - 1:-1].float().log_softmax(-1)  # (T, V)
            fast_logits = torch.from_numpy(fast.logits(ids["input_ids"][0].tolist())) if hasattr(fast, "logits") \
                else fast(**ids).logits[0]  # (T_all, V)
            q = fast_logits[start - 1:-1].float().log_softmax(-1)
        kls += float((p.exp() * (p - q)).sum())
        agree += int((p.argmax(-1) == q.argmax(-1)).sum())
        tokens += p.shape[0]
    return {"kl_per_token": kls / max(tokens, 1), "top1_agreement": agree / max(tokens, 1), "tokens": tokens}


def torch_ao_dynamic(base_model: str | None):
    """The base model with torch.ao's dynamic int8 Linear layers (weights per tensor, activations per call)."""
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(load(base_model, "cpu", "plain").model, {torch.nn.Linear}, dtype=torch.qint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-model", default=None)
    parser.add_argument("--pairs", type=int, default=6, help="fresh pairs per engine (library train requests)")
    parser.add_argument("--eval-prompts", type=int, default=72, help="held-out requests per engine (at most 72)")
    parser.add_argument("--reward-model", default="", help="reward-model run that scores the held-out answers")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    parser.add_argument("--torch-ao", action="store_true", help="also torch.ao's dynamic int8 in step 3")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = {e: load(args.base_model, "cpu", e) for e in ENGINES}
    generators = {e: Generator(m) for e, m in loaded.items()}
    result = {"bench": "sampling_speed", "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
              "threads": torch.get_num_threads(), "machine": platform.machine()}
    # 1. fresh pairs
    train = [p.text for p in load_prompts(split="train")][:args.pairs]
    times = pair_seconds(generators, train)
    result["pair_s"] = {e: {"median": statistics.median(t), "all": [round(x, 2) for x in t]} for e, t in times.items()}
    # 2. held-out quality, sampled as `core eval` samples
    requests = [p.text for p in load_prompts(split="eval")][:args.eval_prompts]
    scorer = None
    if args.reward_model:
        from core.train.reward_model import RewardScorer

        scorer = RewardScorer.from_folder(args.reward_model, device="cpu")
    result["held_out"], answers = {}, {}
    for engine, model in loaded.items():
        started = time.perf_counter()
        texts = [c.text for c in sample(model, {"base": "base"}, requests, EvalConfig(policy="base"))["base"]]
        row = {"seconds": time.perf_counter() - started,
               "well_formed": proportion(sum(parse_list(t).well_formed for t in texts), len(texts))}
        if scorer:
            row["rm_score"] = mean_interval(scorer.score(requests, texts))
        result["held_out"][engine], answers[engine] = row, texts
    # 3. how far each fast engine's distribution is from fp32's (torch.ao's dynamic int8 for comparison)
    fast = {"int8": loaded["int8"].model, "llamacpp": loaded["llamacpp"].llamacpp.sampler(None)}
    if args.torch_ao:
        fast["torch.ao dynamic int8"] = torch_ao_dynamic(args.base_model)
    result["divergence"] = {name: divergence(loaded["plain"].model, model, loaded["plain"].tokenizer, requests,
                                             answers["plain"]) for name, model in fast.items()}
    plain_s = result["pair_s"]["plain"]["median"]
    print(f"fresh pair (median of {args.pairs}): " + ", ".join(
        f"{e} {result['pair_s'][e]['median']:.2f} s ({plain_s / result['pair_s'][e]['median']:.2f}x)"
        for e in ENGINES))
    for e in ENGINES:
        h, wf = result["held_out"][e], result["held_out"][e]["well_formed"]
        rm = f", RM {h['rm_score']['mean']:.3f} [{h['rm_score']['low']:.3f}, {h['rm_score']['high']:.3f}]" \
            if "rm_score" in h else ""
        print(f"held-out x{len(requests)} {e}: {h['seconds']:.0f} s, well-formed {wf['hits']}/{wf['n']} "
              f"[{wf['low']:.2f}, {wf['high']:.2f}]{rm}")
    for name, d in result["divergence"].items():
        print(f"KL(fp32 || {name}) {d['kl_per_token']:.4f} nats/token, top-1 agreement {d['top1_agreement']:.3f} "
              f"over {d['tokens']} tokens")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
