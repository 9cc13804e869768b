"""SFT: loss on the list tokens only, the demonstrations snapshot holds eval out, and the real CLI for two steps on
the tiny model (run folder contents, LoRA weights trained, base weights untouched, bad input as one line)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from core import config
from core.collect.generate import SYSTEM_PROMPT
from core.collect.library import load_prompts, load_seed_demonstrations
from core.model import load_tokenizer
from core.records import Prompt
from core.runs import read_json, read_jsonl, read_status
from core.train.sft import SFTConfig, tokenize_demonstration
from core.train.snapshot import split_for, take_demonstrations
from tests.helpers import ADAPTER_FILES, run_files

REPO = Path(__file__).resolve().parent.parent
REQUEST = "Top 5 board games for two"
LIST = "1. Chess - deep.\n2. Go - deeper.\n3. Hive - quick.\n4. Patchwork - cosy.\n5. Jaipur - trading."
LORA_TARGETS = {"q_proj", "k_proj", "v_proj", "o_proj"}


def run_cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RLHF_BASE_MODEL", "RLHF_DEVICE", "RLHF_DB")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", RLHF_RUNS_DIR=str(tmp_path / "runs"))
    return subprocess.run([sys.executable, "-m", "core", "train", "sft", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


# ---- tokenisation --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


def test_the_mask_covers_exactly_the_list_and_eos(tokenizer):
    example = tokenize_demonstration(tokenizer, REQUEST, f"  {LIST}\n", max_length=1024)
    ids, mask = example["input_ids"], example["completion_mask"]

    assert len(ids) == len(mask) and mask == sorted(mask)  # zeros, then ones
    prompt_ids = [i for i, m in zip(ids, mask) if m == 0]
    list_ids = [i for i, m in zip(ids, mask) if m == 1]
    # The prompt as generation sees it (the conftest's ChatML template), up to the assistant header: no loss there.
    assert tokenizer.decode(prompt_ids) == (f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"
                                            f"<|im_start|>user\n{REQUEST}<|im_end|>\n<|im_start|>assistant\n")
    assert list_ids[-1] == tokenizer.eos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(list_ids[:-1]) == LIST  # stripped of the surrounding whitespace
    assert tokenizer.eos_token_id not in list_ids[:-1]


def test_truncation_keeps_ids_and_mask_aligned(tokenizer):
    full = tokenize_demonstration(tokenizer, REQUEST, LIST, max_length=1024)
    prompt_len = full["completion_mask"].count(0)

    cut = tokenize_demonstration(tokenizer, REQUEST, LIST, max_length=prompt_len + 3)
    assert cut["input_ids"] == full["input_ids"][:prompt_len + 3]
    assert cut["completion_mask"] == [0] * prompt_len + [1, 1, 1]  # EOS is cut off with the list's tail


def test_trl_turns_the_mask_into_labels_on_the_list_only(tiny_model_dir, tmp_path):
    """Guards the hand-off to TRL: if its pre-tokenised format changed, the loss would silently cover the prompt."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    from core.model import load
    from core.train.trainer_run import trainer_arguments

    loaded = load(tiny_model_dir, "cpu")  # a private copy: the trainer wraps the model with LoRA in place
    example = tokenize_demonstration(loaded.tokenizer, REQUEST, LIST, max_length=512)
    args = TRLSFTConfig(**trainer_arguments(loaded.device, 0, tmp_path, max_steps=1, max_length=512,
                                            completion_only_loss=True))
    trainer = SFTTrainer(model=loaded.model, args=args, train_dataset=Dataset.from_list([example]),
                         processing_class=loaded.tokenizer, peft_config=LoraConfig(r=4, target_modules=["q_proj"]))

    batch = next(iter(trainer.get_train_dataloader()))
    labels, input_ids = batch["labels"][0].tolist(), batch["input_ids"][0].tolist()
    assert input_ids == example["input_ids"]
    assert labels == [i if m else -100 for i, m in zip(example["input_ids"], example["completion_mask"])]


# ---- the demonstrations snapshot -----------------------------------------------------------------------------------
def test_take_demonstrations_keeps_seed_and_train_split_arena_lists_only(store, tmp_path):
    train_prompt, eval_prompt = load_prompts(split="train")[0], load_prompts(split="eval")[0]
    store.record_demonstration(train_prompt, LIST, "alice")
    store.record_demonstration(eval_prompt, "1. held\n2. out\n3. of\n4. training\n5. data", "alice")
    seed = load_seed_demonstrations()
    copied = next(d for d in seed if d.prompt.split == "train")
    store.record_demonstration(copied.prompt, copied.response, "bob")  # an exact copy of a seed list: one row, bob's
    train_seed = [d for d in seed if d.prompt.split == "train"]

    demos, lineage = take_demonstrations(store, tmp_path, seed_lists="keep")

    assert set(demos.split) == {"train"} and eval_prompt.text not in set(demos.prompt)
    arena = demos[demos.source != "seed"]
    assert arena[["prompt", "response", "source"]].values.tolist() == [[train_prompt.text, LIST, "arena_edit"],
                                                                        [copied.prompt.text, copied.response,
                                                                         "arena_edit"]]
    assert (demos.source == "seed").sum() == len(train_seed) - 1 and len(demos) == len(train_seed) + 1
    pd.testing.assert_frame_equal(pd.read_json(tmp_path / "data" / "demonstrations.jsonl", lines=True), demos)

    assert read_json(tmp_path / "data" / "lineage.json") == lineage
    assert (lineage["demonstrations"], lineage["seed"], lineage["from_arena"]) == (len(demos), len(train_seed) - 1, 2)
    assert lineage["database"] == str(store.path) and lineage["newest_demonstration_at"]


def test_your_lists_replace_the_seed_lists_of_their_requests_and_count_own_weight_times(store, tmp_path):
    train_seed = [d for d in load_seed_demonstrations() if d.prompt.split == "train"]
    mine = train_seed[0].prompt
    store.record_demonstration(mine, LIST, "alice")

    filled, lineage = take_demonstrations(store, tmp_path, seed_lists="fill", own_weight=3)
    assert filled[filled.prompt == mine.text].response.tolist() == [LIST] * 3  # the shipped list for it is gone
    assert (filled.source == "seed").sum() == len(train_seed) - 1 == len(train_seed) - lineage["seed_replaced"]
    assert (lineage["from_arena"], lineage["own_weight"], lineage["demonstrations"]) == (1, 3, len(filled))

    kept, _ = take_demonstrations(store, tmp_path, seed_lists="keep")
    assert sorted(kept[kept.prompt == mine.text].response) == sorted([LIST, train_seed[0].response])
    off, _ = take_demonstrations(store, tmp_path, seed_lists="off")
    assert off.response.tolist() == [LIST]


def test_take_demonstrations_splits_custom_prompts_by_the_hash_of_their_id(store, tmp_path):
    customs = [Prompt(text=f"Top 5 custom request number {n}", source="custom") for n in range(12)]
    for prompt in customs:
        store.record_demonstration(prompt, LIST, "alice")
    expected = [p.text for p in customs if split_for(p.prompt_id, None, 0.2) == "train"]
    assert 0 < len(expected) < len(customs)  # both splits occur, so the filter is exercised

    demos, _ = take_demonstrations(store, tmp_path, seed_lists="off")
    assert sorted(demos.prompt) == sorted(expected) and set(demos.source) == {"arena_edit"}


def test_take_demonstrations_with_nothing_to_take(tmp_path):

    empty, lineage = take_demonstrations(None, tmp_path, seed_lists="off")
    assert empty.empty and list(empty.columns) == ["prompt", "response", "source", "split"]
    assert lineage["demonstrations"] == 0 and "database" not in lineage


# ---- the real CLI, two steps on the tiny model ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def sft_run(tiny_model_dir, tmp_path_factory):
    """Runs the CLI once for the tests below; records the base weights first."""
    tmp = tmp_path_factory.mktemp("sft-cli")
    weights = Path(tiny_model_dir) / "model.safetensors"
    before = {"sha256": hashlib.sha256(weights.read_bytes()).hexdigest(), "tensors": load_file(weights)}
    run_dir, db = tmp / "run", tmp / "arena.duckdb"
    result = run_cli("--preset", "quick", "--base-model", tiny_model_dir, "--max-steps", "2", "--eval-prompts", "2",
                     "--eval-max-new-tokens", "8", "--output-dir", str(run_dir), "--db", str(db), tmp_path=tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"dir": run_dir, "db": db, "stdout": result.stdout, "before": before, "base": tiny_model_dir}


def test_cli_writes_a_complete_run_folder(sft_run):
    run_dir = sft_run["dir"]
    assert f"run folder: {run_dir}" in sft_run["stdout"]
    assert run_files(run_dir) == ADAPTER_FILES | {
        "config.json", "status.json", "metrics.jsonl", "samples.jsonl", "train.log", "data/lineage.json",
        "data/demonstrations.jsonl", "data/prompts_eval.jsonl"}
    for name in ("config.json", "status.json", "metrics.jsonl", "samples.jsonl", "train.log",
                 "data/demonstrations.jsonl", "data/lineage.json", "data/prompts_eval.jsonl",
                 "adapter/adapter_config.json", "adapter/adapter_model.safetensors"):
        assert (run_dir / name).is_file(), f"{name} missing from the run folder"

    status = read_status(run_dir)
    assert (status["state"], status["step"], status["total"], status["message"]) == ("finished", 2, 2,
                                                                                       "adapter saved")


def test_config_json_says_how_the_run_was_made(sft_run):
    saved = read_json(sft_run["dir"] / "config.json")
    assert saved["stage_config"] == "SFTConfig"
    assert saved["base_model_resolved"] == sft_run["base"] and saved["device_name"].startswith("cpu")
    expected = config.build(SFTConfig, "quick", base_model=sft_run["base"], max_steps="2", eval_prompts="2",
                            eval_max_new_tokens="8", output_dir=str(sft_run["dir"]), db=str(sft_run["db"]))
    assert config.load(SFTConfig, sft_run["dir"] / "config.json") == expected  # preset + flags, as run


def test_data_snapshot_is_the_train_split_demonstrations(sft_run):
    data = sft_run["dir"] / "data"
    demos = read_jsonl(data / "demonstrations.jsonl")
    train_seed = [d for d in load_seed_demonstrations() if d.prompt.split == "train"]
    assert len(demos) == len(train_seed) and {d["split"] for d in demos} == {"train"}
    lineage = read_json(data / "lineage.json")
    assert (lineage["demonstrations"], lineage["from_arena"]) == (len(train_seed), 0)
    assert lineage["database"] == str(sft_run["db"]) and lineage["eval_prompts"] == len(load_prompts(split="eval"))


def test_metrics_hold_the_training_loss_and_the_base_vs_tuned_rate(sft_run):
    rows = read_jsonl(sft_run["dir"] / "metrics.jsonl")
    assert all(isinstance(row["step"], int) for row in rows)
    assert all(isinstance(v, (int, float, type(None))) for row in rows for v in row.values())  # flat rows

    losses = {row["step"]: row["train/loss"] for row in rows if "train/loss" in row}
    assert sorted(losses) == [1, 2] and all(0 < loss < 20 for loss in losses.values())
    (evaluation,) = [row for row in rows if "eval/well_formed_base" in row]
    assert evaluation["step"] == 2 and evaluation["eval/prompts"] == 2
    assert 0 <= evaluation["eval/well_formed_base"] <= 1 and 0 <= evaluation["eval/well_formed_tuned"] <= 1
    # the trainer's closing summary carries the process's peak memory (and the GPU's, on a GPU: bench/gpu_check.py)
    (summary,) = [row for row in rows if "summary/runtime" in row]
    assert summary["step"] == 2 and summary["memory/peak_rss_mb"] > 100 and "memory/cuda_peak_mb" not in summary


def test_samples_are_base_and_tuned_lists_for_held_out_prompts(sft_run):
    samples = read_jsonl(sft_run["dir"] / "samples.jsonl")
    held_out = [p.text for p in load_prompts(split="eval")][:2]
    assert [(s["policy"], s["prompt"]) for s in samples] == [("base", held_out[0]), ("base", held_out[1]),
                                                             ("tuned", held_out[0]), ("tuned", held_out[1])]
    assert all(s["step"] == 2 and isinstance(s["text"], str) and isinstance(s["well_formed"], bool)
               for s in samples)


def test_training_changed_the_lora_weights(sft_run):
    adapter = sft_run["dir"] / "adapter"
    tensors = load_file(adapter / "adapter_model.safetensors")
    assert tensors and all(".lora_A." in name or ".lora_B." in name for name in tensors)  # no base weights inside
    lora_b = {name: t for name, t in tensors.items() if ".lora_B." in name}
    assert len(lora_b) == 2 * len(LORA_TARGETS)  # every target module in both layers
    # PEFT starts every lora_B at zero, so a nonzero one was moved by the optimiser.
    assert all(t.abs().max() > 0 for t in lora_b.values())

    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    assert (adapter_config["r"], adapter_config["lora_alpha"]) == (16, 32)
    assert set(adapter_config["target_modules"]) == LORA_TARGETS
    assert adapter_config["base_model_name_or_path"] == sft_run["base"]


def test_training_left_the_base_weights_alone(sft_run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    weights = Path(sft_run["base"]) / "model.safetensors"
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == sft_run["before"]["sha256"]

    original = AutoModelForCausalLM.from_pretrained(sft_run["base"]).eval()
    for name, tensor in sft_run["before"]["tensors"].items():
        assert torch.equal(original.state_dict()[name], tensor), name
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(sft_run["base"]),
                                      sft_run["dir"] / "adapter").eval()
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    with torch.no_grad():
        base_logits = original(ids).logits
        tuned_logits = tuned(ids).logits
        with tuned.disable_adapter():
            disabled_logits = tuned(ids).logits
    assert torch.equal(disabled_logits, base_logits)  # the adapter is the only change
    assert not torch.allclose(tuned_logits, base_logits, atol=0, rtol=0)


# ---- bad input through the CLI -------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, message", [("0", "error: epochs must be positive, e.g. --epochs 3."),
                                            ("three", "error: --epochs: 'three' is not a valid float.")])
def test_a_bad_setting_exits_2_with_one_line_before_anything_is_written(tmp_path, value, message):
    result = run_cli("--epochs", value, "--output-dir", str(tmp_path / "run"), tmp_path=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [message]
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def cuda_on_a_cpu_machine(tiny_model_dir, tmp_path_factory):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    tmp = tmp_path_factory.mktemp("sft-cuda")
    result = run_cli("--device", "cuda", "--base-model", tiny_model_dir, "--output-dir", str(tmp / "run"),
                     "--db", str(tmp / "arena.duckdb"), tmp_path=tmp)
    return result, tmp / "run"


def test_device_cuda_without_a_gpu_exits_2_saying_what_to_pass(cuda_on_a_cpu_machine):
    result, run_dir = cuda_on_a_cpu_machine
    assert result.returncode == 2
    message = "Device 'cuda' was asked for but no CUDA GPU is visible; pass --device cpu."
    assert result.stderr.strip().splitlines()[-1] == f"error: {message}"
    status = read_status(run_dir)  # the attempt is on record, as a failed run
    assert (status["state"], status["message"]) == ("failed", f"ModelLoadError: {message}")


def test_device_cuda_without_a_gpu_prints_no_traceback(cuda_on_a_cpu_machine):
    result, _ = cuda_on_a_cpu_machine
    assert "Traceback" not in result.stderr


def test_a_max_length_that_leaves_no_room_for_the_list_exits_2(tiny_model_dir, tmp_path):
    result = run_cli("--base-model", tiny_model_dir, "--max-length", "64", "--max-steps", "1", "--eval-prompts", "0",
                     "--output-dir", str(tmp_path / "run"), "--db", str(tmp_path / "arena.duckdb"),
                     tmp_path=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "max-length" in result.stderr
