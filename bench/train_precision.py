"""What bf16 buys a training stage on this machine, and the two PPO fixes that came with it, measured side by side.

    .venv/bin/python -m bench.train_precision                # ~1 min on 2 CPU cores
    .venv/bin/python -m bench.train_precision --base-model TINY --rows 2 --tokens 12 --repeats 1   # the test's run

`--precision auto` (core/model.training_dtype) trains in bf16 where the device multiplies it natively. On a CPU
with AVX512-BF16 or AMX that is a large gain for a training batch (many rows a matmul), unlike sampling at batch
1-16, which reads the weights once per token and gained nothing from bf16 here. Four measurements, medians of
--repeats calls after one warm-up:

1. matmul: a (rows x tokens) x 576 by 576 x 1536 product (an MLP projection's shape) in fp32 and in bf16, GFLOP/s;
2. forward: the base model, no grad, over rows x tokens tokens, with fp32 and with bf16 weights, seconds;
3. LM head: the states before each of the last half of the tokens times the frozen bf16 LM head, as PPO holds it,
   from a strided slice of the hidden states and from a contiguous copy (policy_value.response_states), ms;
4. saved for backward: what one PPO training forward (PolicyValue, a LoRA on q/k/v/o, a bf16 base) keeps for the
   backward pass, excluding the model's own weights, with PEFT's default (each adapted layer's input cast to the
   fp32 LoRA weights' dtype) and with PolicyValue.mixed_precision (the adapters multiply in bf16 too), MB.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from unittest import mock

import torch
from peft import LoraConfig

from core.model import (
    cpu_has_bf16_matmul,
    load_causal_lm,
    load_tokenizer,
    resolve_base_model,
)
from core.train.ppo import policy_value


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: first-call allocation and kernel selection
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def saved_for_backward_mb(pv, ids, mask, context: int, features, mixed: bool) -> float:
    """Bytes autograd keeps for the backward of one training forward, storages counted once, parameters left out."""
    weights = {p.untyped_storage().data_ptr() for p in pv.parameters()}
    seen: set[int] = set()

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in weights and ptr not in seen:
            seen.add(ptr)
            pack.total += t.untyped_storage().nbytes()
        return t

    pack.total = 0
    precision = pv.mixed_precision if mixed else contextlib.nullcontext
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            mock.patch.object(pv, "mixed_precision", precision):
        pv(ids, mask, context, 0.7, features)
    return pack.total / 2**20


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.train_precision", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=8, help="sequences in the batch (PPO's quick batch: 8)")
    parser.add_argument("--tokens", type=int, default=102, help="tokens per sequence (a request and 64 new tokens)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--base-model", default="", help="empty: the embedded model")
    args = parser.parse_args(argv)
    name = resolve_base_model(args.base_model or None)
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    n = args.rows * args.tokens
    result = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "cpu_has_bf16_matmul": cpu_has_bf16_matmul(), "rows": args.rows, "tokens": args.tokens}

    # 1. one MLP-shaped matmul
    a, b = torch.randn(n, 576), torch.randn(576, 1536)
    for dtype in (torch.float32, torch.bfloat16):
        x, y = a.to(dtype), b.to(dtype)
        result[f"matmul_gflops_{str(dtype)[6:]}"] = round(2 * n * 576 * 1536 / median_seconds(lambda: x @ y,
                                                                                             args.repeats) / 1e9)
    # 2. the model's forward, no grad
    tokenizer = load_tokenizer(name)
    ids = torch.randint(0, min(1000, len(tokenizer)), (args.rows, args.tokens))
    mask = torch.ones_like(ids)
    for dtype in (torch.float32, torch.bfloat16):
        model = load_causal_lm(name, cpu, dtype=dtype)
        with torch.no_grad():
            result[f"forward_s_{str(dtype)[6:]}"] = round(median_seconds(
                lambda: model.model(input_ids=ids, attention_mask=mask), args.repeats), 3)
    # 3. the LM head as PPO holds it (frozen, in PolicyValue) on a strided and on a contiguous slice of its states
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      task_type="CAUSAL_LM")
    pv = policy_value.build(model, tokenizer, lora, None, None)
    context = args.tokens // 2
    with torch.no_grad():
        hidden = pv.hidden(ids, mask)
        strided, contiguous = hidden[:, context - 1:-1], policy_value.response_states(hidden, context)
        for label, states in (("strided", strided), ("contiguous", contiguous)):
            result[f"lm_head_ms_{label}"] = round(1000 * median_seconds(lambda: pv.lm.lm_head(states),
                                                                          args.repeats), 3)
    # 4. one PPO training forward on half the rows (a mini-batch), saved tensors with and without mixed precision
    half = max(1, args.rows // 2)
    features = torch.zeros(half, args.tokens - context, model.config.hidden_size)
    for mixed in (False, True):
        result[f"saved_mb_{'mixed' if mixed else 'peft_default'}"] = round(saved_for_backward_mb(
            pv, ids[:half], mask[:half], context, features, mixed), 4)

    print(f"matmul {n} x 576 x 1536: fp32 {result['matmul_gflops_float32']} GFLOP/s, "
          f"bf16 {result['matmul_gflops_bfloat16']} GFLOP/s")
    print(f"forward over {args.rows} x {args.tokens} tokens: fp32 weights {result['forward_s_float32']} s, "
          f"bf16 weights {result['forward_s_bfloat16']} s")
    print(f"LM head (bf16) on {args.rows} x {args.tokens - context} states: strided slice "
          f"{result['lm_head_ms_strided']:.1f} ms, contiguous {result['lm_head_ms_contiguous']:.1f} ms")
    print(f"PPO training forward on {half} x {args.tokens} tokens, saved for backward: PEFT's fp32 input casts "
          f"{result['saved_mb_peft_default']:.1f} MB, mixed precision {result['saved_mb_mixed']:.1f} MB")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
