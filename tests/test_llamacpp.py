"""The llama.cpp engine (core/llamacpp.py): the GGUF it writes is the same model, its sampler the same distribution."""
import numpy as np
import pytest
import torch
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from core import llamacpp
from core import model as model_module
from core.collect.generate import GenerationCancelled, Generator, chat_text
from core.engine import resolve_engine
from core.gguf_writer import (
    cached_gguf_path,
    gguf_name,
    permute_for_rope,
    policy_gguf,
    unsupported_reason,
)
from core.llamacpp import LlamaCppSampler, crash_reason
from core.model import load
from core.records import ModelLoadError, Prompt, SamplingSettings


def hf_logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()  # (T, V)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load(tiny_model_dir, "cpu", "plain")


@pytest.fixture(scope="module")
def prompt_ids(tiny):
    return tiny.tokenizer(chat_text(tiny.tokenizer, "Top 5 fruits for a picnic"), add_special_tokens=False)["input_ids"]


def test_names_and_the_rope_permutation_by_hand():
    assert gguf_name("model.layers.3.self_attn.q_proj.weight") == "blk.3.attn_q.weight"
    assert gguf_name("model.layers.0.mlp.down_proj.weight") == "blk.0.ffn_down.weight"
    assert gguf_name("model.embed_tokens.weight") == "token_embd.weight"
    # one head of 4 rows, rotate-half layout (r0 r1 | r2 r3) -> interleaved pairs (r0 r2) (r1 r3); two heads apart
    rows = np.arange(8, dtype=np.float32)[:, None]  # (8, 1): two heads of 4
    assert permute_for_rope(rows, 2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_an_unquantised_gguf_gives_the_same_logits_and_greedy_tokens(tiny, tiny_model_dir, prompt_ids, tmp_path):
    sampler = LlamaCppSampler(policy_gguf(tiny_model_dir, None, tiny.tokenizer, quantize=False, cache_dir=tmp_path))
    ids = prompt_ids + [5, 17, 42, 8]
    assert np.allclose(sampler.logits(ids), hf_logits(tiny.model, ids), atol=1e-3)
    greedy = SamplingSettings(temperature=0, max_new_tokens=12)
    tokens, finished, cancelled = sampler.sample(prompt_ids, greedy, seed=0, eos=[])
    with torch.no_grad():
        hf = tiny.model.generate(torch.tensor([prompt_ids]), do_sample=False, max_new_tokens=12, min_new_tokens=12)
    assert tokens == hf[0, len(prompt_ids):].tolist() and not finished and not cancelled


def test_q8_0_stays_close_and_a_merged_adapter_is_the_peft_model(tiny, tiny_model_dir, tiny_adapter_dir, prompt_ids,
                                                                   tmp_path):
    from peft import PeftModel

    ids = prompt_ids + [5, 17, 42, 8]
    q8 = LlamaCppSampler(policy_gguf(tiny_model_dir, None, tiny.tokenizer, cache_dir=tmp_path))
    p, q = log_softmax(hf_logits(tiny.model, ids)), log_softmax(q8.logits(ids))
    assert 0 < (np.exp(p) * (p - q)).sum(-1).mean() < 0.01  # quantised, yet within 0.01 nats a token
    tuned = PeftModel.from_pretrained(load(tiny_model_dir, "cpu", "plain").model, tiny_adapter_dir).eval()
    merged = LlamaCppSampler(policy_gguf(tiny_model_dir, tiny_adapter_dir, tiny.tokenizer, quantize=False,
                                         cache_dir=tmp_path))
    expected = hf_logits(tuned, ids)
    assert np.allclose(merged.logits(ids), expected, atol=1e-3)
    assert not np.allclose(expected, hf_logits(tiny.model, ids), atol=0.1)  # the adapter does change the model


def test_the_sampler_draws_from_transformers_distribution_temperature_then_top_p(tiny, tiny_model_dir, prompt_ids,
                                                                                  tmp_path):
    sampler = LlamaCppSampler(policy_gguf(tiny_model_dir, None, tiny.tokenizer, quantize=False, cache_dir=tmp_path))
    settings = SamplingSettings(temperature=0.5, top_p=0.6, max_new_tokens=1)
    logits = torch.from_numpy(hf_logits(tiny.model, prompt_ids)[-1:])  # (1, V)
    warped = TopPLogitsWarper(0.6)(None, TemperatureLogitsWarper(0.5)(None, logits))
    expected = torch.softmax(warped, -1)[0].numpy()
    other_order = TemperatureLogitsWarper(0.5)(None, TopPLogitsWarper(0.6)(None, logits))  # llama-cpp-python's chain
    nucleus = set(np.flatnonzero(expected))
    assert nucleus < set(np.flatnonzero(torch.isfinite(other_order)[0].numpy()))  # the order shows in the support
    draws = 3000
    counts = np.zeros_like(expected)
    for seed in range(draws):
        counts[sampler.sample(prompt_ids, settings, seed, eos=[])[0][0]] += 1
    assert set(np.flatnonzero(counts)) <= nucleus  # nothing outside transformers' nucleus
    # Pearson's chi-square over the nucleus against its 99.99th percentile (normal approximation, df > 30)
    inside = sorted(nucleus)
    chi2 = float((((counts[inside] - draws * expected[inside]) ** 2) / (draws * expected[inside])).sum())
    df = len(inside) - 1
    assert df > 30 and chi2 < df + 3.7 * (2 * df) ** 0.5


def test_the_arena_generator_samples_pairs_through_llamacpp_and_caches_each_policy(tiny_model_dir, tiny_adapter_dir,
                                                                                    tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_GGUF_CACHE", str(tmp_path))
    loaded = load(tiny_model_dir, "cpu", "llamacpp")
    generator = Generator(loaded)
    tuned = generator.add_adapter(tiny_adapter_dir)
    assert len(list(tmp_path.glob("*.gguf"))) == 1  # the adapter's, written when it is added
    steps = []
    pair = generator.generate(Prompt("Top 5 fruits"), [generator.base_policy, tuned],
                              SamplingSettings(temperature=1.0, max_new_tokens=8), seed=3,
                              on_step=lambda step, of: steps.append((step, of)))
    assert [g.policy for g in pair] == [generator.base_policy, tuned] and all(g.num_tokens <= 8 for g in pair)
    assert steps[-1][1] == 16 and [s for s, _ in steps] == sorted(s for s, _ in steps)  # one bar over both rows
    assert len(list(tmp_path.glob("*.gguf"))) == 2
    again = Generator(load(tiny_model_dir, "cpu", "llamacpp"))
    assert [g.text for g in again.generate(Prompt("Top 5 fruits"), [again.base_policy, again.add_adapter(
        tiny_adapter_dir)], SamplingSettings(temperature=1.0, max_new_tokens=8), seed=3)] == [g.text for g in pair]
    assert len(list(tmp_path.glob("*.gguf"))) == 2  # nothing written twice; same seeds, same lists
    with pytest.raises(GenerationCancelled):
        generator.generate(Prompt("Top 5 fruits"), [tuned], SamplingSettings(max_new_tokens=8), seed=0,
                           should_stop=lambda: True)


def test_the_cache_key_follows_the_weights(tiny_model_dir, tiny_adapter_dir, tmp_path):
    import shutil

    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_adapter_dir, adapter)
    before = cached_gguf_path(tiny_model_dir, str(adapter), True, tmp_path)
    assert before == cached_gguf_path(tiny_model_dir, str(adapter), True, tmp_path)
    assert before != cached_gguf_path(tiny_model_dir, str(adapter), False, tmp_path)
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes() + b" ")  # retrained in place: another size and time
    assert before != cached_gguf_path(tiny_model_dir, str(adapter), True, tmp_path)


def test_engine_choice_and_refusals_in_one_line():
    from transformers import GPT2Config, LlamaConfig

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_engine("auto", cpu) == "llamacpp" and resolve_engine("auto", cuda) == "plain"
    assert resolve_engine("auto", cpu, "not a llama") == "int8"  # the fallback when llama.cpp cannot take it
    with pytest.raises(ModelLoadError, match="runs on a CPU.*pass --engine plain"):
        resolve_engine("llamacpp", cuda)
    with pytest.raises(ModelLoadError, match="not a llama; pass --engine int8 or plain"):
        resolve_engine("llamacpp", cpu, "not a llama")
    assert "GPT2LMHeadModel" in unsupported_reason(GPT2Config(architectures=["GPT2LMHeadModel"]), None)
    assert "plain RoPE" in unsupported_reason(LlamaConfig(rope_parameters={"rope_type": "linear", "factor": 2.0,
                                                                           "rope_theta": 1e4}), None)


def test_a_build_that_crashes_is_found_once_and_auto_samples_without_it(tiny, tiny_model_dir, tmp_path,
                                                                        monkeypatch):
    gguf = policy_gguf(tiny_model_dir, None, tiny.tokenizer, quantize=False, cache_dir=tmp_path)
    monkeypatch.setattr(llamacpp, "_verdicts", {})
    assert crash_reason(gguf, tmp_path / "a") is None  # this machine's build decodes
    monkeypatch.setattr(llamacpp, "_verdicts", {})
    monkeypatch.setattr(llamacpp, "PROBE", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    reason = crash_reason(gguf, tmp_path / "b")
    assert "died with SIGSEGV" in reason and "GGML_NATIVE=OFF" in reason and "\n" not in reason
    monkeypatch.setattr(llamacpp, "_verdicts", {})
    monkeypatch.setattr(llamacpp.subprocess, "run", lambda *a, **k: pytest.fail("probed twice"))
    assert crash_reason(gguf, tmp_path / "b") == reason  # kept on disk for this build
    assert crash_reason(None, tmp_path / "c") is None  # nothing to probe with: not refused
    (tmp_path / "b" / "llama-cpp-probe.json").write_text("{half")
    monkeypatch.setattr(llamacpp, "_verdicts", {})
    monkeypatch.setattr(llamacpp.subprocess, "run", lambda *a, **k: type("Done", (), {"returncode": 0})())
    assert crash_reason(gguf, tmp_path / "b") is None  # an unreadable verdict file: probed again, not a crash
    monkeypatch.setattr(model_module, "crash_reason", lambda _: reason)
    assert load(tiny_model_dir, "cpu", "auto").engine == "int8"
    with pytest.raises(ModelLoadError, match="died with SIGSEGV.*pass --engine int8 or plain"):
        load(tiny_model_dir, "cpu", "llamacpp")


def test_eos_ends_a_list(tiny, tiny_model_dir, prompt_ids, tmp_path):
    sampler = LlamaCppSampler(policy_gguf(tiny_model_dir, None, tiny.tokenizer, quantize=False, cache_dir=tmp_path))
    first = sampler.sample(prompt_ids, SamplingSettings(temperature=0, max_new_tokens=6), 0, eos=[])[0]
    stop = max((j for j in range(len(first)) if first[j] not in first[:j]))  # the last token new to the list
    tokens, finished, _ = sampler.sample(prompt_ids, SamplingSettings(temperature=0, max_new_tokens=6), 0,
                                         eos=[first[stop]])
    assert tokens == first[:stop + 1] and finished


def test_decoding_many_together_gives_each_sequence_its_own_answer(tiny, tiny_model_dir, prompt_ids, tmp_path):
    sampler = LlamaCppSampler(policy_gguf(tiny_model_dir, None, tiny.tokenizer, quantize=False, cache_dir=tmp_path))
    prompts = [prompt_ids, prompt_ids[:-3], prompt_ids + [5, 17], prompt_ids[:4]]  # different lengths
    greedy = SamplingSettings(temperature=0, max_new_tokens=7)
    alone = [sampler.sample(p, greedy, 0, eos=[])[0] for p in prompts]
    together = sampler.sample_many(prompts, greedy, [0] * 4, eos=[], slots=3)  # the 4th waits for a slot
    assert [ids for ids, _ in together] == alone and not any(ended for _, ended in together)
    stop = alone[0][2]  # an EOS that ends the first answer at its third token, and the others where they meet it
    ended = sampler.sample_many(prompts, greedy, [0] * 4, eos=[stop], slots=2)  # slots freed early, refilled
    for (ids, finished), full in zip(ended, alone):
        cut = full.index(stop) + 1 if stop in full else len(full)
        assert ids == full[:cut] and finished == (stop in full)
    draws = sampler.sample_many([prompt_ids] * 2, SamplingSettings(temperature=1.0, max_new_tokens=7), [1, 2], [])
    assert draws[0][0] != draws[1][0]  # seeded apart: two draws of one prompt differ


def test_engine_quality_bench_pairs_draws_by_request(tiny_model_dir, tiny_reward_run, monkeypatch, capsys):
    import json
    import sys

    from bench import engine_quality

    assert engine_quality.per_request_means([[1.0, 2.0], [3.0, 6.0]]) == [2.0, 4.0]  # (draws, requests)
    monkeypatch.setattr(sys, "argv", ["engine_quality", "--reward-model", str(tiny_reward_run), "--base-model",
                                      tiny_model_dir, "--draws", "2", "--prompts", "3"])
    engine_quality.main()
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    plain, fast = result["engines"]["plain"], result["engines"]["llamacpp"]
    assert plain["well_formed"]["n"] == fast["well_formed"]["n"] == 6 and fast["rm_score"]["n"] == 3
    diff = fast["rm_minus_plain"]["mean"]
    assert diff == pytest.approx(fast["rm_score"]["mean"] - plain["rm_score"]["mean"])  # paired means: same mean
    monkeypatch.setattr(sys, "argv", ["engine_quality", "--reward-model", "x", "--engines", "plain,fast"])
    with pytest.raises(SystemExit):
        engine_quality.main()


def test_a_lora_file_on_the_base_samples_what_the_peft_model_computes(tiny, tiny_model_dir, tiny_adapter_dir,
                                                                        prompt_ids, tmp_path):
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    from core.gguf_writer import write_lora_gguf

    tuned = PeftModel.from_pretrained(load(tiny_model_dir, "cpu", "plain").model, tiny_adapter_dir).eval()
    lora = {name.removeprefix("base_model.model."): (m.lora_A["default"].weight, m.lora_B["default"].weight,
                                                      m.scaling["default"])
            for name, m in tuned.named_modules() if isinstance(m, LoraLayer)}
    sampler = LlamaCppSampler(policy_gguf(tiny_model_dir, None, tiny.tokenizer, quantize=False, cache_dir=tmp_path))
    greedy = SamplingSettings(temperature=0, max_new_tokens=10)
    plain = sampler.sample_many([prompt_ids], greedy, [0], eos=[])[0][0]
    sampler.use_lora(write_lora_gguf(lora, tiny.model.config, tmp_path / "lora.gguf"))
    with_lora = sampler.sample_many([prompt_ids], greedy, [0], eos=[])[0][0]
    with torch.no_grad():
        expected = tuned.generate(torch.tensor([prompt_ids]), do_sample=False, max_new_tokens=10, min_new_tokens=10)
    assert with_lora == expected[0, len(prompt_ids):].tolist() and with_lora != plain
