"""Sampling engines: the plain fp32 model, the same model reading int8 weights, or llama.cpp (core/llamacpp.py).

    python -m apps.arena --engine auto|llamacpp|int8|plain       python -m core eval ... --engine ...

`auto` (every sampler's default) is llama.cpp on a CPU when the model can be written for it (a Llama-architecture
model with a BPE tokenizer, llama-cpp-python installed, and a build that does not crash decoding in a child process:
core.llamacpp.crash_reason), else int8 weights on a CPU, and plain on a GPU. Side by
side on 2 cores (bench/README.md, "Sampling engines"), llama.cpp samples a pair of lists ~4x faster than int8
at the same distance from fp32. `plain` is the fallback switch: PyTorch fp32, exactly the model the training stages use.

Why: at batch 1-2 a 135M model is bound by reading its weights once per token, so weights a quarter the size sample
faster. How: every Linear layer of the base (attention, MLP and the LM head; not the LoRA matrices) keeps its fp32
weight and gains an int8 copy with one scale per output channel; under `torch.no_grad` / `inference_mode` on a CPU
it multiplies bf16 activations by that copy with PyTorch's own CPU kernel `aten._weight_int8pack_mm` (the kernel
gpt-fast uses on CPU), and anywhere else (training, autograd, CUDA) it is the plain Linear it was. Written here
because the libraries' ways lose the lists: torch.ao's `quantize_dynamic` also quantises activations with one scale
per tensor, and on SmolLM2 that puts its next-token distribution 1.41 nats/token (KL) away from fp32 (46 % top-1
agreement; its answers stop being lists); weight-only per-channel int8 stays within 0.0055 nats/token (95.6 %;
bench/sampling_speed.py prints both).

LoRA adapters load on top as usual (PEFT wraps these layers like any nn.Linear); their small matrices stay fp32.
Only processes that sample load an engine (the arena, `core eval`, the benchmarks); training stages never do, so the
policy PPO, DPO and RLOO train and score is always the fp32 one.
"""
from __future__ import annotations

import torch
from torch import nn

from core.records import ModelLoadError

ENGINES = ("auto", "plain", "int8", "llamacpp")


def int8_kernel_available() -> bool:
    return hasattr(torch.ops.aten, "_weight_int8pack_mm")


def resolve_engine(engine: str, device: torch.device, llamacpp_unsupported: str | None = None) -> str:
    """"plain", "int8" or "llamacpp" for a model on `device`; `llamacpp_unsupported` is why llama.cpp cannot take
    this model (None: it can). auto: llama.cpp, else int8, on a CPU; plain on a GPU (which samples in bf16 at full
    speed already). An engine asked for where it cannot run is refused with what to pass."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    on_cpu = device.type == "cpu"
    if engine == "auto":
        if on_cpu and llamacpp_unsupported is None:
            return "llamacpp"
        return "int8" if on_cpu and int8_kernel_available() else "plain"
    if engine == "int8" and (not on_cpu or not int8_kernel_available()):
        raise ModelLoadError(f"--engine int8 runs on a CPU with PyTorch's int8 kernel; this is {device.type}: pass "
                             "--engine plain (or auto).")
    if engine == "llamacpp" and not on_cpu:
        raise ModelLoadError(f"--engine llamacpp runs on a CPU; this is {device.type}: pass --engine plain (or auto).")
    if engine == "llamacpp" and llamacpp_unsupported:
        raise ModelLoadError(f"--engine llamacpp: {llamacpp_unsupported}; pass --engine int8 or plain (or auto).")
    return engine


class Int8Linear(nn.Linear):
    """An nn.Linear with an int8 copy of its weight (per output channel scales) used for CPU inference."""

    qweight: torch.Tensor  # (out, in) int8
    qscales: torch.Tensor  # (out,) bf16

    def refresh(self) -> None:
        """(Re)quantise the int8 copy from the fp32 weight (after loading, or if the weight changed)."""
        w = self.weight.detach().float()
        scales = (w.abs().amax(1) / 127).clamp(min=1e-8)  # (out,)
        self.qweight = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
        self.qscales = scales.to(torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or x.device.type != "cpu" or self.qweight.device != x.device:
            return super().forward(x)
        shape = x.shape  # (..., in)
        y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, shape[-1]).to(torch.bfloat16), self.qweight,
                                               self.qscales)  # (N, out) bf16
        y = y.to(x.dtype).reshape(*shape[:-1], -1)
        return y + self.bias if self.bias is not None else y


def to_int8(model: nn.Module) -> int:
    """Give every base Linear layer of `model` its int8 copy, in place (LoRA matrices left as they are); returns
    how many layers. The class swap keeps every reference PEFT and the model hold to the layer."""
    layers = [m for name, m in model.named_modules()
              if type(m) is nn.Linear and "lora_" not in name and m.weight.device.type == "cpu"]
    for layer in layers:
        layer.__class__ = Int8Linear
        layer.refresh()
    return len(layers)


def engine_of(model: nn.Module) -> str:
    """"int8" when the torch model's layers carry int8 copies, else "plain"."""
    return "int8" if any(isinstance(m, Int8Linear) for m in model.modules()) else "plain"
