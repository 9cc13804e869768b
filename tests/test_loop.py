"""The loop benchmark (bench/loop.py): the over-optimisation data, the annotator's judgements of PPO's evaluations,
and the whole loop on the tiny model (a dozen votes through the real arena, two steps per stage)."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.annotator import Taste
from bench.loop import judge_ppo_evaluations
from core.judge.overoptimisation import COLUMNS, curve
from core.runs import read_jsonl, read_status
from tests.helpers import run_cli

REPO = Path(__file__).resolve().parent.parent

GOOD = ("1. Roast turkey - the classic centrepiece.\n2. Mashed potatoes - creamy and easy.\n3. Cornbread stuffing - "
        "savoury.\n4. Green bean casserole - a bright side.\n5. Pumpkin pie - the traditional sweet finish.")
BAD = "Sure! For Thanksgiving you could roast a turkey and bake a pie. Enjoy!"


def write_jsonl(path: Path, rows: list, torn: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + torn)


def test_curve_reads_evaluations_and_judgements(tmp_path):
    write_jsonl(tmp_path / "metrics.jsonl", [
        {"step": 0, "eval/scores": 0.1, "eval/kl": 0.0, "eval/sqrt_kl": 0.0, "eval/well_formed": 0.5},
        {"step": 1, "objective/kl": 0.3, "objective/scores": 0.2},  # a training update, not an evaluation
        {"step": 4, "eval/scores": 0.6, "eval/kl": 4.0, "eval/sqrt_kl": 1.8, "eval/well_formed": 0.75},
        {"step": 8, "eval/scores": 0.9, "eval/kl": 9.0, "eval/sqrt_kl": 2.9, "eval/well_formed": 1.0},
        {"step": 8, "eval/scores": 1.1, "eval/kl": 9.5, "eval/sqrt_kl": 3.0, "eval/well_formed": 1.0},  # resumed
    ], torn='{"step": 12, "eval/sco')
    write_jsonl(tmp_path / "judgements.jsonl", [{"step": 0, "win_rate": 0.5, "low": 0.3, "high": 0.7, "n": 16},
                                                {"step": 4, "win_rate": 0.8, "low": 0.55, "high": 0.93, "n": 16}])
    frame = curve(tmp_path)
    assert list(frame.columns) == COLUMNS and list(frame.step) == [0, 4, 8]
    assert list(frame.rm_score) == [0.1, 0.6, 1.1] and list(frame.sqrt_kl) == [0.0, 1.8, 3.0]
    assert list(frame.well_formed) == [0.5, 0.75, 1.0] and frame.kl.iloc[1] == 4.0
    assert list(frame.judge_win_rate[:2]) == [0.5, 0.8] and frame.judge_n.iloc[1] == 16
    assert math.isnan(frame.judge_win_rate.iloc[2]) and math.isnan(frame.judge_low.iloc[2])


def test_curve_without_judgements_or_files_is_empty_or_nan(tmp_path):
    empty = curve(tmp_path / "missing")
    assert empty.empty and list(empty.columns) == COLUMNS
    (tmp_path / "metrics.jsonl").write_text("")
    assert curve(tmp_path).empty
    write_jsonl(tmp_path / "metrics.jsonl", [{"step": 0, "eval/scores": 0.1, "eval/kl": 0.0, "eval/sqrt_kl": 0.0,
                                              "eval/well_formed": 0.5}])
    frame = curve(tmp_path)
    assert len(frame) == 1 and frame[["judge_win_rate", "judge_low", "judge_high", "judge_n"]].isna().all(axis=None)


def test_the_annotator_judges_each_evaluation_against_step_zero(tmp_path):
    prompts = [f"Top 5 ideas for a Thanksgiving meal, take {i}" for i in range(8)]
    rows = [{"step": 0, "prompt": p, "text": BAD} for p in prompts]
    rows += [{"step": 4, "prompt": p, "text": GOOD} for p in prompts]
    write_jsonl(tmp_path / "eval_samples.jsonl", rows)
    judged = judge_ppo_evaluations(tmp_path, Taste(slip=0.0), seed=0)
    assert [r["step"] for r in judged] == [0, 4]
    assert (judged[0]["win_rate"], judged[0]["ties"], judged[0]["n"]) == (0.5, 8, 8)  # the same lists: all ties
    assert (judged[1]["win_rate"], judged[1]["wins"]) == (1.0, 8) and judged[1]["low"] < 1.0
    assert read_jsonl(tmp_path / "judgements.jsonl") == judged
    assert list(curve(tmp_path).columns) == COLUMNS  # no metrics.jsonl yet: empty, no error


def test_the_fast_loop_runs_every_stage_through_the_real_interfaces(loop_run):
    folder, result = loop_run
    from core.store.database import Store

    # the votes arrived through the arena's API, from the annotator, with a share on its own requests
    votes = Store(folder / "out" / "loop.duckdb").votes()
    assert len(votes) == 12 and set(votes.annotator) == {"scripted"} and set(votes.choice) <= {"left", "right"}
    assert result["votes"]["own_requests"] == (votes.prompt.str.startswith("Top 5 ") & votes.split.isna()).sum()
    # every stage finished and left its outputs
    runs = {stage: Path(path) for stage, path in result["runs"].items()}
    for stage, path in runs.items():
        assert read_status(path)["state"] == "finished", stage
        assert (path / "adapter" / "adapter_config.json").exists() and (path / "metrics.jsonl").exists()
    assert (runs["reward"] / "calibration.json").exists() and (runs["ppo"] / "eval_samples.jsonl").exists()
    # stars through /rate once the annotator has seen WARMUP_LISTS (20) lists, two a vote: both lists of votes 10-12
    assert result["votes"]["ratings"] == 6 == len(Store(folder / "out" / "loop.duckdb").ratings())
    rm = result["reward_model"]
    assert rm["pairs_from_votes"] == 12 and rm["train_pairs"] + rm["eval_pairs"] == sum(
        n for k, n in rm.items() if k.startswith("pairs_from_"))
    # the over-optimisation data: three evaluations (before training and after each update), each judged
    frame = curve(runs["ppo"])
    assert list(frame.step) == [0, 1, 2] and frame.judge_n.eq(3).all() and frame.judge_win_rate.iloc[0] == 0.5
    # every metric of the report, with counts and intervals; wall time per stage
    e = result["evaluation"]
    assert {p["n"] for p in e["well_formed"].values()} == {4} and set(e["well_formed"]) == {"base", "sft", "ppo"}
    for table in (e["annotator_win_rate"], e["rm_win_rate"]):
        assert set(table) == {"ppo_vs_base", "ppo_vs_sft", "sft_vs_base"}
        assert all(w["n"] == 4 and w["low"] <= w["rate"] <= w["high"] for w in table.values())
    assert set(result["goals"]) == {"rm_heldout_accuracy", "ppo_vs_base_annotator", "ppo_well_formed",
                                    "minutes_after_votes"}
    assert {"votes", "sft", "reward", "ppo", "evaluate", "after_votes"} <= set(result["wall_s"])
    for name in ("loop.md", "loop.html", "loop_samples.jsonl"):
        assert (folder / "out" / name).stat().st_size > 0
    assert "sqrt(KL)" in (folder / "out" / "loop.html").read_text()


def test_the_loop_reports_the_numbers_core_eval_gives(loop_run, tiny_model_dir, tmp_path):
    """Step 7 samples as `python -m core eval` does: the same lists, the same reward-model win rate."""
    folder, result = loop_run
    out = tmp_path / "eval.json"
    run_cli("eval", "--policy", result["runs"]["ppo"], "--against", "base", "--reward-model", result["runs"]["reward"],
            "--base-model", tiny_model_dir, "--prompts", "4", "--max-new-tokens", "12", "--out", out)
    report = json.loads(out.read_text())
    samples = read_jsonl(folder / "out" / "loop_samples.jsonl")
    assert [s["policy_text"] for s in report["samples"]] == [s["ppo_text"] for s in samples]
    assert [s["against_text"] for s in report["samples"]] == [s["base_text"] for s in samples]
    loop_rm = result["evaluation"]["rm_win_rate"]["ppo_vs_base"]
    assert {k: report["win_rate"][k] for k in ("wins", "losses", "ties")} == \
        {k: loop_rm[k] for k in ("wins", "losses", "ties")}
    assert report["well_formed"]["policy"]["hits"] == result["evaluation"]["well_formed"]["ppo"]["hits"]


def test_seed_list_variants_are_trained_on_the_loops_votes_and_judged_by_its_annotator(loop_run, tiny_model_dir):
    """bench/seed_lists.py after the tiny loop: the loop's SFT (fill, weight 2) stands for its variant; the others
    are trained on the loop's database, with exactly the seed and own lists their flags say."""
    import shutil

    from core.collect.library import load_seed_demonstrations
    from core.store.database import Store

    folder, loop = loop_run
    copy, out = folder / "seed-lists-loop", folder / "seed-lists"
    shutil.copytree(folder / "out", copy, ignore=shutil.ignore_patterns("*.lock", "*.gate"))
    seeded = [d.prompt for d in load_seed_demonstrations() if d.prompt.split == "train"][:2]
    for prompt in seeded:  # two lists of the person's own for train-split requests that have a seed list
        Store(copy / "loop.duckdb").record_demonstration(prompt, "1. A\n2. B\n3. C\n4. D\n5. E", "scripted")
    done = subprocess.run([sys.executable, "-m", "bench.seed_lists", "--loop", str(copy), "--out", str(out),
                           "--base-model", tiny_model_dir, "--sft-args=--eval-prompts 0 --max-steps 1 --batch-size 2",
                           "--eval-prompts", "4", "--max-new-tokens", "8"], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads((out / "seed_lists.json").read_text())
    variants = result["variants"]
    assert list(variants) == ["keep-w1", "fill-w2", "fill-w8", "off-w2"] and result["taste"] == "form"
    assert variants["fill-w2"]["run"] == loop["runs"]["sft"]  # reused, not retrained
    keep, off = variants["keep-w1"]["lineage"], variants["off-w2"]["lineage"]
    own = keep["from_arena"]
    assert own >= 2 and off["from_arena"] == own
    assert (off["seed"], off["demonstrations"]) == (0, 2 * own)
    assert keep["seed_replaced"] == 0 and keep["demonstrations"] == keep["seed"] + own
    assert variants["fill-w2"]["lineage"]["seed"] == keep["seed"] - variants["fill-w2"]["lineage"]["seed_replaced"]
    heavy = variants["fill-w8"]["lineage"]
    assert heavy["demonstrations"] == heavy["seed"] + 8 * own and heavy["seed_replaced"] == 2
    for name, row in variants.items():
        assert row["vs_base"]["n"] == 4, name
        assert ("vs_keep-w1" in row) == (name != "keep-w1")
    assert set(result["utility"]) == {"base", *variants} and len(result["samples"]) == 4
    assert "| off-w2 | `--seed-lists off --own-weight 2` |" in (out / "seed_lists.md").read_text()


def run_ppo_budget(folder: Path, out: Path, model: str, *args) -> dict:
    """bench/ppo_budget.py on the tiny loop with one-update PPO runs; its ppo_budget.json."""
    done = subprocess.run([sys.executable, "-m", "bench.ppo_budget", "--loop", str(folder / "out"), "--out", str(out),
                           "--base-model", model, *map(str, args),
                           "--ppo-args=--total-updates 1 --batch-size 4 --mini-batches 2 --ppo-epochs 1 "
                           "--response-length 8 --norm-samples 4 --eval-every 0",
                           "--eval-prompts", "4", "--max-new-tokens", "8"], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads((out / "ppo_budget.json").read_text())


def test_ppo_budget_trains_each_variant_from_the_loops_sft_and_reward_model(loop_run, tiny_model_dir):
    """bench/ppo_budget.py after the tiny loop: the variant starts from the loop's SFT with its reward model, its
    flags override --ppo-args, and every PPO is judged against SFT and the base by the loop's annotator."""
    folder, loop = loop_run
    out = folder / "ppo-budget"
    result = run_ppo_budget(folder, out, tiny_model_dir, "--variants", "b16")
    assert list(result["ppo"]) == ["loop", "b16"] and result["taste"] == "form"
    run = Path(result["ppo"]["b16"]["run"])
    assert read_status(run)["state"] == "finished"
    config = json.loads((run / "config.json").read_text())
    assert config["sft_adapter"] == loop["runs"]["sft"] and config["reward_model"] == loop["runs"]["reward"]
    assert result["ppo"]["b16"]["budget"] == {"total_updates": 1, "batch_size": 16, "episodes": 16}  # b16 wins
    assert result["ppo"]["loop"]["run"] == loop["runs"]["ppo"] and result["ppo"]["loop"]["budget"]["batch_size"] == 4
    for name, row in result["ppo"].items():
        assert row["vs_sft"]["n"] == 4 and row["vs_base"]["n"] == 4, name
        assert row["vs_sft"]["low"] <= row["vs_sft"]["rate"] <= row["vs_sft"]["high"]
    assert result["ppo"]["b16"]["wall_s"] > 0
    assert set(result["utility"]) == set(result["mean_rm_score"]) == {"base", "sft", "loop", "b16"}
    assert len(result["samples"]) == 4 and "| b16 | 1 x 16 |" in (out / "ppo_budget.md").read_text()


def test_ppo_budget_trains_against_another_reward_model_and_scores_with_both(loop_run, tiny_model_dir):
    """--reward-model: the variant's PPO trains against that run (here a copy of the loop's, so both score alike),
    the loop's own PPO stays, and the report scores every policy with both reward models."""
    folder, loop = loop_run
    other = folder / "other-reward"
    shutil.copytree(loop["runs"]["reward"], other)
    out = folder / "ppo-other-rm"
    result = run_ppo_budget(folder, out, tiny_model_dir, "--variants", "quick", "--reward-model", other)
    assert list(result["ppo"]) == ["loop", "quick"]
    config = json.loads((Path(result["ppo"]["quick"]["run"]) / "config.json").read_text())
    assert config["reward_model"] == str(other) and config["sft_adapter"] == loop["runs"]["sft"]
    assert result["runs"]["loop_reward"] == loop["runs"]["reward"]
    assert set(result["mean_loop_rm_score"]) == set(result["mean_rm_score"]) == {"base", "sft", "loop", "quick"}
    for name, score in result["mean_rm_score"].items():
        assert score == pytest.approx(result["mean_loop_rm_score"][name], abs=1e-4), name
    assert "loop's RM" in (out / "ppo_budget.md").read_text()


def test_ppo_budget_refuses_a_folder_without_a_loop_or_an_unknown_variant(tmp_path):
    for args, says in ((["--loop", str(tmp_path)], "no finished loop"),
                       (["--loop", str(tmp_path), "--variants", "b99"], "(not b99)"),
                       (["--loop", str(tmp_path), "--variants", "quick"], "retrains the loop's own PPO"),
                       (["--loop", str(tmp_path), "--reward-model", str(tmp_path)], "holds no finished reward run"),
                       (["--loop", str(tmp_path), "--eval-prompts", "many"], "'many' is not a valid int")):
        done = subprocess.run([sys.executable, "-m", "bench.ppo_budget", *args], cwd=REPO, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode != 0 and says in done.stderr and "Traceback" not in done.stderr


def test_best_of_n_samples_scores_and_judges_the_loops_sft(loop_run, tiny_model_dir):
    """bench/best_of_n.py after the tiny loop: n candidates and a reference per request from the loop's SFT, scored by
    its reward model as RewardScorer scores them, and both pickers judged against the reference by its annotator."""
    from core.train.reward_model import RewardScorer

    folder, loop = loop_run
    out = folder / "best-of-n"
    done = subprocess.run([sys.executable, "-m", "bench.best_of_n", "--loop", str(folder / "out"), "--out", str(out),
                           "--base-model", tiny_model_dir, "--n", "2", "--eval-prompts", "3", "--max-new-tokens", "8",
                           "--resamples", "50"], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads((out / "best_of_n.json").read_text())
    assert (result["policy"], result["reward_model"], result["taste"]) == (loop["runs"]["sft"], loop["runs"]["reward"],
                                                                            "form")
    assert [row["k"] for row in result["best_of"]] == [1, 2] and len(result["samples"]) == 3
    for row in result["best_of"]:
        assert row["rm_vs_reference"]["n"] == row["annotator_vs_reference"]["n"] == 3
    one = result["best_of"][0]  # best of one is candidate 0 for both pickers
    assert one["rm_utility"] == one["annotator_utility"]
    sample = result["samples"][0]
    assert len(sample["candidates"]) == len(sample["rm_scores"]) == len(sample["utilities"]) == 2
    rescored = RewardScorer.from_folder(loop["runs"]["reward"]).score([sample["prompt"]] * 2, sample["candidates"])
    assert rescored == pytest.approx(sample["rm_scores"], abs=1e-4)
    assert result["on_policy"]["decided"] <= 3 and "| 2 | 0.19 |" in (out / "best_of_n.md").read_text()
    from bench.best_of_n import main as best_of_n

    again = best_of_n(  # --report-only re-reads the samples: the same figures
        ["--loop", str(folder / "out"), "--out", str(out), "--report-only"])
    same = [json.dumps([r["best_of"], r["on_policy"], r["policy"]]) for r in (again, result)]  # NaN where none decided
    assert same[0] == same[1]
    rescore = best_of_n(  # --samples-from scores the saved lists anew: with the same reward model, the same figures
        ["--loop", str(folder / "out"), "--out", str(folder / "rescored"), "--samples-from", str(out)])
    assert [x for s in rescore["samples"] for x in s["rm_scores"]] == pytest.approx(
        [x for s in result["samples"] for x in s["rm_scores"]], abs=1e-4)
    assert json.dumps([rescore["best_of"], rescore["policy"]]) == json.dumps([result["best_of"], result["policy"]])


def test_rejudge_draws_each_policy_several_times_and_judges_it_against_the_reference(loop_run, tiny_model_dir):
    """bench/rejudge.py on the tiny loop's runs: draws x requests verdicts per policy, draw d against draw d."""
    from bench.rejudge import main as rejudge

    folder, loop = loop_run
    result = rejudge(["--reference", f"sft={loop['runs']['sft']}", "--policies", f"ppo={loop['runs']['ppo']},base=base",
                      "--samples", "2", "--eval-prompts", "3", "--max-new-tokens", "8", "--base-model",
                      tiny_model_dir, "--resamples", "50", "--out", str(folder / "rejudge")])
    assert set(result["policies"]) == {"ppo", "base"} and len(result["samples"]) == 3
    for r in result["policies"].values():
        assert r["n"] == r["wins"] + r["losses"] + r["ties"] == 6 and len(r["per_draw"]) == 2 and r["low"] <= r["rate"]
    assert {"sft@0", "sft@1", "ppo@0", "ppo@1", "base@0"} <= set(result["samples"][0])
    assert "| ppo |" in (folder / "rejudge" / "rejudge.md").read_text()
