"""The int8 sampling engine (core/engine.py): close to fp32 where it samples, exactly fp32 where it trains."""
import pytest
import torch
from torch import nn

from core.engine import Int8Linear, engine_of, resolve_engine, to_int8
from core.records import ModelLoadError


def test_an_int8_layer_is_close_to_fp32_without_grad_and_exactly_fp32_with_it():
    torch.manual_seed(0)
    layer = nn.Linear(64, 32)
    x = torch.randn(3, 5, 64)  # (B, T, in)
    exact = layer(x)
    to_int8(layer)
    assert isinstance(layer, Int8Linear) and layer.qweight.dtype == torch.int8 and layer.qweight.shape == (32, 64)
    # per output channel: each row's largest weight maps to +-127
    assert torch.equal(layer.qweight.abs().amax(1), torch.full((32,), 127, dtype=torch.int8))
    with torch.no_grad():
        fast = layer(x)
    assert fast.shape == exact.shape and fast.dtype == torch.float32
    assert not torch.equal(fast, exact) and torch.allclose(fast, exact, atol=0.05, rtol=0.02)
    y = layer(x)  # autograd on: the fp32 weight, bit for bit, and gradients flow
    assert torch.equal(y, exact)
    y.sum().backward()
    assert layer.weight.grad is not None


def test_the_engine_converts_base_layers_not_lora_and_peft_wraps_them_as_usual(tiny_model_dir, tiny_adapter_dir):
    from peft import PeftModel

    from core.model import load

    loaded = load(tiny_model_dir, "cpu", "int8")
    assert loaded.engine == "int8" == engine_of(loaded.model)
    base = {n for n, m in loaded.model.named_modules() if isinstance(m, nn.Linear)}
    assert base and all(isinstance(m, Int8Linear) for n, m in loaded.model.named_modules() if n in base)
    model = PeftModel.from_pretrained(loaded.model, str(tiny_adapter_dir))
    lora = [m for n, m in model.named_modules() if "lora_A" in n and isinstance(m, nn.Linear)]
    assert lora and not any(isinstance(m, Int8Linear) for m in lora)  # the adapter's own matrices stay fp32
    plain = PeftModel.from_pretrained(load(tiny_model_dir, "cpu", "plain").model, str(tiny_adapter_dir))
    ids = torch.tensor([[1, 5, 9, 13, 2, 7]])
    with torch.no_grad():
        fast, exact = model(ids).logits, plain(ids).logits
        with model.disable_adapter(), plain.disable_adapter():
            fast_base, exact_base = model(ids).logits, plain(ids).logits
    assert torch.allclose(fast, exact, atol=0.1) and not torch.allclose(fast, fast_base, atol=1e-3)  # LoRA applies
    assert torch.allclose(fast_base, exact_base, atol=0.1)


def test_sampling_through_the_arena_generator_on_int8_gives_lists_of_the_asked_length(tiny_model_dir,
                                                                                       tiny_adapter_dir):
    from core.collect.generate import Generator
    from core.model import load
    from core.records import Prompt, SamplingSettings

    generator = Generator(load(tiny_model_dir, "cpu", "int8"))
    tuned = generator.add_adapter(str(tiny_adapter_dir))
    pair = generator.generate(Prompt("Top 5 fruits"), [generator.base_policy, tuned],
                              SamplingSettings(temperature=1.0, max_new_tokens=8), seed=0)
    assert [g.policy for g in pair] == [generator.base_policy, tuned] and all(g.num_tokens <= 8 for g in pair)


def test_engine_choice_auto_plain_int8_and_refusals():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    # auto is int8 on a CPU where llama.cpp cannot take the model (tests/test_llamacpp.py: where it can)
    assert resolve_engine("auto", cpu, "no llama.cpp") == "int8" and resolve_engine("auto", cuda) == "plain"
    assert resolve_engine("plain", cpu) == "plain" == resolve_engine("plain", cuda)
    with pytest.raises(ModelLoadError, match="pass --engine plain"):
        resolve_engine("int8", cuda)
    with pytest.raises(ValueError, match="engine must be one of"):
        resolve_engine("fast", cpu)


def test_training_stages_load_the_plain_model(tiny_model_dir):
    from core.model import load

    assert load(tiny_model_dir, "cpu").engine == "plain" == engine_of(load(tiny_model_dir, "cpu").model)
