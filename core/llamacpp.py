"""The llama.cpp sampling engine: each policy (the base, or the base with a LoRA adapter merged in) written once to a
GGUF file (core/gguf_writer.py) and sampled by llama.cpp through llama-cpp-python, on a CPU.

    python -m apps.arena --engine llamacpp        python -m core eval ... --engine llamacpp      (auto picks it)
    python -m core train ppo ... --sampling-engine llamacpp                                     (auto picks it)

Why: at batch 1-2 PyTorch spends ~35 ms a token on the 135M model on 2 cores (int8 weights included), most of it
not in the weight reads (bench/README.md, "A static KV cache and torch.compile"); llama.cpp's fused CPU kernels
take ~7 ms (bench/sampling_speed.py prints the engines side by side). What is written here and why:
1. The sampler chain is built by hand as temperature -> top-k -> top-p -> draw, the order transformers applies them;
   llama-cpp-python's default chain applies top-p before temperature and adds min-p 0.05, another distribution.
2. `sample_many` decodes many answers together with continuous batching through llama.cpp's C API (as its server
   does); llama-cpp-python's `Llama` object holds one sequence.
Only sampling uses it: training stages score, and PPO computes its old log-probabilities, with the fp32 policy.
"""
from __future__ import annotations

import atexit
import ctypes
import json
import logging
import signal
import subprocess
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core.gguf_writer import gguf_cache_dir, policy_gguf, write_lora_gguf
from core.paths import write_whole
from core.records import SamplingSettings

log = logging.getLogger(__name__)
N_CTX = 2048  # prompt + answer tokens one sampler holds; the KV cache for SmolLM2 is ~45 MB at this size

def llama_cpp_available() -> bool:
    try:
        import llama_cpp  # noqa: F401  (heavy: loads the shared library)
    except ImportError:
        return False
    return True


# decodes a few tokens of argv[1] and exits 0; run in a child process by `crash_reason`
PROBE = """import sys
from llama_cpp import Llama
model = Llama(sys.argv[1], n_ctx=64, n_threads=1, verbose=False)
model.eval(model.tokenize(b"1. Apples", add_bos=False)[:4])
"""
PROBE_TIMEOUT_S = 120
_verdicts: dict[str, str | None] = {}


def library_build() -> str:
    """Names this build of llama.cpp: the package's version and its CPU library's size and time."""
    import llama_cpp

    lib = Path(llama_cpp.__file__).parent / "lib"
    files = sorted(lib.glob("libggml-cpu*")) or sorted(lib.glob("libllama*")) or [Path(llama_cpp.__file__)]
    stat = files[0].stat()
    return f"{llama_cpp.__version__}-{stat.st_size}-{stat.st_mtime_ns}"


def crash_reason(gguf: Path | None, cache_dir: Path | None = None) -> str | None:
    """Why llama.cpp must not sample on this machine, or None: a child process decodes a few tokens of `gguf` (the
    embedded model's package ships one; None skips the check), once per build of the library (the verdict is kept in
    cache_dir/llama-cpp-probe.json). Why a child: a build that does not fit the CPU dies with a segmentation fault,
    and would take the arena, an evaluation or PPO down with it (seen: llama-cpp-python compiled with -march=native on
    an Intel Xeon with AMX under KVM, 2026-12-06); `--engine auto` then samples with int8 weights instead."""
    if gguf is None or not Path(gguf).exists():
        return None
    build = library_build()
    if build in _verdicts:
        return _verdicts[build]
    path = (cache_dir or gguf_cache_dir()) / "llama-cpp-probe.json"
    try:
        kept = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):  # unreadable: probe again and write it anew
        kept = {}
    if build not in kept:
        kept[build] = _probe(Path(gguf))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_whole(path, lambda tmp: tmp.write_text(json.dumps(kept, indent=1)))
    _verdicts[build] = kept[build]
    if kept[build]:
        log.warning("llama.cpp is not used: %s", kept[build])  # once a process: `auto` samples with int8 instead
    return kept[build]


def _probe(gguf: Path) -> str | None:
    try:
        done = subprocess.run([sys.executable, "-c", PROBE, str(gguf)], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"this llama.cpp build did not decode 4 tokens in {PROBE_TIMEOUT_S} s"
    if done.returncode == 0:
        return None
    how = (f"died with {signal.Signals(-done.returncode).name}" if done.returncode < 0 else
           f"failed ({(done.stderr.strip().splitlines() or ['exit code %d' % done.returncode])[-1][:200]})")
    import llama_cpp

    return (f"this llama.cpp build {how} decoding a test model; rebuild it: CMAKE_ARGS=-DGGML_NATIVE=OFF "
            f"{sys.executable} -m pip install --force-reinstall --no-deps --no-cache-dir "
            f"llama-cpp-python=={llama_cpp.__version__}")


def sampler_chain(sampling: SamplingSettings, seed: int):
    """temperature -> top-k -> top-p -> draw, transformers' order (module docstring, 1.); greedy at temperature 0."""
    import llama_cpp as lc

    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    if sampling.temperature <= 0:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
        return chain
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(sampling.temperature))
    if sampling.top_k > 0:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(sampling.top_k))
    if sampling.top_p < 1.0:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(sampling.top_p, 1))
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed % 2**32))
    return chain


@dataclass
class LlamaCppSampler:
    """One policy's GGUF loaded in llama.cpp: `sample` one answer (the arena's pairs: progress and cancelling per
    token), or `sample_many` answers decoded together (evaluation, PPO's rollouts)."""
    path: Path
    threads: int = field(default_factory=torch.get_num_threads)
    lora: object = field(default=None, init=False)  # a loaded llama.cpp LoRA adapter that sample_many applies

    def __post_init__(self):
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(self.path), n_ctx=N_CTX, n_batch=512, n_threads=self.threads,
                         n_threads_batch=self.threads, verbose=False)
        atexit.register(self.llm.close)  # before interpreter teardown, which makes Llama.__del__ fail noisily

    def use_lora(self, path: Path | None) -> None:
        """Apply the LoRA adapter file at `path` (write_lora_gguf) in what `sample_many` samples from now on."""
        import llama_cpp as lc

        if self.lora is not None:
            lc.llama_adapter_lora_free(self.lora)
        self.lora = lc.llama_adapter_lora_init(self.llm.model, str(path).encode()) if path else None
        if path and not self.lora:
            raise RuntimeError(f"llama.cpp could not load the LoRA adapter {path}")

    def sample(self, prompt_ids: list[int], sampling: SamplingSettings, seed: int, eos: list[int],
               on_step=None, should_stop=None) -> tuple[list[int], bool, bool]:
        """(answer token ids up to and including the first EOS, whether it ended with EOS, whether `should_stop`
        cancelled it). `on_step(step)` is called after every token."""
        import llama_cpp as lc

        if len(prompt_ids) + sampling.max_new_tokens > N_CTX:
            raise ValueError(f"the prompt has {len(prompt_ids)} tokens; with {sampling.max_new_tokens} new ones it "
                             f"exceeds the llama.cpp engine's {N_CTX}: shorten the request")
        chain = sampler_chain(sampling, seed)
        answer: list[int] = []
        try:
            self.llm.reset()
            self.llm.eval(prompt_ids)
            for step in range(1, sampling.max_new_tokens + 1):
                if should_stop and should_stop():  # before each token: a list that would end at once still gives way
                    return answer, False, True
                token = lc.llama_sampler_sample(chain, self.llm.ctx, -1)
                answer.append(token)
                if on_step:
                    on_step(step)
                if token in eos:
                    return answer, True, False
                self.llm.eval([token])
        finally:
            lc.llama_sampler_free(chain)
        return answer, False, False

    def sample_many(self, prompts: list[list[int]], sampling: SamplingSettings, seeds: list[int], eos: list[int],
                    slots: int = 16) -> list[tuple[list[int], bool]]:
        """(answer ids up to and including the first EOS, whether it ended) per prompt, decoded together in up to
        `slots` sequences at a time; a slot whose answer ends takes the next prompt at once (continuous batching,
        as in llama.cpp's own server). On 2 cores 72 held-out lists take ~31 s this way against ~55 s one at a
        time (bench/sampling_speed.py). Seeds are per prompt; with a quantised file, which prompts share a batch
        can still move a near-tie, as batched kernels round differently (exact with F32 weights: the tests)."""
        import llama_cpp as lc

        # 1. a context on the loaded weights with one KV cache for all slots (separate caches measured 1.6x slower
        # here), and one sampler chain per prompt
        slots = max(1, min(slots, len(prompts)))
        longest = max(map(len, prompts))
        params = lc.llama_context_default_params()
        params.n_seq_max, params.kv_unified = slots, True
        params.n_ctx = slots * -(-(longest + sampling.max_new_tokens) // 256) * 256
        params.n_batch = params.n_ubatch = max(longest, slots)
        params.n_threads = params.n_threads_batch = self.threads
        ctx = lc.llama_init_from_model(self.llm.model, params)
        if self.lora is not None:
            adapters, scales = (lc.llama_adapter_lora_p_ctypes * 1)(self.lora), (ctypes.c_float * 1)(1.0)
            lc.llama_set_adapters_lora(ctx, adapters, 1, scales)
        step = lc.llama_batch_init(slots, 0, 1)  # one token a slot
        whole = lc.llama_batch_init(longest, 0, 1)  # one prompt
        chains = [sampler_chain(sampling, seed) for seed in seeds]
        answers: list[list[int]] = [[] for _ in prompts]
        ended = [False] * len(prompts)
        waiting, in_slot = deque(range(len(prompts))), {}

        def put(batch, token: int, position: int, slot: int, wants_logits: bool) -> None:
            i = batch.n_tokens
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, position, 1, wants_logits
            batch.seq_id[i][0] = slot
            batch.n_tokens += 1

        def decode(batch) -> None:
            if lc.llama_decode(ctx, batch) != 0:
                raise RuntimeError("llama.cpp could not decode the batch (out of KV cache?)")

        def take(slot: int, p: int, row: int) -> bool:
            """Sample prompt p's next token from logits row `row` of the last decode; queue it for the next step
            and return True, or free the slot and return False."""
            token = lc.llama_sampler_sample(chains[p], ctx, row)
            answers[p].append(token)
            ended[p] = token in eos
            if not ended[p] and len(answers[p]) < sampling.max_new_tokens:
                put(step, token, len(prompts[p]) + len(answers[p]) - 1, slot, True)
                return True
            del in_slot[slot]
            lc.llama_memory_seq_rm(lc.llama_get_memory(ctx), slot, -1, -1)
            return False

        def fill(slot: int) -> None:
            """Decode waiting prompts into `slot`, each in a decode of its own and its first token sampled at once,
            until one's answer goes on."""
            while waiting:
                p = in_slot[slot] = waiting.popleft()
                whole.n_tokens = 0
                for i, t in enumerate(prompts[p]):
                    put(whole, t, i, slot, i == len(prompts[p]) - 1)
                decode(whole)
                if take(slot, p, len(prompts[p]) - 1):
                    return

        try:
            step.n_tokens = 0
            for slot in range(slots):
                fill(slot)
            while step.n_tokens:
                # 2. one decode for every running answer's last token
                decode(step)
                running = [(step.seq_id[i][0], i) for i in range(step.n_tokens)]  # (slot, logits row)
                step.n_tokens = 0
                # 3. each samples (all before any new prompt's decode replaces these logits); finished ones make room
                freed = [slot for slot, row in running if not take(slot, in_slot[slot], row)]
                for slot in freed:
                    fill(slot)
        finally:
            for chain in chains:
                lc.llama_sampler_free(chain)
            lc.llama_batch_free(step)
            lc.llama_batch_free(whole)
            lc.llama_free(ctx)
        return list(zip(answers, ended))

    def logits(self, ids: list[int]) -> np.ndarray:
        """(len(ids), vocab) next-token logits after each prefix of `ids` (the quality check and the tests)."""
        import llama_cpp as lc

        rows = []
        self.llm.reset()
        for token in ids:  # one token at a time: llama-cpp-python keeps only the last row unless built with all
            self.llm.eval([token])
            last = lc.llama_get_logits_ith(self.llm.ctx, -1)
            rows.append(np.ctypeslib.as_array(last, shape=(self.llm.n_vocab(),)).copy())
        return np.stack(rows)


@dataclass
class LoraRollouts:
    """PPO's rollouts through llama.cpp: the base's GGUF loaded once; before each batch the policy's LoRA is written
    (a few MB, write_lora_gguf) and applied, so nothing of the 135M weights is rewritten per update."""
    sampler: LlamaCppSampler
    lora_path: Path

    def sample(self, lora: dict, config, prompts: list[list[int]], sampling: SamplingSettings, seed: int,
               eos: list[int]) -> list[list[int]]:
        """One answer per prompt from base + `lora` (PolicyValue.policy_lora); answer i seeded from (seed, i)."""
        self.sampler.use_lora(write_lora_gguf(lora, config, self.lora_path))
        seeds = [(seed * 1_000_003 + i) % 2**32 for i in range(len(prompts))]
        return [ids for ids, _ in self.sampler.sample_many(prompts, sampling, seeds, eos)]


@dataclass
class LlamaCppPolicies:
    """The samplers of one base model and its adapters, each written to GGUF and loaded on first use."""
    base: str
    tokenizer: object
    quantize: bool = True
    cache_dir: Path | None = None  # None: gguf_cache_dir()
    samplers: dict = field(default_factory=dict)  # adapter path or None -> LlamaCppSampler

    def sampler(self, adapter: str | None = None) -> LlamaCppSampler:
        if adapter not in self.samplers:
            path = policy_gguf(self.base, adapter, self.tokenizer, self.quantize, self.cache_dir)
            self.samplers[adapter] = LlamaCppSampler(path)
        return self.samplers[adapter]
