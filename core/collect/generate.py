"""Generate candidate top-5 lists: two candidates for a request in one batched `generate` call.

Both candidates share one forward pass per token. When they come from two policies (the base and a tuned LoRA
adapter, say) the batch still runs once: PEFT routes each row through its own adapter (`adapter_names=`), with
"__base__" meaning no adapter.
"""
from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass, field

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from core.lists import parse_list
from core.model import LoadedModel
from core.records import Generation, Policy, Prompt, SamplingSettings
from core.runs import readable_adapter

SYSTEM_PROMPT = ("You write top-5 lists. Answer with exactly five numbered items, 1. to 5., one per line. "
                 "Each item is a short name followed by a brief reason. No introduction and no closing remarks.")
BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed batch


def chat_text(tokenizer, request: str, system_prompt: str | None = SYSTEM_PROMPT) -> str:
    """The prompt as the model sees it: its chat template, or a plain transcript for models without one.
    An empty `system_prompt` sends the request alone (the template's own default system turn, if any)."""
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + \
        [{"role": "user", "content": request}]
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{system_prompt}\n\nUser: {request}\nAssistant:" if system_prompt else f"User: {request}\nAssistant:"


def prompt_and_answer_ids(tokenizer, request: str, answer: str) -> tuple[list[int], list[int]]:
    """Token ids of the chat-templated request and of the answer closed by EOS, as a model reads them whole:
    what SFT learns from and what the reward model scores."""
    prompt_ids = tokenizer(chat_text(tokenizer, request), add_special_tokens=False)["input_ids"]
    return prompt_ids, tokenizer(answer.strip(), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def eos_ids(model, tokenizer) -> list[int]:
    """Every token id that ends a response: the tokenizer's EOS and the generation config's."""
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    ids.add(tokenizer.eos_token_id)
    return sorted(i for i in ids if i is not None)


def response_lengths(new_tokens: torch.Tensor, eos: list[int]) -> tuple[list[int], list[bool]]:
    """Tokens up to and including the first EOS in each row of (B, T) `new_tokens`, and whether it ended."""
    is_eos = torch.isin(new_tokens, torch.tensor(eos, device=new_tokens.device))  # (B, T)
    finished = is_eos.any(dim=1)  # (B,)
    first = torch.where(finished, is_eos.int().argmax(dim=1) + 1, torch.full_like(finished, new_tokens.shape[1],
                                                                                  dtype=torch.long))
    return first.tolist(), finished.tolist()


class GenerationCancelled(RuntimeError):
    """`should_stop` asked a generation to give way (the background queue yields to a user's request)."""


class _StepHook(StoppingCriteria):
    """Reports each token to `on_step(step, max_steps)`; stops every row once `should_stop()` turns true."""

    def __init__(self, on_step, should_stop, max_steps: int):
        self.on_step, self.should_stop, self.max_steps, self.step = on_step, should_stop, max_steps, 0
        self.cancelled = False

    def __call__(self, input_ids, scores, **kwargs):
        self.step += 1
        if self.on_step:
            self.on_step(self.step, self.max_steps)
        self.cancelled = self.cancelled or bool(self.should_stop and self.should_stop())
        return torch.full((input_ids.shape[0],), self.cancelled, dtype=torch.bool, device=input_ids.device)


def _exclusive(method):
    """One model, one user at a time: loading an adapter through PEFT wraps the model in place, so a list sampled
    meanwhile (the arena's background queue loads adapters while a person's request generates) could come from the
    wrong weights and be stored under the wrong policy."""
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)
    return locked


@dataclass
class Generator:
    """A loaded base model plus the LoRA adapters it can generate with; safe to share between threads."""
    loaded: LoadedModel
    system_prompt: str = SYSTEM_PROMPT
    adapters: dict[str, str] = field(default_factory=dict)  # adapter path -> PEFT adapter name
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @property
    def base_policy(self) -> Policy:
        return Policy(base_model=self.loaded.name)

    def add_adapter(self, path: str) -> Policy:
        """Load a LoRA adapter trained on this base; the returned policy can be one side of a pair. llama.cpp gives
        each adapter a sampler of its own, so only PEFT's in-place wrapping waits for a generation to end."""
        from peft import (
            PeftModel,  # lazy: PEFT takes ~7 s to import, and only a challenger adapter needs it
        )

        if path not in self.adapters and self.loaded.llamacpp:
            with readable_adapter(path, "python -m core train"):
                self.loaded.llamacpp.sampler(path)  # written to GGUF and loaded now, not when its first pair is due
            self.adapters[path] = f"adapter{len(self.adapters)}"
        elif path not in self.adapters:
            with self._lock, readable_adapter(path, "python -m core train"):
                name = f"adapter{len(self.adapters)}"
                if self.adapters:
                    self.loaded.model.load_adapter(path, adapter_name=name)
                else:
                    self.loaded.model = PeftModel.from_pretrained(self.loaded.model, path, adapter_name=name).eval()
                self.adapters[path] = name
        return Policy(base_model=self.loaded.name, adapter=path)

    @_exclusive
    def generate(self, prompt: Prompt, policies: list[Policy], sampling: SamplingSettings, seed: int,
                 on_step=None, should_stop=None) -> list[Generation]:
        """One batched, seeded `generate`: row i samples from policies[i].

        `on_step(step, max_steps)` is called after every token; `should_stop()` returning true abandons the call
        with GenerationCancelled.
        """
        if any(p.adapter and p.adapter not in self.adapters for p in policies):
            raise ValueError("a policy names an adapter that was not loaded: call add_adapter(path) first")
        if self.loaded.llamacpp:
            return self._generate_llamacpp(prompt, policies, sampling, seed, on_step, should_stop)
        model, tokenizer = self.loaded.model, self.loaded.tokenizer
        text = chat_text(tokenizer, prompt.text, self.system_prompt)
        batch = tokenizer([text] * len(policies), return_tensors="pt", padding=True,
                          add_special_tokens=False).to(self.loaded.device)
        extra = {}
        if self.adapters:
            extra["adapter_names"] = [self.adapters[p.adapter] if p.adapter else BASE_ADAPTER for p in policies]
        hook = _StepHook(on_step, should_stop, sampling.max_new_tokens)
        eos = eos_ids(model, tokenizer)

        torch.manual_seed(seed)
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**batch, do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                                 top_k=sampling.top_k, max_new_tokens=sampling.max_new_tokens,
                                 eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
                                 stopping_criteria=StoppingCriteriaList([hook]), **extra)
        if hook.cancelled:
            raise GenerationCancelled("generation gave way to another request")
        latency_ms = (time.perf_counter() - started) * 1000
        new_tokens = out[:, batch["input_ids"].shape[1]:]  # (B, T_new)
        lengths, finished = response_lengths(new_tokens, eos)
        answers = [new_tokens[row, :lengths[row]] for row in range(len(policies))]
        return self._records(prompt, policies, answers, finished, sampling, seed, latency_ms)

    def _generate_llamacpp(self, prompt: Prompt, policies: list[Policy], sampling: SamplingSettings, seed: int,
                           on_step=None, should_stop=None) -> list[Generation]:
        """The same pair from llama.cpp (core/llamacpp.py): one row after the other, row i seeded seed + i."""
        tokenizer, max_new = self.loaded.tokenizer, sampling.max_new_tokens
        prompt_ids = tokenizer(chat_text(tokenizer, prompt.text, self.system_prompt),
                               add_special_tokens=False)["input_ids"]
        eos = eos_ids(self.loaded.model, tokenizer)
        answers, finished = [], []
        started = time.perf_counter()
        for row, policy in enumerate(policies):
            report = (lambda step, row=row: on_step(row * max_new + step, len(policies) * max_new)) if on_step else None
            ids, ended, cancelled = self.loaded.llamacpp.sampler(policy.adapter).sample(
                prompt_ids, sampling, seed + row, eos, report, should_stop)
            if cancelled:
                raise GenerationCancelled("generation gave way to another request")
            answers.append(ids)
            finished.append(ended)
        latency_ms = (time.perf_counter() - started) * 1000
        return self._records(prompt, policies, answers, finished, sampling, seed, latency_ms)

    @_exclusive
    def answer_all(self, requests: list[str], adapter: str | None, sampling: SamplingSettings, seed: int
                   ) -> list[Completion]:
        """One policy's answers to many requests (evaluation, best of n): the base (adapter None) or an adapter,
        added here if new, through the engine the model was loaded with; request i seeded seed + i (llama.cpp) or
        the batch from `seed` (`complete`)."""
        if adapter is not None:
            self.add_adapter(adapter)
        model, tokenizer = self.loaded.model, self.loaded.tokenizer
        if self.loaded.llamacpp:
            return complete_llamacpp(self.loaded.llamacpp.sampler(adapter), model, tokenizer, requests, sampling,
                                     seed, self.system_prompt)
        if adapter is None and self.adapters:
            with model.disable_adapter():
                return complete(model, tokenizer, requests, sampling, seed, system_prompt=self.system_prompt)
        if adapter is not None:
            model.set_adapter(self.adapters[adapter])
        return complete(model, tokenizer, requests, sampling, seed, system_prompt=self.system_prompt)

    def _records(self, prompt, policies, answers, finished, sampling, seed, latency_ms) -> list[Generation]:
        generations = []
        for policy, ids, ended in zip(policies, answers, finished):
            answer = self.loaded.tokenizer.decode(ids, skip_special_tokens=True).strip()
            parsed = parse_list(answer)
            generations.append(Generation(
                prompt=prompt, text=answer, policy=policy, system_prompt=self.system_prompt, sampling=sampling,
                seed=seed, num_tokens=len(ids), finished=ended, latency_ms=latency_ms,
                well_formed=parsed.well_formed, n_items=len(parsed.items)))
        return generations


@dataclass
class Completion:
    request: str
    text: str
    num_tokens: int
    finished: bool


def completion_batch_size(device: torch.device) -> int:
    """Requests per `generate` call when answering many. On a CPU, 16 (what every CPU benchmark here measured) keeps
    a batch from waiting long on its longest list. On a GPU a small model's step is bound by launching kernels (the
    H200 check: ~45 ms a token at batch 2, while PPO's whole rollout of 64 lists of up to 160 tokens took ~8.5 s, at
    most ~55 ms a token; bench/README.md, "The GPU path"), so one batch for every request is nearly free."""
    return 128 if device.type == "cuda" else 16


def complete_llamacpp(sampler, model, tokenizer, requests: list[str], sampling: SamplingSettings, seed: int,
                      system_prompt: str = SYSTEM_PROMPT) -> list[Completion]:
    """`complete` through one policy's llama.cpp sampler (core/llamacpp.py), 16 requests decoded together, request
    i seeded seed + i."""
    prompts = [tokenizer(chat_text(tokenizer, r, system_prompt), add_special_tokens=False)["input_ids"]
               for r in requests]
    answers = sampler.sample_many(prompts, sampling, [seed + i for i in range(len(requests))],
                                  eos_ids(model, tokenizer))
    return [Completion(request, tokenizer.decode(ids, skip_special_tokens=True).strip(), len(ids), finished)
            for request, (ids, finished) in zip(requests, answers)]


def complete(model, tokenizer, requests: list[str], sampling: SamplingSettings, seed: int,
             batch_size: int | None = None, system_prompt: str = SYSTEM_PROMPT) -> list[Completion]:
    """One sampled answer per request, in left-padded batches (evaluation: many prompts, one policy); batch_size
    None: completion_batch_size of the model's device."""
    eos = eos_ids(model, tokenizer)
    device = next(model.parameters()).device
    batch_size = batch_size or completion_batch_size(device)
    torch.manual_seed(seed)
    completions = []
    for start in range(0, len(requests), batch_size):
        chunk = requests[start:start + batch_size]
        batch = tokenizer([chat_text(tokenizer, r, system_prompt) for r in chunk], return_tensors="pt",
                          padding=True, add_special_tokens=False).to(device)
        with torch.inference_mode():
            out = model.generate(**batch, do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                                 top_k=sampling.top_k, max_new_tokens=sampling.max_new_tokens,
                                 eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
        new_tokens = out[:, batch["input_ids"].shape[1]:]  # (B, T_new)
        lengths, finished = response_lengths(new_tokens, eos)
        for row, request in enumerate(chunk):
            text = tokenizer.decode(new_tokens[row, :lengths[row]], skip_special_tokens=True).strip()
            completions.append(Completion(request, text, lengths[row], finished[row]))
    return completions
