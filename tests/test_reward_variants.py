"""bench/reward_variants.py: the ensemble's verdict against hand-worked scores, the paired comparison, bad input,
and the benchmark on the tiny model through the real `train reward` CLI."""
from __future__ import annotations

import json

import pandas as pd
import pytest

import bench.reward_variants as bench


def write_scores(run, left, right, choices=("left", "left", "right", "tie"), split="eval"):
    run.mkdir(parents=True)
    pd.DataFrame({"comparison_id": ["a", "b", "c", "d"], "split": [split] * 4, "choice": list(choices),
                  "repeat_of": [None] * 4, "score_left": left, "score_right": right,
                  "correct": [(sl > sr) == (c == "left") if c in ("left", "right") else None
                              for sl, sr, c in zip(left, right, choices)]}).to_parquet(run / "scores.parquet")
    return run


def test_the_ensemble_ranks_by_the_mean_score(tmp_path):
    # pair a (left won): scores 1/0, -2/0, 1.5/0 -> means 1/6 against 0: right; alone, the second run is wrong
    # pair b (left won): 0/1, 0/1, 3/0 -> 1 against 2/3: right, though two of three runs are wrong
    # pair c (right won): 0/1, 0/1, 0/1 -> right; pair d is a tie: not a held-out left/right vote
    runs = [write_scores(tmp_path / "r1", [1, 0, 0, 0], [0, 1, 1, 0]),
            write_scores(tmp_path / "r2", [-2, 0, 0, 0], [0, 1, 1, 0]),
            write_scores(tmp_path / "r3", [1.5, 3, 0, 0], [0, 0, 1, 0])]
    assert bench.ensemble_correct(runs).to_dict() == {"a": True, "b": True, "c": True}
    assert bench.held_out(runs[1]).correct.astype(bool).to_dict() == {"a": False, "b": False, "c": True}


def test_a_row_compares_with_quick_on_the_same_votes():
    quick = pd.Series([True, True, False, False, True], index=list("abcde"))
    mine = pd.Series([True, False, True, True, True], index=list("abcde"))
    r = bench.row("mlp", mine, quick, 0.9, 12.0)
    assert (r["correct"], r["pairs"], r["accuracy"]) == (4, 5, 0.8)
    assert r["vs_preset"] == {"only_this_right": 2, "only_preset_right": 1, "mcnemar_p": 1.0}
    assert "vs_preset" not in bench.row("quick", quick, quick, None, None)
    assert [bench.baseline(n) for n in ("mlp", "seed1", "mlp-seed1", "mlp-seed2", "mlp-epochs4")] == [
        "quick", "quick", "seed1", "seed2", "quick"]


def test_bad_input_gets_one_line(tmp_path):
    with pytest.raises(SystemExit, match="pass --variants from quick"):
        bench.main(["--db", str(tmp_path / "x.duckdb"), "--variants", "quick,bigger"])
    with pytest.raises(SystemExit, match="no votes database"):
        bench.main(["--db", str(tmp_path / "missing.duckdb")])


def test_variants_train_on_one_database_and_the_ensemble_joins_them(tiny_model_dir, preference_db, tmp_path):
    common = "--max-steps 4 --batch-size 8 --learning-rate 3e-3 --eval-fraction 0.4"
    args = ["--db", preference_db, "--out", str(tmp_path / "out"), "--base-model", tiny_model_dir,
            "--variants", "quick,seed1,seed2", "--common", common]
    rows = bench.main(args)
    assert [r["variant"] for r in rows] == ["quick", "seed1", "seed2", "ensemble"]
    assert len({r["pairs"] for r in rows}) == 1 and rows[0]["pairs"] > 0
    assert all("vs_preset" in r for r in rows[1:]) and all(r["seconds"] for r in rows[:3])
    seed1 = json.loads((tmp_path / "out" / "runs" / "seed1" / "config.json").read_text())
    assert seed1["seed"] == 1 and seed1["max_steps"] == 4  # the variant's flag wins over the common seed 0
    # a finished quick run stands for `quick`; the report rebuilds from the runs without training
    again = bench.main(["--db", preference_db, "--out", str(tmp_path / "out"), "--report-only", "true",
                        "--reference", str(tmp_path / "out" / "runs" / "quick"), "--common", common])
    assert [(r["variant"], r["correct"]) for r in again] == [(r["variant"], r["correct"]) for r in rows]
    # rebuilt with no flags but --out: the saved report's database and reference, so no row is lost
    rebuilt = bench.main(["--out", str(tmp_path / "out"), "--report-only", "true", "--common", common])
    assert [(r["variant"], r["correct"]) for r in rebuilt] == [(r["variant"], r["correct"]) for r in rows]
    with pytest.raises(SystemExit, match="not the quick preset .*'seed': 1"):
        bench.main(["--db", preference_db, "--out", str(tmp_path / "o2"), "--report-only", "true",
                    "--reference", str(tmp_path / "out" / "runs" / "seed1"), "--common", common])
    with pytest.raises(SystemExit, match="'learning_rate': 0.003"):  # trained with other flags than --common's
        bench.main(["--db", preference_db, "--out", str(tmp_path / "o2"), "--report-only", "true",
                    "--reference", str(tmp_path / "out" / "runs" / "quick")])


def test_a_merged_policy_computes_what_base_plus_adapter_computes(tiny_model_dir, tiny_adapter_dir, tmp_path):
    """bench/merged_policy.py: the folder a reward model can start from is the SFT policy itself."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from bench.merged_policy import merge

    out = merge(tiny_adapter_dir, str(tmp_path / "merged"))
    ids = torch.tensor([[1, 5, 9, 12, 3]])
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    policy = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tiny_adapter_dir).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, policy(ids).logits, atol=1e-4)
        assert not torch.allclose(merged(ids).logits, base(ids).logits, atol=1e-2)  # the adapter is in there
    assert (out / "tokenizer_config.json").exists()
