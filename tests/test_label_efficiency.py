"""bench/label_efficiency.py: the issue's figure from hand-made rows, and the benchmark on the tiny model (both
strategies vote on the same held-out pairs, uncertain pairs carry their prediction, a rerun samples nothing)."""
from __future__ import annotations

import json

import pytest

import bench.label_efficiency as bench
from core.store.database import Store


def row(strategy, votes, correct, pairs=20):
    return {"strategy": strategy, "votes": votes, "decided_this_round": votes, "accuracy": correct / pairs,
            "correct": correct, "pairs": pairs}


def test_votes_needed_is_the_fewest_uncertain_votes_that_reach_randoms_last_accuracy():
    rows = [row("random", 60, 14), row("random", 120, 15), row("random", 200, 16),
            row("uncertain", 60, 15), row("uncertain", 120, 16), row("uncertain", 200, 17)]
    assert bench.votes_needed(rows) == {"random_votes": 200, "random_accuracy": 0.8, "votes": 120, "share": 0.6}
    never = [r for r in rows if r["strategy"] == "random"] + [row("uncertain", 60, 10), row("uncertain", 200, 15)]
    assert bench.votes_needed(never)["votes"] is None and bench.votes_needed(never)["share"] is None
    assert bench.votes_needed(rows + [row("informative", 60, 16)], "informative")["share"] == 0.3
    assert bench.votes_needed(rows[:3]) is None  # one strategy missing: no figure


def test_a_random_model_at_chance_makes_the_figure_say_nothing(tmp_path):
    cfg = bench.EfficiencyConfig(out=str(tmp_path), budgets=[60, 200])
    rows = [row("random", 60, 10), row("random", 200, 12), row("uncertain", 60, 12), row("uncertain", 200, 12)]
    text = bench.write_report(tmp_path, cfg, rows)
    assert "uncertain reaches it with 60 (30% of them" in text and "not above chance" in text
    assert "not above chance" not in bench.write_report(tmp_path, cfg, rows[:1] + [row("random", 200, 17)] + rows[2:])


def test_a_cell_gives_accuracy_interval_and_counts():
    assert bench.cell(row("random", 60, 15)) == "0.750 [0.531, 0.888] (15/20; 60 decided of this round's votes)"
    assert bench.cell(None) == "-"


def test_chosen_pairs_measures_how_close_each_way_of_choosing_was(monkeypatch):
    import pandas as pd
    monkeypatch.setattr(bench, "utility", lambda prompt, text, taste: {"a": 3.0, "b": 1.0, "c": 0.5}[text])
    votes = pd.DataFrame({"split": ["train"] * 4 + ["eval"], "choice": ["left", "right", "left", "tie", "left"],
                          "chosen_by": ["random", "random", "uncertain", "uncertain", "random"],
                          "prompt": ["p"] * 5, "left_text": ["a", "a", "b", "a", "a"],
                          "right_text": ["b", "c", "c", "b", "c"]})
    # random: gaps 2 (followed) and 2.5 (not followed); uncertain: gap 0.5 (followed); the tie and eval are left out
    assert bench.chosen_pairs(votes, "terse") == {
        "random": {"votes": 2, "mean_abs_gap": 2.25, "vote_follows_utility": 0.5, "utilities_differ": 2},
        "uncertain": {"votes": 1, "mean_abs_gap": 0.5, "vote_follows_utility": 1.0, "utilities_differ": 1}}


@pytest.fixture(scope="module")
def efficiency_run(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("label_efficiency")
    args = ["--out", str(out), "--base-model", tiny_model_dir, "--device", "cpu", "--train-prompts", "8",
            "--eval-prompts", "6", "--budgets", "6,12", "--max-new-tokens", "12", "--forced-choice", "true",
            "--reward-args", "--max-steps 2"]
    return out, args, bench.main(args)


def test_both_strategies_train_at_every_budget_on_the_same_held_out_votes(efficiency_run):
    out, _, rows = efficiency_run
    assert [(r["strategy"], r["votes"]) for r in rows] == [("random", 6), ("random", 12), ("uncertain", 6),
                                                           ("uncertain", 12)]
    assert all(r["pairs"] == 6 for r in rows)  # forced choice: every held-out pair is decided
    held_out = {}
    for strategy in ("random", "uncertain"):
        votes = Store(out / strategy / "votes.duckdb").votes()
        assert len(votes) == 6 + 12
        eval_votes = votes[votes.split == "eval"]
        held_out[strategy] = sorted(zip(eval_votes.prompt, eval_votes.left_text, eval_votes.right_text,
                                        eval_votes.choice))
        assert (out / strategy / "reward-12" / "calibration.json").exists()
    assert held_out["random"] == held_out["uncertain"] and len(held_out["random"]) == 6
    report = json.loads((out / "label_efficiency.json").read_text())
    assert report["rows"] == rows and "| 12 |" in (out / "label_efficiency.md").read_text()
    assert report["chosen_pairs"]["uncertain"]["uncertain"]["votes"] == 6  # the second round's decided votes
    for budget in ("6", "12"):  # every held-out vote is matched across the two databases, each discordant one counted
        d = report["paired"]["uncertain"][budget]
        assert d["only_uncertain"] + d["only_random"] <= 6 and 0 <= d["mcnemar_p"] <= 1
    # the first round is random for both, on the same votes and seed: the two reward models are one model
    assert report["paired"]["uncertain"]["6"] == {"only_uncertain": 0, "only_random": 0, "mcnemar_p": 1.0}
    assert rows[0]["correct"] == rows[2]["correct"]


def test_uncertain_pairs_after_the_first_round_carry_their_prediction(efficiency_run):
    out, _, _ = efficiency_run
    train = Store(out / "uncertain" / "votes.duckdb").votes().query("split == 'train'").sort_values("created_at")
    first, second = train.iloc[:6], train.iloc[6:]
    assert set(first.chosen_by) == {"random"}  # no reward model yet
    assert set(second.chosen_by) == {"uncertain"}
    assert second.predicted_p_left.between(0, 1).all()
    assert (second.left_text != second.right_text).all()
    random_train = Store(out / "random" / "votes.duckdb").votes().query("split == 'train'")
    assert set(random_train.chosen_by) == {"random"} and random_train.predicted_p_left.isna().all()


def test_a_rerun_reads_its_candidates_back_and_samples_nothing(efficiency_run, monkeypatch):
    out, args, _ = efficiency_run
    cached = (out / "candidates.jsonl").read_text()
    assert len(cached.splitlines()) == 8 and len((out / "held_out.jsonl").read_text().splitlines()) == 6

    def no_loading(*_, **__):
        raise AssertionError("the model was loaded although every candidate was cached")
    monkeypatch.setattr(bench, "load", no_loading)
    rows = bench.main(args + ["--budgets", "6", "--taste", "terse"])
    assert [r["votes"] for r in rows] == [6, 6] and (out / "candidates.jsonl").read_text() == cached
    with pytest.raises(AssertionError, match="was loaded"):  # other sampling settings: the cache does not serve
        bench.main(args + ["--budgets", "6", "--max-new-tokens", "10"])


def test_a_report_only_rebuild_keeps_the_runs_budgets_and_taste(efficiency_run, tmp_path):
    out, _, _ = efficiency_run
    saved = json.loads((out / "label_efficiency.json").read_text())
    rows = bench.main(["--out", str(out), "--report-only", "true"])  # no --budgets, no --taste: the run's own
    again = json.loads((out / "label_efficiency.json").read_text())
    assert rows == saved["rows"] and again["config"]["budgets"] == saved["config"]["budgets"]
    assert again["config"]["taste"] == saved["config"]["taste"] and again["chosen_pairs"] == saved["chosen_pairs"]
    assert again["chosen_pairs"]["held out"]["held out"]["votes"] == 6  # forced choice: every held-out vote decided
    assert "| 50 |" not in (out / "label_efficiency.md").read_text()
    with pytest.raises(SystemExit, match="holds no label_efficiency.json"):
        bench.main(["--out", str(tmp_path / "none"), "--report-only", "true"])
    assert not (tmp_path / "none").exists()


@pytest.fixture(scope="module")
def saved_lists(tmp_path_factory):
    """A policy's saved lists as the later-round benchmark reads them: a rejection run's samples (4 draws for each
    of 8 train requests) and a rejudge report (its reference policy's draws of 6 held-out requests)."""
    from core.collect.library import load_prompts

    root = tmp_path_factory.mktemp("saved_lists")
    (root / "rejection").mkdir()
    (root / "rejection" / "config.json").write_text(json.dumps({"base_model": "tiny", "sft_adapter": "runs/sft"}))
    rows = [{"step": 0, "prompt": p.text, "draw": d, "text": f"1. {p.text[-12:]} idea {d}\n2. more {d * 7}"}
            for p in load_prompts(split="train")[:8] for d in range(4)]
    (root / "rejection" / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    samples = [{"prompt": p.text, "sft@0": f"1. {p.text[-9:]}", "sft@1": "1. A\n2. B", "sft@2": "unused"}
               for p in load_prompts(split="eval")[:6]]
    (root / "rejudge.json").write_text(json.dumps({"reference": "sft", "runs": {"sft": "runs/sft"},
                                                   "samples": samples}))
    return root


def test_informative_choice_on_a_policys_saved_lists(tiny_model_dir, saved_lists, tmp_path, monkeypatch):
    """Informative pairs come from the frozen base's features from the first vote, never repeat a shown pair, take
    one pair a request a round, and vote on the same held-out pairs (the rejudge reference's first two draws)."""
    out = tmp_path / "run"
    args = ["--out", str(out), "--base-model", tiny_model_dir, "--device", "cpu", "--train-prompts", "8",
            "--eval-prompts", "6", "--budgets", "5,10", "--forced-choice", "true", "--reward-args", "--max-steps 2",
            "--strategies", "random,informative", "--candidates", "3",
            "--candidates-from", str(saved_lists / "rejection"), "--held-out-from", str(saved_lists / "rejudge.json")]
    rows = bench.main(args)
    assert [(r["strategy"], r["votes"]) for r in rows] == [("random", 5), ("random", 10), ("informative", 5),
                                                           ("informative", 10)]
    votes = Store(out / "informative" / "votes.duckdb").votes().sort_values("created_at")
    train, held_out = votes[votes.split == "train"], votes[votes.split == "eval"]
    assert set(train.chosen_by) == {"informative"} and len(train) == 10
    assert not train.left_text.str.contains("idea 3").any() and not train.right_text.str.contains("idea 3").any()
    shown = [frozenset(t) for t in zip(train.left_text, train.right_text)]
    assert len(set(shown)) == 10  # 8 requests x 3 pairs each: no pair twice
    assert train.iloc[:5].prompt.nunique() == 5 and train.iloc[5:].prompt.nunique() == 5  # one a request a round
    assert sorted(held_out.right_text.tolist() + held_out.left_text.tolist()).count("1. A\n2. B") == 6
    assert not held_out.left_text.eq("unused").any()
    report = json.loads((out / "label_efficiency.json").read_text())
    assert set(report["paired"]) == {"informative"} and "informative" in (out / "label_efficiency.md").read_text()

    def no_loading(*_, **__):
        raise AssertionError("the model was loaded although the features were cached")
    monkeypatch.setattr("bench.candidate_pool.RewardScorer.untrained", no_loading)
    ran, run_strategy = [], bench.run_strategy
    monkeypatch.setattr(bench, "run_strategy", lambda cfg, strategy, *a: ran.append(strategy) or run_strategy(
        cfg, strategy, *a))
    more = bench.main([{"random,informative": "random,informative,informative-unit"}.get(a, a) for a in args])
    assert ran == ["informative-unit"] and more[:4] == rows  # one strategy more: the finished two are kept
    unit = Store(out / "informative-unit" / "votes.duckdb").votes().query("split == 'train'")
    assert set(unit.chosen_by) == {"informative-unit"} and len(unit) == 10
    assert bench.main(args + ["--budgets", "5"])[-1]["strategy"] == "informative"  # other budgets: trained again
    assert ran[-2:] == ["random", "informative"]


def test_saved_lists_too_few_for_the_candidates_asked_say_what_to_change(tiny_model_dir, saved_lists, tmp_path):
    with pytest.raises(SystemExit, match="holds 4 lists for .*not 5: pass fewer --candidates"):
        bench.main(["--out", str(tmp_path), "--base-model", tiny_model_dir, "--train-prompts", "8", "--eval-prompts",
                    "6", "--budgets", "5", "--candidates", "5", "--candidates-from", str(saved_lists / "rejection"),
                    "--held-out-from", str(saved_lists / "rejudge.json")])
    with pytest.raises(SystemExit, match="holds no samples.jsonl and config.json: pass a rejection run"):
        bench.main(["--out", str(tmp_path), "--candidates-from", str(tmp_path), "--held-out-from",
                    str(saved_lists / "rejudge.json")])
    with pytest.raises(SystemExit, match="is no file: pass a bench/rejudge.py report"):
        bench.main(["--out", str(tmp_path), "--candidates-from", str(saved_lists / "rejection"), "--held-out-from",
                    str(tmp_path / "missing.json")])
    with pytest.raises(SystemExit, match="together"):
        bench.main(["--out", str(tmp_path), "--candidates-from", str(saved_lists / "rejection")])
