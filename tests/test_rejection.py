"""Rejection-sampling fine-tuning: the pick and its metrics against hand-worked values, the stage on the tiny model
(sampled lists stood in, so the picks are known: the reward model's best is what trains, run folder, SFT's adapter
goes on training, base untouched), the real CLI's sampling and its bad input as one line, the Train page's form."""
from __future__ import annotations

import hashlib
import shutil
import signal
from functools import partial
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file
from streamlit.testing.v1 import AppTest

from core.config import ConfigError, build
from core.records import InputError
from core.runs import read_json, read_jsonl, read_status
from core.train import rejection
from core.train.rejection import (
    RejectionConfig,
    best_over_worst,
    candidate_metrics,
    pick_best,
    sampling_message,
)
from core.train.reward_model import RewardScorer
from tests.helpers import ADAPTER_FILES, run_files, stage_cli

REPO = Path(__file__).resolve().parent.parent
LONG = "1. Apple - crisp and sweet.\n2. Pear - soft.\n3. Fig - rich.\n4. Plum - tart.\n5. Kiwi - green."
SHORT = "1. Apple\n2. Pear\n3. Fig\n4. Plum\n5. Kiwi"


rejection_cli = partial(stage_cli, "rejection")  # `python -m core train rejection ARGS`, one thread


# ---- the pick and its metrics ---------------------------------------------------------------------------------------
def candidate(reward: float, finished: bool = True, well_formed: bool = True) -> dict:
    return {"reward": reward, "finished": finished, "well_formed": well_formed}


def test_the_best_list_is_kept_when_it_ended_and_clears_the_gap_over_its_siblings_mean():
    group = [candidate(0.5), candidate(2.0), candidate(-1.0)]
    assert pick_best(group, 0.0) is group[1]
    assert pick_best(group, 2.25) is group[1]  # 2.0 - mean(0.5, -1.0) = 2.25: just clears it
    assert pick_best(group, 2.26) is None
    assert pick_best([candidate(3.0, finished=False), candidate(1.0)], 0.0) is None  # the best never ended: none


def test_best_over_worst_pairs_the_best_finished_list_with_the_lowest():
    def c(text, reward, finished=True):
        return {"prompt": "q", "text": text, "reward": reward, "finished": finished}

    pairs = best_over_worst([[c("a", 0.5), c("b", 3.0, finished=False), c("c", 1.5), c("d", -2.0, finished=False)],
                             [c("e", 1.0), c("f", 1.0)],                      # all tie: nothing to prefer
                             [c("g", 2.0, finished=False), c("h", 0.0, finished=False)]])  # none ended
    assert pairs == [{"prompt": "q", "chosen": "c", "rejected": "d", "gap": 3.5}]  # b scored higher but ran on


def test_widest_keeps_the_share_with_the_largest_gaps_in_order():
    pairs = [{"chosen": k, "gap": g} for k, g in zip("abcd", (0.1, 2.0, 0.5, 1.0))]
    assert [p["chosen"] for p in rejection.widest(pairs, 0.5)] == ["b", "d"]
    assert [p["chosen"] for p in rejection.widest(pairs, 0.75)] == ["b", "c", "d"]
    assert rejection.widest(pairs, 1.0) == pairs
    assert [p["chosen"] for p in rejection.widest(pairs, 0.01)] == ["b"]  # at least one
    assert rejection.widest([], 0.5) == []


def test_lists_from_another_policy_are_warned_about_and_one_adapter_by_two_paths_is_not(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sft").mkdir()
    with caplog.at_level("WARNING", logger="core.train.rejection"):
        rejection.warn_unless_own_lists("R", {"sft_adapter": "sft"}, str(tmp_path / "sft"), "--pairs-from")
        rejection.warn_unless_own_lists("R", {}, "", "--pairs-from")  # the base sampled, the base starts
        assert not caplog.records
        rejection.warn_unless_own_lists("R", {"sft_adapter": "sft"}, "", "--candidates-from")
    assert caplog.messages == ["--candidates-from R sampled from sft, and this run starts from the base: the lists "
                               "are not this policy's own"]


def test_the_sampling_status_says_which_list_and_the_time_left_at_the_pace_so_far():
    assert sampling_message(0, 8, 288, 0.0) == "sampling list 1 of 8 for each of 288 requests"
    # 2 draws in 420 s: 210 s a draw, 6 to go = 21 min
    assert sampling_message(2, 8, 288, 420.0) == "sampling list 3 of 8 for each of 288 requests, about 21 min left"
    assert sampling_message(7, 8, 10, 49.0).endswith("list 8 of 8 for each of 10 requests, under a minute left")


def test_candidate_metrics_by_hand():
    group = [candidate(1.0), candidate(3.0, well_formed=False), candidate(-2.0, finished=False)]
    metrics = candidate_metrics(group, [group[1]])
    assert metrics == {"rejection/candidates": 3, "rejection/kept": 1, "rejection/reward_mean": pytest.approx(2 / 3),
                       "rejection/reward_best": 3.0, "rejection/gain": pytest.approx(3.0 - 2 / 3),
                       "rejection/unfinished": pytest.approx(1 / 3), "rejection/well_formed_all": pytest.approx(2 / 3),
                       "rejection/well_formed_best": 0.0}


def test_each_draw_is_the_starting_policy_sampled_with_its_own_seed(tiny_model_dir, tiny_adapter_dir):
    """The plain engine: draw d of the adapter's lists is exactly what the adapter samples with seed + 10000 d."""
    from peft import PeftModel

    from core.collect.generate import complete
    from core.model import load
    from core.records import SamplingSettings

    cfg = build(RejectionConfig, reward_model="unused", sft_adapter=tiny_adapter_dir, base_model=tiny_model_dir,
                num_samples="2", max_new_tokens="6", engine="plain", seed="3")
    requests = ["Top 5 fruits", "Top 5 board games for two"]
    drawn = []
    groups = rejection.sample_candidates(cfg, requests, "cpu", on_draw=lambda d: drawn.append(d) or True)
    assert drawn == [0, 1] and [[c["draw"] for c in g] for g in groups] == [[0, 1], [0, 1]]
    loaded = load(tiny_model_dir, "cpu")
    policy = PeftModel.from_pretrained(loaded.model, tiny_adapter_dir).eval()
    for d in (0, 1):
        expected = complete(policy, loaded.tokenizer, requests, SamplingSettings(temperature=0.8, max_new_tokens=6),
                            3 + 10_000 * d)
        assert [g[d]["text"] for g in groups] == [c.text for c in expected]
    assert [g[0]["prompt"] for g in groups] == requests
    assert rejection.sample_candidates(cfg, requests, "cpu", on_draw=lambda d: d < 1) is None  # stopped after one


# ---- the stage on the tiny model -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base_weights(tiny_model_dir):
    return hashlib.sha256((Path(tiny_model_dir) / "model.safetensors").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def stood_in_run(tiny_model_dir, tiny_adapter_dir, tiny_reward_run, base_weights, tmp_path_factory):
    """The stage in-process with its sampler stood in by fixed lists (the tiny model's own lists never end in a
    test's budget): two requests, three lists each, the third cut off."""
    lists = [LONG, SHORT, "1. Apple\n2. Pe"]
    sampled = []

    def fake_sampler(cfg, requests, device, on_draw):
        sampled.append((cfg.num_samples, list(requests)))
        return [[{"prompt": r, "text": text, "finished": d < 2, "draw": d} for d, text in enumerate(lists)]
                for r in requests]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rejection, "sample_candidates", fake_sampler)
        mp.setattr(signal, "signal", lambda *args: None)  # in-process: leave pytest's Ctrl-C alone
        out = tmp_path_factory.mktemp("rejection") / "run"
        rejection.train(build(RejectionConfig, reward_model=str(tiny_reward_run), sft_adapter=tiny_adapter_dir,
                              max_prompts="2", num_samples="3", max_steps="2", batch_size="2",
                              learning_rate="1e-2", output_dir=str(out)))
    return out, sampled


def test_the_reward_models_best_finished_list_is_what_trains(stood_in_run, tiny_reward_run):
    out, sampled = stood_in_run
    (asked,) = sampled
    assert asked[0] == 3 and len(asked[1]) == 2  # --max-prompts 2 of the train split, 3 lists each
    samples = read_jsonl(out / "samples.jsonl")
    assert len(samples) == 6 and {s["step"] for s in samples} == {0}
    scorer = RewardScorer.from_folder(tiny_reward_run, device="cpu")
    for request in asked[1]:
        rows = [s for s in samples if s["prompt"] == request]
        scores = scorer.score([request] * 3, [r["text"] for r in rows])
        assert [r["score"] for r in rows] == pytest.approx(scores, abs=1e-4)
        assert rows[2]["reward"] == pytest.approx(rows[2]["score"] - 1.0)  # cut off: the missing-EOS penalty
        best = max(rows, key=lambda r: r["reward"])
        assert [r["picked"] for r in rows] == [r is best and r["finished"] for r in rows]
    metrics = read_jsonl(out / "metrics.jsonl")
    assert metrics[0]["step"] == 0 and metrics[0]["rejection/kept"] == sum(s["picked"] for s in samples)
    assert metrics[0]["rejection/unfinished"] == pytest.approx(1 / 3)
    assert [m["step"] for m in metrics if "train/loss" in m] == [1, 2]


def test_run_folder_holds_exactly_the_prompts_samples_adapter_and_logs(stood_in_run, tiny_model_dir, tiny_adapter_dir,
                                                                       tiny_reward_run):
    out, _ = stood_in_run
    assert run_files(out) == ADAPTER_FILES | {"config.json", "status.json", "metrics.jsonl", "train.log",
                                              "samples.jsonl", "data/lineage.json", "data/prompts_train.jsonl"}
    status = read_status(out)
    assert (status["state"], status["step"]) == ("finished", 2)
    config = read_json(out / "config.json")
    assert (config["stage"], config["base_model_resolved"], config["reward_model"], config["sft_adapter"]) == (
        "rejection", tiny_model_dir, str(tiny_reward_run), tiny_adapter_dir)


def test_sfts_adapter_goes_on_training_and_the_base_stays_untouched(stood_in_run, tiny_model_dir, tiny_adapter_dir,
                                                                    base_weights):
    out, _ = stood_in_run
    sft = load_file(Path(tiny_adapter_dir) / "adapter_model.safetensors")
    tuned = load_file(out / "adapter" / "adapter_model.safetensors")
    assert set(tuned) == set(sft)  # SFT's adapter, continued: a whole policy on the base
    assert any(not (tuned[k] == sft[k]).all() for k in sft)
    assert hashlib.sha256((Path(tiny_model_dir) / "model.safetensors").read_bytes()).hexdigest() == base_weights


def test_candidates_from_a_finished_run_retrain_on_its_picks_without_sampling(stood_in_run, tiny_adapter_dir,
                                                                               tiny_reward_run, tmp_path, monkeypatch):
    first, _ = stood_in_run

    def no_sampling(*args):
        raise AssertionError("--candidates-from must not sample")

    monkeypatch.setattr(rejection, "sample_candidates", no_sampling)
    monkeypatch.setattr(signal, "signal", lambda *args: None)
    out = tmp_path / "again"
    rejection.train(build(RejectionConfig, candidates_from=str(first), sft_adapter=tiny_adapter_dir,
                          max_steps="1", batch_size="2", output_dir=str(out)))
    keep = ("prompt", "text", "score", "reward", "picked")
    assert [{k: s[k] for k in keep} for s in read_jsonl(out / "samples.jsonl")] == [
        {k: s[k] for k in keep} for s in read_jsonl(first / "samples.jsonl")]
    assert read_json(out / "config.json")["reward_model"] == str(tiny_reward_run)  # the lineage: who scored them
    assert read_json(out / "data" / "lineage.json")["rounds"] == read_json(tiny_reward_run / "data" / "lineage.json")[
        "rounds"] != {}  # and the rounds whose votes trained it
    assert read_status(out)["state"] == "finished"
    with pytest.raises(InputError, match="holds no scored lists"):
        rejection.train(build(RejectionConfig, candidates_from=str(tmp_path), output_dir=str(tmp_path / "x")))


def test_candidates_from_with_another_reward_model_rescores_the_same_lists(stood_in_run, tiny_adapter_dir,
                                                                           tiny_reward_run, tmp_path, monkeypatch):
    """--candidates-from with --reward-model naming another reward model: the same lists, no sampling, each scored
    by that model (here the tiny one with its score head negated, so every score flips sign and the picks move);
    with --sample-only the lists' sampler stays the policy, so DPO's --pairs-from starts from it."""
    first, _ = stood_in_run
    flipped = tmp_path / "flipped-reward"
    shutil.copytree(tiny_reward_run, flipped)
    weights = flipped / "adapter" / "adapter_model.safetensors"
    tensors = load_file(weights)
    assert [k for k in tensors if "score" in k] == ["base_model.model.score.weight"]  # no bias: -w gives -score
    save_file({k: -v if "score" in k else v for k, v in tensors.items()}, weights)
    monkeypatch.setattr(rejection, "sample_candidates", lambda *args: pytest.fail("re-scoring must not sample"))
    monkeypatch.setattr(signal, "signal", lambda *args: None)
    out = tmp_path / "rescored"
    rejection.train(build(RejectionConfig, candidates_from=str(first), reward_model=str(flipped),
                          sample_only="true", output_dir=str(out)))
    before, after = read_jsonl(first / "samples.jsonl"), read_jsonl(out / "samples.jsonl")
    assert [(s["prompt"], s["text"]) for s in after] == [(s["prompt"], s["text"]) for s in before]
    assert [s["score"] for s in after] == pytest.approx([-s["score"] for s in before], abs=1e-4)
    assert [s["reward"] for s in after] == pytest.approx(
        [-s["score"] - (0.0 if s["finished"] else 1.0) for s in before], abs=1e-4)
    assert [s["picked"] for s in after] != [s["picked"] for s in before]
    config = read_json(out / "config.json")
    assert (config["reward_model"], config["sft_adapter"]) == (str(flipped), tiny_adapter_dir)
    assert read_status(out)["message"] == "6 lists re-scored; nothing trained" and not (out / "adapter").exists()
    again = tmp_path / "same-model"  # the reward model that scored them: their scores, nothing re-scored
    monkeypatch.setattr(rejection, "scored", lambda *args: pytest.fail("the same reward model must not re-score"))
    rejection.train(build(RejectionConfig, candidates_from=str(first), reward_model=str(tiny_reward_run),
                          sft_adapter=tiny_adapter_dir, max_steps="1", batch_size="2", output_dir=str(again)))
    assert [s["score"] for s in read_jsonl(again / "samples.jsonl")] == [s["score"] for s in before]


def test_sample_only_scores_every_list_and_trains_nothing(tiny_adapter_dir, tiny_reward_run, tmp_path, monkeypatch):
    """--sample-only (online DPO's first run): the scored lists in samples.jsonl, a finished run, no adapter, so no
    policy picker offers it; a DPO run can take its pairs."""
    monkeypatch.setattr(rejection, "sample_candidates", lambda cfg, requests, device, on_draw: [
        [{"prompt": r, "text": text, "finished": True, "draw": d} for d, text in enumerate((LONG, SHORT))]
        for r in requests])
    monkeypatch.setattr(signal, "signal", lambda *args: None)
    out = tmp_path / "scored"
    rejection.train(build(RejectionConfig, reward_model=str(tiny_reward_run), sft_adapter=tiny_adapter_dir,
                          max_prompts="3", num_samples="2", sample_only="true", output_dir=str(out)))
    assert run_files(out) == {"config.json", "status.json", "metrics.jsonl", "train.log", "samples.jsonl",
                              "data/lineage.json", "data/prompts_train.jsonl"}
    status = read_status(out)
    assert status["state"] == "finished" and "nothing trained" in status["message"]
    samples = read_jsonl(out / "samples.jsonl")
    assert len(samples) == 6 and all("score" in s for s in samples)
    assert not any("train/loss" in m for m in read_jsonl(out / "metrics.jsonl"))
    from core.train.rejection import read_candidates

    assert len(best_over_worst(read_candidates(str(out), 1.0))) == 3  # two distinct lists per request: a pair each


# ---- the real CLI: sampling, and bad input as one line -------------------------------------------------------------
def test_the_cli_samples_and_says_what_to_change_when_no_list_ended(tiny_model_dir, tiny_reward_run, tmp_path):
    """Through the real sampler: the tiny model's lists never end in 4 tokens, so nothing is kept."""
    out = tmp_path / "run"
    done = rejection_cli("--base-model", tiny_model_dir, "--reward-model", tiny_reward_run, "--max-prompts", "2",
                         "--num-samples", "2", "--max-new-tokens", "4", "--engine", "plain", "--output-dir", out,
                         check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith("lower --min-gap or raise --max-new-tokens.")
    samples = read_jsonl(out / "samples.jsonl")  # what was sampled and scored is kept for inspection
    assert len(samples) == 4 and not any(s["finished"] or s["picked"] for s in samples)
    assert read_status(out)["state"] == "failed"


def test_no_reward_model_exits_2_with_one_line_before_anything_is_written(tmp_path):
    done = rejection_cli("--output-dir", tmp_path / "run", check=False)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: rejection sampling needs a reward model: pass --reward-model models/runs/reward-<timestamp>."]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("settings, message", [
    ({"num_samples": "1"}, "num-samples must be at least 2 (the best of one is no choice), e.g. 4."),
    ({"min_gap": "-1"}, "min-gap must be >= 0 (0 keeps every request's best list)."),
    ({"max_prompts": "-3"}, "max-prompts must be >= 0 (0: every request)."),
    ({"candidates_from": "x", "sample_only": "true", "reward_model": ""}, "sample-only with candidates-from has "
     "nothing to do: pass --reward-model to re-score the lists, or drop one of them."),
])
def test_bad_settings_say_what_to_pass_instead(settings, message):
    with pytest.raises(ConfigError) as err:
        build(RejectionConfig, "quick", **({"reward_model": "models/runs/reward-x"} | settings))
    assert str(err.value) == message


def test_the_train_page_offers_the_best_of_n_form(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_DB", str(tmp_path / "db.duckdb"))
    monkeypatch.setenv("RLHF_RUNS_DIR", str(tmp_path / "runs"))
    (tmp_path / "runs").mkdir()
    at = AppTest.from_file(str(REPO / "apps" / "dashboard.py"), default_timeout=120).run()
    at.switch_page("dashboard_pages/train.py").run()
    at.radio(key="stage").set_value("rejection").run()
    assert not at.exception
    assert "rejection sampling needs a reward model" in at.error[0].value
    assert at.text_input(key="rejection:quick:num_samples").value == "4"
    assert at.selectbox(key="rejection:quick:sft_adapter").options[0] == "(none)"
    assert at.selectbox(key="rejection:quick:candidates_from").options == ["(none)"]  # a finished rejection run
    at.radio(key="stage").set_value("dpo").run()
    assert at.selectbox(key="dpo:quick:pairs_from").options == ["(none)"]
