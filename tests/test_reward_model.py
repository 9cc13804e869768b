"""The reward-model stage: its data decisions, calibration maths, a real CLI run, the swapped-labels check, `score`."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from core.calibration import (
    accuracy_by_margin,
    accuracy_by_round,
    expected_calibration_error,
    reliability_bins,
)
from core.runs import RunFolder, read_jsonl, read_status
from core.store.database import Store
from core.train.reward_model import reward_input_ids, training_rows
from tests.helpers import ADAPTER_FILES, run_cli, run_files


def test_ece_on_a_hand_example():
    # p(first) .95 .85 .55 .25, first won T F T T -> confidence .95 .85 .55 .75, correct T F T F;
    # one pair per bin: |1-.55| + |0-.75| + |0-.85| + |1-.95| = 2.1 over 4 pairs
    p, won = [0.95, 0.85, 0.55, 0.25], [True, False, True, True]
    assert expected_calibration_error(p, won, n_bins=5) == pytest.approx(2.1 / 4)
    bins = reliability_bins(p, won, n_bins=5)
    assert [b["count"] for b in bins] == [1, 0, 1, 1, 1]
    assert bins[2]["accuracy"] == 0.0 and bins[2]["confidence"] == pytest.approx(0.75)
    assert expected_calibration_error([0.9] * 10, [True] * 9 + [False], n_bins=5) == pytest.approx(0.0)


def test_accuracy_by_margin_bins_the_score_gap():
    # gaps .2 (right), .3 (wrong), 1.5 (right), 3 (right)
    rows = accuracy_by_margin([1.2, 0.0, 2.5, 3.0], [1.0, 0.3, 1.0, 0.0], [True, True, True, True])
    assert [(r["count"], r["accuracy"]) for r in rows] == [(2, 0.5), (0, None), (1, 1.0), (1, 1.0)]


def test_accuracy_by_round_counts_each_round_in_order_of_first_vote():
    from core.win_rate import wilson_interval

    rows = accuracy_by_round(["round 1", None, "round 1", "round 2", float("nan")], [True, False, False, True, True])
    assert [(r["round"], r["pairs"], r["correct"]) for r in rows] == [("round 1", 2, 1), ("(no round)", 2, 1),
                                                                     ("round 2", 1, 1)]
    assert (rows[0]["low"], rows[0]["high"]) == wilson_interval(1, 2) and rows[2]["accuracy"] == 1.0
    assert accuracy_by_round([], []) == []
    assert [(r["round"], r["pairs"]) for r in accuracy_by_round(None, [True, False])] == [("(no round)", 2)]


def test_training_rows_carry_margin_and_swap_labels(tiny_loaded):
    tok = tiny_loaded.tokenizer
    pairs = pd.DataFrame({"prompt": ["Top 5 fruits"], "chosen": ["1. Apple"], "rejected": ["Pears"], "margin": [2 / 3]})
    row = training_rows(pairs, tok, use_margin=True, swap_labels=False)[0]
    assert row["chosen_ids"] == reward_input_ids(tok, "Top 5 fruits", "1. Apple")
    assert row["chosen_ids"][-1] == tok.eos_token_id and row["margin"] == pytest.approx(2 / 3)
    swapped = training_rows(pairs, tok, use_margin=False, swap_labels=True)[0]
    assert swapped["chosen_ids"] == row["rejected_ids"] and "margin" not in swapped


def test_reward_run_folder(tiny_reward_run, tiny_model_dir):
    run = tiny_reward_run
    assert read_status(run)["state"] == "finished"
    assert run_files(run) == ADAPTER_FILES | {
        "config.json", "status.json", "metrics.jsonl", "train.log", "scores.parquet", "calibration.json",
        "data/lineage.json", "data/votes.parquet", "data/arena_demonstrations.parquet", "data/ratings.parquet",
        "data/pairs.parquet"}
    config = json.loads((run / "config.json").read_text())
    assert config["stage_config"] == "RewardConfig" and config["base_model_resolved"] == tiny_model_dir
    lineage = json.loads((run / "data" / "lineage.json").read_text())
    assert lineage["votes"] == 49 and lineage["pairs"] == 48 and lineage["ties"] == 1
    assert lineage["train_pairs"] + lineage["eval_pairs"] == 48 and lineage["eval_pairs"] > 5
    pairs = pd.read_parquet(run / "data" / "pairs.parquet")
    assert not set(pairs[pairs.split == "train"].prompt_id) & set(pairs[pairs.split == "eval"].prompt_id)

    metrics = read_jsonl(run / "metrics.jsonl")
    assert [m["step"] for m in metrics if "train/loss" in m] == list(range(1, 11))
    final = metrics[-1]
    assert final["eval/pairs"] == lineage["eval_pairs"] and 0 <= final["eval/ece"] <= 1
    scores = pd.read_parquet(run / "scores.parquet")  # every labelled pair, the tie included
    assert len(scores) == 49 and set(scores.split) == {"train", "eval"}
    assert scores.loc[scores.choice == "tie", "correct"].isna().all()
    held = scores[(scores.split == "eval") & scores.choice.isin(["left", "right"])]
    assert final["eval/correct"] == int(held.correct.sum())
    calibration = json.loads((run / "calibration.json").read_text())
    assert sum(b["count"] for b in calibration["reliability"]) == lineage["eval_pairs"]
    assert [(r["round"], r["pairs"], r["correct"]) for r in calibration["accuracy_by_round"]] == [
        ("(no round)", final["eval/pairs"], final["eval/correct"])]  # the fixture's votes name no round


def test_reward_training_changes_lora_and_score_head_only(tiny_reward_run, tiny_model_dir):
    adapter = load_file(str(tiny_reward_run / "adapter" / "adapter_model.safetensors"))
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in adapter.items())  # B starts at 0
    assert "base_model.model.score.weight" in adapter
    base = load_file(f"{tiny_model_dir}/model.safetensors")
    assert not any("lora" in k for k in base)  # the base folder was not rewritten with adapter weights
    # nothing of the base trained: the adapter holds LoRA matrices and the score head, no base weight
    assert all("lora_" in k or k == "base_model.model.score.weight" for k in adapter), sorted(adapter)[:5]
    config = json.loads((tiny_reward_run / "adapter" / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS" and "score" in config["modules_to_save"]


def test_reward_model_learns_the_taste_and_swapped_labels_invert_it(tiny_reward_run, tiny_model_dir, preference_db,
                                                                     tmp_path):
    """Held-out accuracy is high on true labels and falls towards 0 on swapped ones: the check that labels are
    wired the right way round (a model that stays at 1 after swapping is reading something other than labels)."""
    right = read_jsonl(tiny_reward_run / "metrics.jsonl")[-1]["eval/accuracy"]
    run_cli("train", "reward", "--base-model", tiny_model_dir, "--db", preference_db, "--max-steps", "10",
            "--batch-size", "8", "--learning-rate", "3e-3", "--eval-fraction", "0.4", "--swap-labels", "true",
            "--output-dir", tmp_path / "swapped")
    swapped = read_jsonl(tmp_path / "swapped" / "metrics.jsonl")[-1]["eval/accuracy"]
    assert right >= 0.9 and swapped <= 0.1, (right, swapped)


def test_score_command_matches_the_saved_scores(tiny_reward_run):
    scores = pd.read_parquet(tiny_reward_run / "scores.parquet").iloc[0]
    out = run_cli("score", "--reward-model", tiny_reward_run, "--prompt", scores.prompt,
                  "--response", scores.left_text, "--response", scores.right_text).stdout
    printed = [float(line.split("reward ")[1]) for line in out.splitlines() if line.startswith("response")]
    assert printed == pytest.approx([scores.score_left, scores.score_right], abs=2e-3)
    assert "P(response 1 preferred)" in out


def test_score_and_train_refuse_bad_input_with_a_message(tmp_path, tiny_model_dir):
    done = run_cli("score", "--reward-model", tmp_path, "--prompt", "x", "--response", "y", check=False)
    assert done.returncode == 2 and "holds no adapter" in done.stderr and "Traceback" not in done.stderr
    Store(tmp_path / "empty.duckdb")  # a database without votes
    empty = run_cli("train", "reward", "--base-model", tiny_model_dir, "--db", tmp_path / "empty.duckdb",
                    "--output-dir", tmp_path / "run", check=False)
    assert empty.returncode == 2 and "vote left/right" in empty.stderr
    assert read_status(tmp_path / "run")["state"] == "failed"
    assert empty.stderr.count("only 0 training pairs") == 1  # the console's one line; train.log keeps the rest
    assert "run failed: only 0 training pairs" in (tmp_path / "run" / "train.log").read_text()
    assert RunFolder(tmp_path / "run").stage == "reward"  # its config.json, written before the failure
    mistyped = run_cli("train", "reward", "--db", tmp_path / "emtpy.duckdb", "--output-dir", tmp_path / "run2",
                       check=False)
    assert mistyped.returncode == 2 and "emtpy.duckdb: no such database" in mistyped.stderr
    assert not (tmp_path / "emtpy.duckdb").exists()  # not started empty: "0 training pairs" would hide the typo
    assert read_status(tmp_path / "run2")["message"].endswith("or vote in the arena first.")
    bad = run_cli("train", "reward", "--eval-fraction", "1.5", check=False)
    assert bad.returncode == 2 and "eval-fraction" in bad.stderr


@pytest.mark.parametrize("targets", ["attention", "attention+mlp"])
def test_shared_base_scoring_equals_the_reward_model(targets, tiny_reward_run, tiny_model_dir, preference_db,
                                                      tmp_path):
    """PPO reads the reward model as one more adapter on the policy's base; it must score exactly as the
    stand-alone reward model does, also when the reward LoRA sits on MLP layers the policy's LoRA leaves alone."""
    from core.model import load_causal_lm, load_tokenizer
    from core.train.ppo import policy_value
    from core.train.reward_model import RewardScorer

    if targets == "attention+mlp":
        tiny_reward_run = tmp_path / "mlp"
        run_cli("train", "reward", "--base-model", tiny_model_dir, "--db", preference_db, "--max-steps", "3",
                "--learning-rate", "3e-2", "--eval-fraction", "0.4", "--output-dir", tiny_reward_run,
                "--lora-targets", "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
        saved = json.loads((tiny_reward_run / "adapter" / "adapter_config.json").read_text())
        assert {"gate_proj", "up_proj", "down_proj"} <= set(saved["target_modules"])
    scorer = RewardScorer.from_folder(tiny_reward_run, device="cpu")
    tok = load_tokenizer(tiny_model_dir)
    from peft import LoraConfig

    pv = policy_value.build(load_causal_lm(tiny_model_dir, torch.device("cpu")), tok,
                            LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], task_type="CAUSAL_LM"),
                            None, str(tiny_reward_run))
    prompts, lists = ["Top 5 fruits", "Top 5 films to watch"], ["1. Apple\n2. Pear", "Some films! Enjoy"]
    ids = [reward_input_ids(tok, p, r) for p, r in zip(prompts, lists)]
    batch = tok.pad({"input_ids": ids}, return_tensors="pt")  # left padding, as in a rollout
    last = torch.full((2,), batch["input_ids"].shape[1] - 1)
    shared = pv.reward_scores(batch["input_ids"], batch["attention_mask"], last)
    assert shared.tolist() == pytest.approx(scorer.score(prompts, lists), abs=1e-4)


def test_one_seed_gives_one_reward_model_even_in_one_process(tiny_model_dir, preference_db, tmp_path):
    """The score head and LoRA weights are made before TRL's Trainer seeds itself; the stage seeds them first, so a
    benchmark that trains several reward models in one process gets the same model for the same --seed."""
    from core.config import parse_config
    from core.train.reward_model import RewardConfig, train

    def scores(name: str, seed: int) -> pd.Series:
        cfg = parse_config(RewardConfig, ["--base-model", tiny_model_dir, "--db", preference_db, "--max-steps", "2",
                                          "--eval-fraction", "0.4", "--seed", str(seed), "--output-dir",
                                          str(tmp_path / name)])
        torch.rand(1000)  # whatever ran before in the process moved the global generator
        return pd.read_parquet(train(cfg) / "scores.parquet").score_left

    first = scores("a", 0)
    pd.testing.assert_series_equal(first, scores("b", 0))
    assert not first.equals(scores("c", 1))


def test_scorer_folds_lora_in_and_keeps_the_callers_order(tiny_reward_run, tiny_model_dir):
    """The scorer merges the adapter into the base and scores lists sorted by length; each score must still be the
    unmerged reward model's score of that list read alone, in the order the lists were given."""
    from peft import PeftModel

    from core.model import load_causal_lm, load_tokenizer
    from core.train.reward_model import RewardScorer

    scorer = RewardScorer.from_folder(tiny_reward_run, device="cpu")
    assert not isinstance(scorer.model, PeftModel)
    tok = load_tokenizer(tiny_model_dir)
    base = load_causal_lm(str(tiny_model_dir), torch.device("cpu"), dtype=torch.float32, head="reward")
    base.config.pad_token_id = tok.pad_token_id
    unmerged = RewardScorer(PeftModel.from_pretrained(base, str(tiny_reward_run / "adapter")), tok)
    prompts = ["Top 5 fruits", "Top 5 films", "Top 5 rivers", "Top 5 cakes", "Top 5 birds"]
    lists = ["1. Apple\n2. Pear\n3. Plum\n4. Fig\n5. Kiwi", "Films!", "1. Nile " * 12, "1. Sponge\n2. Carrot", "x"]
    alone = [unmerged.score([p], [r])[0] for p, r in zip(prompts, lists)]
    assert scorer.score(prompts, lists, batch_size=2) == pytest.approx(alone, abs=1e-4)
    assert len(set(round(a, 4) for a in alone)) == len(alone)  # distinct scores, so a mix-up of order would show


def test_features_are_what_the_score_head_reads(tiny_reward_run):
    """The pooled features the informative choice measures pairs with: the score head applied to them gives each
    list's score, in the caller's order, whatever the batching and padding."""
    from core.train.reward_model import RewardScorer

    scorer = RewardScorer.from_folder(tiny_reward_run, device="cpu")
    prompts = ["Top 5 fruits", "Top 5 films", "Top 5 rivers"]
    lists = ["1. Apple\n2. Pear\n3. Plum\n4. Fig\n5. Kiwi", "1. Nile " * 12, "x"]
    features = scorer.features(prompts, lists, batch_size=2)
    assert features.shape == (3, scorer.model.config.hidden_size)
    with torch.inference_mode():
        from_head = scorer.model.score(torch.as_tensor(features))[:, 0].tolist()
    assert from_head == pytest.approx(scorer.score(prompts, lists), abs=1e-4)
    assert scorer.features(prompts[2:], lists[2:]) == pytest.approx(features[2:], abs=1e-4)


def test_the_scoring_speed_bench_compares_both_ways_on_the_same_lists(tiny_reward_run, tmp_path, monkeypatch, capsys):
    """bench/reward_scoring_speed.py on the tiny reward model: both ways timed, the scores the same, the same picks."""
    from bench import reward_scoring_speed

    samples = tmp_path / "samples.jsonl"
    lists = ["1. Apple\n2. Pear", "Films!", "1. Nile " * 6, "1. Sponge", "x", "1. A\n2. B\n3. C", "y y", "1. Fig"]
    samples.write_text("".join(json.dumps({"prompt": f"Top 5 things {i // 4}", "text": t}) + "\n"
                               for i, t in enumerate(lists)))
    monkeypatch.setattr("sys.argv", ["reward_scoring_speed", "--reward-model", str(tiny_reward_run), "--samples",
                                     str(samples), "--lists", "8", "--repeats", "1"])
    reward_scoring_speed.main()
    out = capsys.readouterr().out
    assert "reward scoring of 8 lists" in out and "before: unmerged" in out and "now: merged" in out
    assert "same best list of 4: 2/2 requests" in out
    difference = float(out.split("largest |score difference| ")[1].split()[0])
    assert difference < 1e-4
