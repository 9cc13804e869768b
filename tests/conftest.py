"""Shared fixtures: a tiny random causal LM with its own small tokenizer, built once per session (no downloads)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # before torch loads, as core/__init__.py sets it for every process
# the llama.cpp engine's GGUF files of the tests' tiny models go to a temporary folder, not models/gguf/
os.environ.setdefault("RLHF_GGUF_CACHE", tempfile.mkdtemp(prefix="rlhf-gguf-"))
# `make test` runs two pytest-xdist workers, one a core: each worker, and every process it starts, keeps to one
# thread (torch's pool and llama.cpp's follow torch.get_num_threads()), so the two never spin against each other.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if XDIST_WORKER:
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest
import torch

from core.model import EMBEDDED_MODEL_DIR
from tests.helpers import build_tiny_model, run_cli, write_preference_votes

REPO = Path(__file__).resolve().parent.parent
if XDIST_WORKER:
    torch.set_num_threads(1)

# The test files that share the benchmark loop's fixture (`loop_run`, ~40 s to build) run on one worker, and first:
# they are the longest (~6 of the suite's ~17.7 serial minutes), so a worker that started them late would leave the
# other idle at the end. Every other file is a group of its own (`--dist loadgroup`, Makefile): its module fixtures
# are built once.
LOOP_FILES = ("test_rounds_bench.py", "test_loop.py")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups into the tests' ids
def pytest_collection_modifyitems(config, items):
    for item in items:
        name = item.path.name
        item.add_marker(pytest.mark.xdist_group("loop" if name in LOOP_FILES else name))
    items.sort(key=lambda item: item.path.name not in LOOP_FILES)  # stable: the files' own order otherwise


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model_dir):
    from core.model import load

    return load(tiny_model_dir, device="cpu")


@pytest.fixture
def store(tmp_path):
    from core.store.database import Store

    return Store(tmp_path / "test.duckdb")


@pytest.fixture(scope="session")
def embedded_model_dir():
    if not (EMBEDDED_MODEL_DIR / "model.safetensors").exists():
        pytest.skip("embedded model not prepared: run `make setup`")
    return str(EMBEDDED_MODEL_DIR)


@pytest.fixture(scope="session")
def tiny_adapter_dir(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter on the tiny model whose B matrices are large, so it visibly changes what the model samples."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 2.0)
    path = tmp_path_factory.mktemp("tiny-adapter")
    peft_model.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def preference_db(tmp_path_factory):
    """A database holding 48 clear-cut votes on custom prompts, plus one tie."""
    from core.store.database import Store
    from core.store.preferences import import_votes

    folder = tmp_path_factory.mktemp("prefs")
    store = Store(folder / "prefs.duckdb")
    import_votes(store, write_preference_votes(folder / "votes.jsonl", 48))
    tie = folder / "tie.jsonl"
    tie.write_text('{"prompt": "Top 5 rivers", "response_a": "1. Nile", "response_b": "1. Amazon", "choice": "tie"}\n')
    import_votes(store, tie)
    return str(store.path)


@pytest.fixture(scope="session")
def tiny_reward_run(tiny_model_dir, preference_db, tmp_path_factory):
    """A reward model trained on the tiny base through the real CLI (a few seconds)."""
    out = tmp_path_factory.mktemp("reward-run") / "run"
    run_cli("train", "reward", "--base-model", tiny_model_dir, "--db", preference_db, "--max-steps", "10",
            "--batch-size", "8", "--learning-rate", "3e-3", "--eval-fraction", "0.4", "--precision", "bf16",
            "--output-dir", out)  # bf16 mixed precision on every CPU, so the scores after it are checked there too
    return out


@pytest.fixture(scope="session")
def loop_run(tiny_model_dir, tmp_path_factory):
    """bench/loop.py on the tiny model: 12 forced-choice votes in the real arena, two steps per stage; (its folder,
    loop.json). Shared by the loop's and the rounds' benchmark tests, which read it and write beside it."""
    folder = tmp_path_factory.mktemp("loop")
    args = ["--out", folder / "out", "--runs-dir", folder / "runs", "--base-model", tiny_model_dir, "--votes", "12",
            "--demonstrations", "2", "--rate", "1", "--forced-choice", "true", "--eval-prompts", "4",
            "--eval-max-new-tokens", "12",
            "--sft-args=--eval-prompts 0 --max-steps 2 --batch-size 2",
            "--reward-args=--eval-fraction 0.5 --max-steps 2 --batch-size 2 --max-length 512",
            "--ppo-args=--total-updates 2 --batch-size 4 --mini-batches 2 --ppo-epochs 1 --response-length 12 "
            "--norm-samples 4 --eval-every 1 --eval-prompts 3"]
    done = subprocess.run([sys.executable, "bench/loop.py", *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return folder, json.loads((folder / "out" / "loop.json").read_text())


@pytest.fixture(params=[torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def trainer(request, tiny_model_dir, tiny_reward_run):
    """PPO's machinery for one update on the tiny model, with the base in fp32 and in bf16 (--precision): the science
    in test_ppo.py and test_ppo_rollout.py must hold in both."""
    from accelerate import Accelerator
    from peft import LoraConfig

    from core.model import load_causal_lm, load_tokenizer
    from core.train.ppo import policy_value
    from core.train.ppo.trainer import PPOConfig, PPOTrainer

    cfg = PPOConfig(reward_model=str(tiny_reward_run), batch_size=4, mini_batches=2, ppo_epochs=2,
                    response_length=12, learning_rate=1e-3)
    tok = load_tokenizer(tiny_model_dir)
    pv = policy_value.build(load_causal_lm(tiny_model_dir, torch.device("cpu"), dtype=request.param), tok,
                            LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
                            None, str(tiny_reward_run))
    optimizer = torch.optim.AdamW([p for p in pv.parameters() if p.requires_grad], lr=cfg.learning_rate)
    return PPOTrainer(cfg, Accelerator(cpu=True), pv, optimizer, tok, scorer=None)
