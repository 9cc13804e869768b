"""Helpers the tests share, imported one way: `from tests.helpers import build_tiny_model, run_cli, ...`.

The fixtures built from them live in tests/conftest.py.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from bench.loop import free_port
from core.runs import RunFolder, read_jsonl, read_status

REPO = Path(__file__).resolve().parent.parent

# A ChatML template like SmolLM2's, so prompts are built exactly as for the real model.
CHAT_TEMPLATE = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "1. Roast turkey - a classic centrepiece.\n2. Mashed potatoes - creamy.\n3. Stuffing - savoury.\n"
    "4. Green beans - bright.\n5. Pumpkin pie - sweet finish.",
    "Top 5 ideas for a rainy weekend: books, films, board games, baking, museums.",
    "You write top-5 lists. Answer with exactly five numbered items, one per line.",
    "system user assistant Give me 5 tips for study, travel, work, health, money, sport, kids, tech, home.",
]


def build_tiny_model(path, seed: int = 0):
    """A 2-layer, 64-dim Llama and a ~300-token BPE tokenizer with a chat template, saved to `path`."""
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(CORPUS * 4, trainers.BpeTrainer(
        vocab_size=320, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", bos_token="<|im_start|>",
                                        pad_token="<|im_end|>", chat_template=CHAT_TEMPLATE)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def run_cli(*args: str, timeout: float = 300, check: bool = True):
    """`python -m core ARGS` in a fresh process, as a user would type it; returns the CompletedProcess."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-m", "core", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)
    if check and done.returncode != 0:
        raise AssertionError(f"python -m core {' '.join(map(str, args))} exited {done.returncode}:\n"
                             f"{done.stderr[-3000:]}")
    return done


def stage_env() -> dict:
    """A stage process's environment, clear of the caller's RLHF_* settings. One thread: the tiny model gains
    nothing from two, and on a shared 2-core machine two threads spin against each other (a tiny forward took 1.1 s
    instead of 0.03 s)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RLHF_BASE_MODEL", "RLHF_DEVICE", "RLHF_DB")}
    return env | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                  "OMP_NUM_THREADS": "1"}


def stage_cli(stage: str, *args, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m core train STAGE ARGS` in a fresh process (`stage_env`), to its end."""
    done = subprocess.run([sys.executable, "-m", "core", "train", stage, *map(str, args)], cwd=REPO, env=stage_env(),
                          capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def start_stage(stage: str, *args) -> subprocess.Popen:
    """`python -m core train STAGE ARGS` started in the background (to be stopped or killed while it runs)."""
    return subprocess.Popen([sys.executable, "-m", "core", "train", stage, *map(str, args)], cwd=REPO,
                            env=stage_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_step(run: Path, step: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until the run's metrics.jsonl has logged `step` (the process must still be alive meanwhile)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(m.get("step", 0) >= step for m in read_jsonl(RunFolder(run).metrics)):
            return
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        time.sleep(0.02)
    raise AssertionError(f"no step {step} within {timeout} s")


def stopped_after_a_step(stage: str, run: Path, *args) -> dict:
    """Start STAGE with ARGS writing to `run`, send SIGTERM (the dashboard's Stop) once it has logged a step, and
    return its final status; the process must end cleanly."""
    proc = start_stage(stage, *args, "--output-dir", run)
    wait_for_step(run, 1, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()[-2000:]
    return read_status(run)


def write_preference_votes(path, n: int, seed: int = 0) -> str:
    """A JSONL of `n` votes where a five-item numbered list always beats a one-line non-list (clear taste)."""
    rng = random.Random(seed)
    things = ["fruits", "films", "books", "games", "parks", "songs", "snacks", "hikes", "apps", "gifts"]
    rows = []
    for i in range(n):
        topic = things[i % len(things)]
        good = "\n".join(f"{k}. {topic} pick {rng.randint(1, 99)} - worth it." for k in range(1, 6))
        bad = f"Here are some {topic} ideas, like {rng.randint(1, 99)} and more! Enjoy"
        good_first = rng.random() < 0.5
        rows.append({"prompt": f"Top 5 {topic} for occasion {i}", "response_a": good if good_first else bad,
                     "response_b": bad if good_first else good, "choice": "a" if good_first else "b"})
    with open(path, "w") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


def run_files(run_dir) -> set[str]:
    """Every file in a run folder, as paths relative to it (what a finished run must hold, exactly)."""
    run_dir = Path(run_dir)
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}


ADAPTER_FILES = {"adapter/README.md", "adapter/adapter_config.json", "adapter/adapter_model.safetensors"}


def tensorboard_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """The scalars TensorBoard would plot from a folder of event files: {tag: [(step, value), ...]}."""
    from tensorboard.backend.event_processing.event_accumulator import (
        EventAccumulator,  # only these tests need it
    )

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def wait_for(url: str, process: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        assert process.poll() is None, f"the server exited with {process.returncode}"
        try:
            urllib.request.urlopen(url, timeout=5)
            return
        except OSError as err:
            if getattr(err, "code", None) in (401, 403):  # up, behind a password
                return
            time.sleep(0.5)
    raise TimeoutError(url)


@contextmanager
def serve(argv: list[str], url_path: str, env: dict, log_dir: Path):
    """`python ARGV` as a server on a free port (PORT in argv), up once `url_path` answers: yields (url, process).
    Its output goes to a log in `log_dir`; it is stopped on the way out."""
    port = free_port()
    log = open(Path(log_dir) / f"server-{port}.log", "w")
    process = subprocess.Popen([sys.executable, *[a.replace("PORT", str(port)) for a in argv]], cwd=REPO,
                               env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(f"http://127.0.0.1:{port}{url_path}", process)
        yield f"http://127.0.0.1:{port}", process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=20)
        log.close()
