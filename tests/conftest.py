"""Shared fixtures: a tiny random causal LM with its own small tokenizer, built once per session (no downloads)."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

from core.model import EMBEDDED_MODEL_DIR

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
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model_dir):
    from core.model import load

    return load(tiny_model_dir, device="cpu")


@pytest.fixture
def store(tmp_path):
    from core.store import Store

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


def run_cli(*args: str, timeout: float = 300, check: bool = True):
    """`python -m core ARGS` in a fresh process, as a user would type it; returns the CompletedProcess."""
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-m", "core", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=Path(__file__).resolve().parent.parent)
    if check and done.returncode != 0:
        raise AssertionError(f"python -m core {' '.join(map(str, args))} exited {done.returncode}:\n"
                             f"{done.stderr[-3000:]}")
    return done


def write_preference_votes(path, n: int, seed: int = 0) -> str:
    """A JSONL of `n` votes where a five-item numbered list always beats a one-line non-list (clear taste)."""
    import json
    import random

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


@pytest.fixture(scope="session")
def preference_db(tmp_path_factory):
    """A database holding 48 clear-cut votes on custom prompts, plus one tie."""
    from core.preferences import import_votes
    from core.store import Store

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
            "--batch-size", "8", "--learning-rate", "3e-3", "--eval-fraction", "0.4", "--output-dir", out)
    return out
