"""RLOO: the reward bridge, the prompts TRL samples from, and the real CLI on the tiny model with a tiny reward
model (run folder, TRL's metric names, the rewards TRL trained on are the bridge's, the reference is the starting
policy, LoRA trained, base untouched, bad input as one line); the Train page offers both new stages."""
from __future__ import annotations

import hashlib
import signal
from functools import partial
from pathlib import Path

import pytest
from safetensors.torch import load_file
from streamlit.testing.v1 import AppTest

from core.collect.generate import chat_text
from core.collect.library import load_prompts
from core.config import ConfigError, build
from core.records import ModelLoadError
from core.runs import read_json, read_jsonl, read_status
from core.train.rloo import RewardModelReward, RLOOConfig, rollout_prompt, train
from tests.helpers import (
    ADAPTER_FILES,
    run_files,
    stage_cli,
    stopped_after_a_step,
)

REPO = Path(__file__).resolve().parent.parent
LIST = "1. Apple - crisp.\n2. Pear - soft.\n3. Fig - sweet.\n4. Plum - tart.\n5. Kiwi - green."
TRL_METRICS = {"train/loss", "train/reward", "train/reward_std", "train/kl", "train/entropy",
               "train/rewards/reward_model/mean", "train/completions/mean_length", "train/completions/clipped_ratio",
               "train/clip_ratio/region_mean", "train/frac_reward_zero_std", "train/well_formed"}


rloo_cli = partial(stage_cli, "rloo")  # `python -m core train rloo ARGS`, one thread


class FakeScorer:
    """Scores a list by its length, and records what it was asked."""

    def __init__(self):
        self.asked = []

    def score(self, prompts, responses):
        self.asked.append((list(prompts), list(responses)))
        return [float(len(r)) for r in responses]


# ---- the bridge and the prompts ------------------------------------------------------------------------------------
def test_the_bridge_scores_request_and_list_and_takes_the_penalty_off_a_list_that_never_ended():
    scorer, seen, metrics = FakeScorer(), [], {}
    reward = RewardModelReward(scorer, eos=[2], missing_eos_penalty=1.5, on_scored=lambda step, rows: seen.append(
        (step, rows)))
    state = type("State", (), {"global_step": 4})()
    rewards = reward(prompts=[[{"role": "user", "content": "x"}]] * 2,
                     completions=[[{"role": "assistant", "content": LIST}], [{"role": "assistant", "content": "Hi"}]],
                     completion_ids=[[7, 8, 2], [7, 8, 9]], request=["Top 5 fruits", "Top 5 fruits"],
                     trainer_state=state, log_metric=metrics.__setitem__, log_extra=None)
    assert scorer.asked == [(["Top 5 fruits"] * 2, [LIST, "Hi"])]  # the request, not TRL's rendered prompt
    assert rewards == [float(len(LIST)), 2.0 - 1.5]
    assert metrics == {"well_formed": 0.5} and reward.__name__ == "reward_model"
    (step, rows), = seen
    assert step == 5 and [(r["finished"], r["well_formed"], r["score"], r["reward"]) for r in rows] == [
        (True, True, float(len(LIST)), float(len(LIST))), (False, False, 2.0, 0.5)]


def test_trl_tokenises_the_rollout_prompt_as_generation_does(tiny_model_dir, tmp_path):
    """Guards the hand-off: TRL renders our messages to the very ids chat_text gives generation."""
    from datasets import Dataset
    from trl import RLOOConfig as TRLRLOOConfig
    from trl import RLOOTrainer

    from core.model import load
    from core.train.trainer_run import trainer_arguments

    loaded = load(tiny_model_dir, "cpu")
    requests = ["Top 5 fruits", "Top 5 board games for two"]
    args = TRLRLOOConfig(**trainer_arguments(loaded.device, 0, tmp_path, max_steps=1, per_device_train_batch_size=2,
                                             num_generations=2))
    trainer = RLOOTrainer(model=loaded.model, reward_funcs=lambda completions, **_: [0.0] * len(completions),
                          args=args, train_dataset=Dataset.from_list([{"prompt": "x"}]),
                          processing_class=loaded.tokenizer)
    prompt_ids, _, _ = trainer._tokenize_prompts([rollout_prompt(loaded.tokenizer, r) for r in requests])
    tok = loaded.tokenizer
    assert prompt_ids == [tok(chat_text(tok, r), add_special_tokens=False)["input_ids"] for r in requests]


# ---- the real CLI on the tiny model ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base_weights(tiny_model_dir):
    return hashlib.sha256((Path(tiny_model_dir) / "model.safetensors").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def rloo_run(tiny_model_dir, tiny_reward_run, base_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("rloo") / "run"
    done = rloo_cli("--preset", "quick", "--base-model", tiny_model_dir, "--reward-model", tiny_reward_run,
                    "--max-steps", "2", "--max-new-tokens", "12", "--learning-rate", "1e-2", "--output-dir", out)
    assert f"run folder: {out}" in done.stdout
    return out


def test_sigterm_stops_at_the_end_of_a_step_with_the_adapter_saved(tiny_model_dir, tiny_reward_run, tmp_path):
    status = stopped_after_a_step("rloo", tmp_path / "run", "--preset", "quick", "--base-model", tiny_model_dir,
                                  "--reward-model", tiny_reward_run, "--max-steps", "200", "--max-new-tokens", "8")
    assert status["state"] == "stopped" and 1 <= status["step"] < 200 and "adapter saved" in status["message"]
    assert ADAPTER_FILES <= run_files(tmp_path / "run")


def test_run_folder_holds_exactly_the_prompts_the_adapter_the_samples_and_the_logs(rloo_run, tiny_model_dir,
                                                                                 tiny_reward_run):
    assert run_files(rloo_run) == ADAPTER_FILES | {"config.json", "status.json", "metrics.jsonl", "train.log",
                                                   "samples.jsonl", "data/lineage.json", "data/prompts_train.jsonl"}
    status = read_status(rloo_run)
    assert (status["state"], status["step"], status["total"]) == ("finished", 2, 2)
    config = read_json(rloo_run / "config.json")
    assert (config["stage"], config["base_model_resolved"], config["reward_model"]) == ("rloo", tiny_model_dir,
                                                                                        str(tiny_reward_run))
    assert (config["num_generations"], config["batch_size"]) == (4, 8)
    train_prompts = [p.text for p in load_prompts(split="train")]
    lineage, theirs = read_json(rloo_run / "data" / "lineage.json"), read_json(tiny_reward_run / "data" / "lineage.json")
    assert lineage["train_prompts"] == len(train_prompts)
    # the rounds whose votes it learned from, through its reward model
    assert theirs["rounds"] and (lineage["rounds"], lineage["reward_model"]) == (theirs["rounds"], str(tiny_reward_run))
    samples = read_jsonl(rloo_run / "samples.jsonl")
    assert [s["step"] for s in samples] == [1] * 8 + [2] * 8  # quick keeps every 2nd step, and the first
    assert all(s["prompt"] in train_prompts for s in samples)
    assert [len({s["prompt"] for s in samples if s["step"] == step}) for step in (1, 2)] == [2, 2]  # k = 4 each


def test_metrics_keep_trls_names_and_are_the_bridges_rewards(rloo_run):
    rows = [r for r in read_jsonl(rloo_run / "metrics.jsonl") if "train/loss" in r]
    assert [r["step"] for r in rows] == [1, 2] and all(TRL_METRICS <= set(r) for r in rows)
    samples = read_jsonl(rloo_run / "samples.jsonl")
    for row in rows:
        kept = [s for s in samples if s["step"] == row["step"]]
        assert row["train/reward"] == pytest.approx(sum(s["reward"] for s in kept) / len(kept), abs=1e-4)
        assert row["train/well_formed"] == sum(s["well_formed"] for s in kept) / len(kept)
    assert rows[0]["train/kl"] == 0.0  # sampled by the reference itself: the starting policy


def test_lora_weights_trained_and_base_weights_untouched(rloo_run, tiny_model_dir, base_weights):
    tensors = load_file(rloo_run / "adapter" / "adapter_model.safetensors")
    assert tensors and all("lora_A" in k or "lora_B" in k for k in tensors)
    assert any(t.abs().max() > 0 for k, t in tensors.items() if "lora_B" in k)  # PEFT starts B at zero
    assert hashlib.sha256((Path(tiny_model_dir) / "model.safetensors").read_bytes()).hexdigest() == base_weights


def test_from_an_sft_adapter_the_reference_is_the_sft_policy(tiny_adapter_dir, tiny_reward_run, tmp_path):
    """The SFT adapter changes what the tiny model samples a lot (tests/conftest.py), so a KL of 0 on the first
    batch means the reference is the SFT policy, not the bare base."""
    out = tmp_path / "run"
    rloo_cli("--sft-adapter", tiny_adapter_dir, "--reward-model", tiny_reward_run, "--max-steps", "1",
             "--batch-size", "4", "--num-generations", "2", "--max-new-tokens", "8", "--output-dir", out)
    (first,) = [r for r in read_jsonl(out / "metrics.jsonl") if "train/loss" in r]
    assert first["train/kl"] == 0.0
    sft = load_file(Path(tiny_adapter_dir) / "adapter_model.safetensors")
    assert set(load_file(out / "adapter" / "adapter_model.safetensors")) == set(sft)  # SFT's adapter, not a "ref"


# ---- bad input: one line, exit 2 ----------------------------------------------------------------------------------
def test_no_reward_model_exits_2_with_one_line_before_anything_is_written(tmp_path):
    done = rloo_cli("--output-dir", tmp_path / "run", check=False)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: RLOO needs a reward model: pass --reward-model models/runs/reward-<timestamp>."]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("settings, message", [
    ({"num_generations": "1"}, "num-generations must be at least 2: the baseline of each list is the mean of the "
                               "others, e.g. --num-generations 4."),
    ({"batch_size": "6"}, "batch-size (6) must be a multiple of num-generations (4), e.g. --batch-size 8."),
    ({"beta": "-0.1"}, "beta must be >= 0 (0 switches the KL penalty off), e.g. 0.05."),
])
def test_bad_settings_say_what_to_pass_instead(settings, message):
    with pytest.raises(ConfigError) as err:
        build(RLOOConfig, "quick", reward_model="models/runs/reward-x", **settings)
    assert str(err.value) == message


def test_a_reward_model_folder_without_a_reward_model_is_refused(tiny_model_dir, tiny_adapter_dir, tmp_path,
                                                                  monkeypatch):
    missing = rloo_cli("--base-model", tiny_model_dir, "--reward-model", tmp_path / "nothing-here",
                       "--output-dir", tmp_path / "run", check=False)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "holds no adapter" in missing.stderr.strip().splitlines()[-1]
    assert read_status(tmp_path / "run")["state"] == "failed" and not (tmp_path / "run" / "data").exists()
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # in-process: leave pytest's Ctrl-C alone
    with pytest.raises(ModelLoadError, match="not the SEQ_CLS adapter"):  # a policy adapter is no reward model
        train(build(RLOOConfig, reward_model=tiny_adapter_dir, base_model=tiny_model_dir,
                    output_dir=str(tmp_path / "run2")))


# ---- the dashboard's Train page --------------------------------------------------------------------------------------
def test_the_train_page_offers_dpo_and_rloo_forms(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_DB", str(tmp_path / "db.duckdb"))
    monkeypatch.setenv("RLHF_RUNS_DIR", str(tmp_path / "runs"))
    (tmp_path / "runs").mkdir()
    at = AppTest.from_file(str(REPO / "apps" / "dashboard.py"), default_timeout=120).run()
    at.switch_page("dashboard_pages/train.py").run()
    radio = at.radio(key="stage")
    assert radio.options[-3:] == ["3. RLOO", "3. Best of n (rejection sampling)",
                                  "DPO (votes, or scored lists)"]  # labelled, in the registry's order

    radio.set_value("rloo").run()
    assert not at.exception
    assert "RLOO needs a reward model" in at.error[0].value  # the config's own message, no Start button
    assert at.selectbox(key="rloo:quick:reward_model").options == ["(none)"]  # no finished reward run yet
    assert at.text_input(key="rloo:quick:num_generations").value == "4"

    at.radio(key="stage").set_value("dpo").run()
    assert not at.exception and not at.error
    assert at.code[0].value.startswith("python -m core train dpo --max-steps 16")  # the quick preset's settings
    assert at.text_input(key="dpo:quick:beta").value == "0.1"
    at.text_input(key="dpo:quick:beta").set_value("0").run()
    assert "beta must be positive" in at.error[0].value and "start" not in {b.key for b in at.button}
