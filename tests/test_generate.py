"""Pair generation: one batched call, reproducible seeds, EOS accounting, adapters routed per row, progress and cancel."""
import pytest
import torch

from core.collect.generate import (
    SYSTEM_PROMPT,
    GenerationCancelled,
    Generator,
    chat_text,
    complete,
    completion_batch_size,
    eos_ids,
    response_lengths,
)
from core.model import load
from core.records import Prompt, SamplingSettings

SHORT = SamplingSettings(max_new_tokens=12)


@pytest.fixture
def generator(tiny_model_dir):
    return Generator(load(tiny_model_dir, device="cpu"))


def count_generate_calls(generator, monkeypatch):
    calls = []
    real = generator.loaded.model.generate
    monkeypatch.setattr(generator.loaded.model, "generate", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    return calls


def test_response_lengths_stop_at_first_eos():
    new_tokens = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 9, 9, 9]])  # (B=3, T=4), EOS id 2
    lengths, finished = response_lengths(new_tokens, eos=[2])
    assert lengths == [2, 4, 1]
    assert finished == [True, False, True]


def test_chat_text_has_system_prompt_and_request(generator):
    text = chat_text(generator.loaded.tokenizer, "Top 5 fruits")
    assert SYSTEM_PROMPT in text and "Top 5 fruits" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_pad_token_is_not_eos(generator):
    tokenizer = generator.loaded.tokenizer
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.eos_token_id in eos_ids(generator.loaded.model, tokenizer)


def test_pair_comes_from_one_batched_generate(generator, monkeypatch):
    calls = count_generate_calls(generator, monkeypatch)
    left, right = generator.generate(Prompt("Top 5 fruits"), [generator.base_policy] * 2, SHORT, seed=3)
    assert len(calls) == 1
    assert left.latency_ms == right.latency_ms > 0
    for gen in (left, right):
        assert 1 <= gen.num_tokens <= SHORT.max_new_tokens
        assert gen.seed == 3 and gen.sampling == SHORT and gen.system_prompt == SYSTEM_PROMPT
        assert gen.policy == generator.base_policy and gen.prompt.text == "Top 5 fruits"
    assert left.generation_id != right.generation_id


def test_many_requests_go_in_batches_of_16_on_a_cpu_and_in_one_on_a_gpu(generator, monkeypatch):
    calls = count_generate_calls(generator, monkeypatch)
    requests = [f"Top 5 fruits for day {k}" for k in range(20)]
    answers = complete(generator.loaded.model, generator.loaded.tokenizer, requests, SHORT, seed=0)
    assert [a.request for a in answers] == requests and len(calls) == 2  # 16 + 4 on the CPU
    assert completion_batch_size(torch.device("cpu")) == 16
    assert completion_batch_size(torch.device("cuda")) >= 72  # the whole held-out split in one call


def test_same_seed_same_lists_other_seed_other_lists(generator):
    run = lambda seed: [g.text for g in generator.generate(Prompt("Top 5 fruits"), [generator.base_policy] * 2,
                                                           SHORT, seed=seed)]
    assert run(11) == run(11)
    assert run(11) != run(12)


def test_mixed_policies_share_one_call_with_adapter_per_row(generator, tiny_adapter_dir, monkeypatch):
    tuned = generator.add_adapter(tiny_adapter_dir)
    calls = count_generate_calls(generator, monkeypatch)
    base_row, tuned_row = generator.generate(Prompt("Top 5 fruits"), [generator.base_policy, tuned], SHORT, seed=5)
    assert len(calls) == 1
    assert calls[0]["adapter_names"] == ["__base__", "adapter0"]
    assert (base_row.policy.adapter, tuned_row.policy.adapter) == (None, tiny_adapter_dir)
    # The adapter changes what is sampled: all-tuned and all-base batches differ for the same seed.
    both_tuned = generator.generate(Prompt("Top 5 fruits"), [tuned, tuned], SHORT, seed=5)
    both_base = generator.generate(Prompt("Top 5 fruits"), [generator.base_policy] * 2, SHORT, seed=5)
    assert [g.text for g in both_tuned] != [g.text for g in both_base]


def test_unloaded_adapter_is_refused(generator):
    from core.records import Policy

    with pytest.raises(ValueError, match="add_adapter"):
        generator.generate(Prompt("x"), [Policy(generator.loaded.name, adapter="/nope")] * 2, SHORT, seed=0)


def test_progress_reported_per_token_and_cancel_stops(generator):
    steps = []
    generator.generate(Prompt("Top 5 fruits"), [generator.base_policy] * 2, SHORT, seed=1,
                       on_step=lambda step, total: steps.append((step, total)))
    assert steps and steps[0] == (1, 12) and all(total == 12 for _, total in steps)
    with pytest.raises(GenerationCancelled):
        generator.generate(Prompt("Top 5 fruits"), [generator.base_policy] * 2, SHORT, seed=1,
                           should_stop=lambda: True)


def test_an_adapter_loads_only_between_generations(generator, tiny_adapter_dir):
    """The arena's background queue may load an adapter while a person's request is generating: through PEFT
    (this engine) it waits."""
    import threading

    started, release = threading.Event(), threading.Event()

    def on_step(step, total):
        started.set()
        release.wait(10)
    sampling = threading.Thread(target=generator.generate, args=(Prompt("Top 5 fruits"), [generator.base_policy] * 2,
                                                                 SHORT, 1), kwargs={"on_step": on_step})
    sampling.start()
    try:
        assert started.wait(10)
        loading = threading.Thread(target=generator.add_adapter, args=(tiny_adapter_dir,))
        loading.start()
        loading.join(0.5)
        assert loading.is_alive() and not generator.adapters  # still waiting for the generation to end
    finally:
        release.set()
    sampling.join(10), loading.join(30)
    assert list(generator.adapters) == [tiny_adapter_dir]
