"""DPO: rows tokenised as generation and the reward model see them, the hand-off to TRL (collator, reference,
what trains), and the real CLI on the tiny model, from the base and from an SFT adapter (run folder, TRL's metric
names, the reference is the starting policy, LoRA trained, base untouched, held-out accuracy with counts, bad
input as one line)."""
from __future__ import annotations

import hashlib
import json
import math
from functools import partial
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from core.config import ConfigError, build
from core.model import load_tokenizer
from core.runs import read_json, read_jsonl, read_status
from core.store.database import Store
from core.train.dpo import DPOConfig, preference_rows
from core.train.reward_model import reward_input_ids
from tests.helpers import (
    ADAPTER_FILES,
    run_files,
    stage_cli,
    stopped_after_a_step,
)

REPO = Path(__file__).resolve().parent.parent
SNAPSHOT = {"data/lineage.json", "data/votes.parquet", "data/arena_demonstrations.parquet", "data/ratings.parquet",
            "data/pairs.parquet"}
TRL_METRICS = {"train/loss", "train/rewards/chosen", "train/rewards/rejected", "train/rewards/accuracies",
               "train/rewards/margins", "train/logps/chosen", "train/logps/rejected"}


dpo_cli = partial(stage_cli, "dpo")  # `python -m core train dpo ARGS`, one thread


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---- tokenisation and the hand-off to TRL ---------------------------------------------------------------------------
def test_rows_are_what_the_reward_model_reads_and_a_request_that_fills_max_length_is_left_out(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    pairs = pd.DataFrame({"prompt": ["Top 5 fruits", "Top 5 " + "very long request " * 40],
                          "chosen": [" 1. Apple\n2. Pear ", "1. a"], "rejected": ["Pears!", "b"]})
    short = len(reward_input_ids(tok, "Top 5 fruits", ""))
    rows = preference_rows(tok, pairs, max_length=short + 10)
    assert len(rows) == 1  # the second request alone is longer than that
    (row,) = rows
    assert row["prompt_ids"] + row["chosen_ids"] == reward_input_ids(tok, "Top 5 fruits", " 1. Apple\n2. Pear ")
    assert row["prompt_ids"] + row["rejected_ids"] == reward_input_ids(tok, "Top 5 fruits", "Pears!")
    assert row["chosen_ids"][-1] == row["rejected_ids"][-1] == tok.eos_token_id
    assert tok.decode(row["prompt_ids"]).endswith("<|im_start|>assistant\n")


def test_trl_collates_our_rows_unchanged_and_trains_only_the_policy_adapter(tiny_model_dir, tiny_adapter_dir, tmp_path):
    """Starting from an SFT adapter: TRL keeps a frozen copy ("ref") as the reference; only the loaded adapter
    trains, the base never does."""
    from datasets import Dataset
    from trl import DPOConfig as TRLDPOConfig

    from core.train.dpo import _TokenisedDPOTrainer
    from core.train.start import start_policy
    from core.train.trainer_run import trainer_arguments

    base_name, policy = start_policy("", tiny_adapter_dir, torch.device("cpu"))
    assert base_name == tiny_model_dir  # the SFT adapter's own base
    tok = load_tokenizer(base_name)
    rows = preference_rows(tok, pd.DataFrame({"prompt": ["Top 5 fruits"] * 2, "chosen": ["1. Apple\n2. Pear"] * 2,
                                              "rejected": ["Pears!", "Figs!"]}), 512)
    args = TRLDPOConfig(**trainer_arguments(torch.device("cpu"), 0, tmp_path, max_steps=2, learning_rate=1e-2,
                                            per_device_train_batch_size=2))
    trainer = _TokenisedDPOTrainer(model=policy, args=args, train_dataset=Dataset.from_list(rows),
                                   processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))  # [chosen..., rejected...], right-padded
    for i, ids in enumerate([r["prompt_ids"] + r["chosen_ids"] for r in rows] +
                            [r["prompt_ids"] + r["rejected_ids"] for r in rows]):
        assert batch["input_ids"][i, :len(ids)].tolist() == ids
        assert batch["completion_mask"][i].sum() == len(ids) - len(rows[i % 2]["prompt_ids"])

    model = trainer.model
    assert set(model.peft_config) == {"default", "ref"}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer.train()
    changed = {name for name, p in model.named_parameters() if not torch.equal(before[name], p)}
    assert changed and all(".default." in name and "lora_" in name for name in changed)  # ref and base untouched
    assert trainer.state.log_history[0]["rewards/margins"] == 0.0  # reference = the policy at the start


# ---- the real CLI on the tiny model ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base_weights(tiny_model_dir):
    return sha256(Path(tiny_model_dir) / "model.safetensors")


@pytest.fixture(scope="module")
def dpo_run(tiny_model_dir, preference_db, base_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("dpo") / "run"
    done = dpo_cli("--preset", "quick", "--base-model", tiny_model_dir, "--db", preference_db, "--max-steps", "3",
                   "--batch-size", "4", "--learning-rate", "1e-2", "--eval-fraction", "0.4", "--output-dir", out)
    assert f"run folder: {out}" in done.stdout
    return out


def test_run_folder_holds_exactly_the_snapshot_the_adapter_and_the_logs(dpo_run, tiny_model_dir, preference_db):
    assert run_files(dpo_run) == ADAPTER_FILES | SNAPSHOT | {"config.json", "status.json", "metrics.jsonl",
                                                              "train.log"}
    status = read_status(dpo_run)
    assert (status["state"], status["step"], status["total"]) == ("finished", 3, 3)
    config = read_json(dpo_run / "config.json")
    assert (config["stage"], config["stage_config"], config["base_model_resolved"]) == ("dpo", "DPOConfig",
                                                                                         tiny_model_dir)
    lineage = read_json(dpo_run / "data" / "lineage.json")
    assert (lineage["votes"], lineage["pairs"], lineage["database"]) == (49, 48, preference_db)  # the tie: no pair


def test_sigterm_stops_at_the_end_of_a_step_with_the_adapter_saved(tiny_model_dir, preference_db, tmp_path):
    """The dashboard's Stop (SIGTERM): TRL's loop ends after the current step, the adapter is saved, the status says
    stopped (the same callback stops SFT, the reward model and RLOO)."""
    status = stopped_after_a_step("dpo", tmp_path / "run", "--base-model", tiny_model_dir, "--db", preference_db,
                                  "--max-steps", "500", "--batch-size", "2")
    assert status["state"] == "stopped" and 1 <= status["step"] < 500 and "adapter saved" in status["message"]
    assert ADAPTER_FILES <= run_files(tmp_path / "run")


def test_metrics_keep_trls_names_and_the_reference_is_the_starting_policy(dpo_run):
    rows = read_jsonl(dpo_run / "metrics.jsonl")
    steps = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3] and all(TRL_METRICS <= set(r) for r in steps)
    # the implicit reward β·log(π/π_ref) is 0 before the first update: the reference is the policy it starts from
    assert steps[0]["train/rewards/chosen"] == steps[0]["train/rewards/margins"] == 0.0
    assert steps[0]["train/loss"] == pytest.approx(0.6931, abs=1e-4)  # −log σ(0)
    assert steps[-1]["train/rewards/margins"] != 0.0


def test_sft_weight_adds_the_chosen_lists_nll_to_dpos_loss(tiny_model_dir, preference_db, tmp_path):
    """--sft-weight w (RPO): before the first update DPO's loss is -log σ(0) = ln 2, so the first step's loss is
    ln 2 + w · (mean token NLL of the chosen lists): twice the weight, twice the excess, on the same first batch."""
    def first_loss(weight: str) -> float:
        out = tmp_path / f"w{weight}"
        dpo_cli("--base-model", tiny_model_dir, "--db", preference_db, "--max-steps", "1", "--batch-size", "4",
                "--eval-fraction", "0", "--sft-weight", weight, "--output-dir", out)
        return next(r for r in read_jsonl(out / "metrics.jsonl") if "train/loss" in r)["train/loss"]

    one, two = first_loss("1"), first_loss("2")
    assert one - math.log(2) > 1.0  # a random tiny model: several nats a token
    assert two - math.log(2) == pytest.approx(2 * (one - math.log(2)), rel=1e-3)


def test_held_out_accuracy_counts_the_held_out_votes(dpo_run):
    pairs = pd.read_parquet(dpo_run / "data" / "pairs.parquet")
    held_out = pairs[(pairs.split == "eval") & (pairs.source == "votes")]
    assert len(held_out) > 5 and not set(held_out.prompt_id) & set(pairs[pairs.split == "train"].prompt_id)
    (final,) = [r for r in read_jsonl(dpo_run / "metrics.jsonl") if "eval/accuracy" in r]
    assert final["eval/pairs"] == len(held_out) and final["step"] == 3
    assert final["eval/correct"] == round(final["eval/accuracy"] * len(held_out))
    (trl_eval,) = [r for r in read_jsonl(dpo_run / "metrics.jsonl") if "eval/rewards/accuracies" in r]
    assert trl_eval["eval/rewards/accuracies"] == final["eval/accuracy"]


def test_lora_weights_trained_and_base_weights_untouched(dpo_run, tiny_model_dir, base_weights):
    tensors = load_file(dpo_run / "adapter" / "adapter_model.safetensors")
    assert tensors and all("lora_A" in k or "lora_B" in k for k in tensors)
    assert all(t.abs().max() > 0 for k, t in tensors.items() if "lora_B" in k)  # PEFT starts B at zero
    config = json.loads((dpo_run / "adapter" / "adapter_config.json").read_text())
    assert (config["r"], config["base_model_name_or_path"]) == (16, tiny_model_dir)
    assert sha256(Path(tiny_model_dir) / "model.safetensors") == base_weights


def test_from_an_sft_adapter_the_reference_is_the_sft_policy(tiny_adapter_dir, preference_db, tmp_path):
    """No --base-model: the SFT adapter's base. The adapter trained is the SFT one (its shape, whole on the base,
    TRL's "ref" copy not saved), and the implicit rewards start at 0, which they would not against the bare base."""
    out = tmp_path / "run"
    dpo_cli("--sft-adapter", tiny_adapter_dir, "--db", preference_db, "--max-steps", "2", "--batch-size", "4",
            "--learning-rate", "1e-2", "--eval-fraction", "0", "--output-dir", out)
    assert run_files(out) == ADAPTER_FILES | SNAPSHOT | {"config.json", "status.json", "metrics.jsonl", "train.log"}
    first = read_jsonl(out / "metrics.jsonl")[0]
    assert first["step"] == 1 and first["train/rewards/chosen"] == first["train/rewards/rejected"] == 0.0
    sft = load_file(Path(tiny_adapter_dir) / "adapter_model.safetensors")
    tuned = load_file(out / "adapter" / "adapter_model.safetensors")
    assert set(tuned) == set(sft) and any(not torch.equal(tuned[k], sft[k]) for k in sft)
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == 4  # SFT's rank, not 16
    assert not any("eval/accuracy" in r for r in read_jsonl(out / "metrics.jsonl"))  # nothing held out


def test_pairs_from_a_rejection_run_are_its_best_over_worst_and_start_from_its_sampler(tiny_adapter_dir,
                                                                                          preference_db, tmp_path):
    """--pairs-from: the rejection run's scored lists train (best finished over worst, margin = reward gap), the
    votes' held-out pairs still evaluate, and with no --sft-adapter the policy that sampled them is the start."""
    source = tmp_path / "rejection"
    source.mkdir()
    (source / "config.json").write_text(json.dumps({"stage": "rejection", "sft_adapter": tiny_adapter_dir,
                                                    "missing_eos_penalty": 2.0}))
    scored = [("Top 5 fruits", "1. Apple", 0.5, True), ("Top 5 fruits", "1. Pear", 1.0, True),
              ("Top 5 fruits", "1. Fig and", 3.0, False),            # reward 3.0 - 2.0 = 1.0: ties Pear, not best
              ("Top 5 rivers", "1. Nile", 0.2, True), ("Top 5 rivers", "1. Nile", 0.2, True),  # a tie: no pair
              ("Top 5 cakes", "1. Sponge", -1.0, True), ("Top 5 cakes", "1. Carrot", 0.25, True)]
    (source / "samples.jsonl").write_text("".join(json.dumps(
        {"step": 0, "prompt": p, "text": t, "score": s, "finished": f, "draw": d, "well_formed": True}) + "\n"
        for d, (p, t, s, f) in enumerate(scored)))
    out = tmp_path / "run"
    dpo_cli("--pairs-from", source, "--db", preference_db, "--max-steps", "1", "--batch-size", "1",
            "--eval-fraction", "0.4", "--output-dir", out)
    assert read_json(out / "config.json")["sft_adapter"] == tiny_adapter_dir
    lineage = read_json(out / "data" / "lineage.json")
    assert (lineage["pairs_from"], lineage["train_pairs"], lineage["requests_without_pair"]) == (str(source), 2, 1)
    pairs = pd.read_parquet(out / "data" / "pairs.parquet")
    train = pairs[pairs.split == "train"]
    assert train[["source", "prompt", "chosen", "rejected"]].values.tolist() == [
        ["reward_model", "Top 5 fruits", "1. Pear", "1. Apple"], ["reward_model", "Top 5 cakes", "1. Carrot",
                                                                  "1. Sponge"]]
    assert train.margin.tolist() == pytest.approx([0.5, 1.25])
    held_out = pairs[pairs.split == "eval"]
    assert len(held_out) > 5 and set(held_out.source) == {"votes"}
    (final,) = [r for r in read_jsonl(out / "metrics.jsonl") if "eval/accuracy" in r]
    assert final["eval/pairs"] == len(held_out)
    with (source / "samples.jsonl").open("a") as rows:  # a third pair, the widest: hats, gap 2.0
        rows.writelines(json.dumps({"step": 0, "prompt": "Top 5 hats", "text": t, "score": s, "finished": True,
                                    "draw": d, "well_formed": True}) + "\n" for d, (t, s) in enumerate(
            (("1. Cap", 0.0), ("1. Beret", 2.0))))
    top = tmp_path / "top"  # --pairs-top 0.5 of 3 pairs: the two widest (cakes 1.25, hats 2.0), in order
    dpo_cli("--pairs-from", source, "--pairs-top", "0.5", "--db", preference_db, "--max-steps", "1", "--batch-size",
            "1", "--eval-fraction", "0.4", "--output-dir", top)
    kept = pd.read_parquet(top / "data" / "pairs.parquet").query("split == 'train'")
    assert kept[["prompt", "chosen", "margin"]].values.tolist() == [["Top 5 cakes", "1. Carrot", 1.25],
                                                                    ["Top 5 hats", "1. Beret", 2.0]]
    lineage = read_json(top / "data" / "lineage.json")
    assert (lineage["train_pairs"], lineage["requests_without_pair"], lineage["pairs_left_out_close"]) == (2, 1, 1)
    (source / "samples.jsonl").write_text(json.dumps({"step": 0, "prompt": "q", "text": "1. A", "score": 0.0,
                                                      "finished": True, "draw": 0, "well_formed": True}) + "\n")
    done = dpo_cli("--pairs-from", source, "--db", preference_db, "--output-dir", tmp_path / "none", check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {source} gives only 0 pairs")
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    done = dpo_cli("--pairs-from", empty, "--db", preference_db, "--output-dir", tmp_path / "none2", check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (f"error: {empty} holds no scored lists (samples.jsonl): pass the "
                                                     "folder of a finished `python -m core train rejection` run "
                                                     "(--candidates-from, dpo's --pairs-from).")


# ---- bad input: one line, exit 2 ----------------------------------------------------------------------------------
def test_too_few_votes_is_refused_and_the_run_marked_failed(tiny_model_dir, tmp_path):
    Store(tmp_path / "empty.duckdb")  # a database without votes
    done = dpo_cli("--base-model", tiny_model_dir, "--db", tmp_path / "empty.duckdb", "--output-dir", tmp_path / "run",
                   check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: only 0 training pairs")
    assert "vote left/right" in done.stderr and read_status(tmp_path / "run")["state"] == "failed"
    mistyped = dpo_cli("--db", tmp_path / "emtpy.duckdb", "--output-dir", tmp_path / "run2", check=False)
    assert mistyped.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'emtpy.duckdb'}: no such database")
    assert not (tmp_path / "emtpy.duckdb").exists()  # not started empty


def test_a_bad_setting_exits_2_with_one_line_before_anything_is_written(tmp_path):
    done = dpo_cli("--beta", "0", "--output-dir", tmp_path / "run", check=False)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: beta must be positive, e.g. --beta 0.1 (DPO's β, not a KL weight that can be 0)."]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("settings, message", [
    ({"eval_fraction": "1"}, "eval-fraction must be in [0, 1), e.g. 0.2."),
    ({"max_length": "16"}, "max-length must be at least 32 tokens."),
    ({"sft_weight": "-1"}, "sft-weight must be >= 0, e.g. 1.0 (0: DPO's loss alone)."),
    ({"pairs_top": "0"}, "pairs-top must be in (0, 1], e.g. 0.75 (1 trains on every pair)."),
    ({"batch_size": "two"}, "--batch-size: 'two' is not a valid int."),
])
def test_bad_settings_say_what_to_pass_instead(settings, message):
    with pytest.raises(ConfigError) as err:
        build(DPOConfig, "quick", **settings)
    assert str(err.value) == message


def test_an_sft_adapter_folder_without_an_adapter_is_refused(tiny_model_dir, preference_db, tmp_path):
    done = dpo_cli("--sft-adapter", tmp_path, "--db", preference_db, "--output-dir", tmp_path / "run", check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "holds no adapter" in done.stderr.strip().splitlines()[-1]


def test_every_tuning_stage_takes_the_sft_adapters_own_base_when_no_base_is_given(tiny_model_dir, tiny_adapter_dir,
                                                                                  tiny_reward_run, monkeypatch):
    """PPO, DPO and RLOO all start through core/train/start.py: no --base-model means the SFT adapter's base."""
    from core.model import EMBEDDED_MODEL_DIR
    from core.records import ModelLoadError
    from core.train.start import base_name_for

    monkeypatch.delenv("RLHF_BASE_MODEL", raising=False)
    assert base_name_for("", tiny_adapter_dir) == tiny_model_dir
    assert base_name_for("other/model", tiny_adapter_dir) == "other/model"  # an explicit base wins
    assert base_name_for("", "") == str(EMBEDDED_MODEL_DIR)
    with pytest.raises(ModelLoadError, match="SEQ_CLS adapter, not the CAUSAL_LM"):
        base_name_for("", str(tiny_reward_run))  # a reward model is no policy to start from
