"""The logic behind the dashboard, without Streamlit: reviews in the store, the Data page's aggregates, disagreements,
the human win rate, run views and the launcher."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pandas as pd
import pytest

from core.calibration import reliability_bins
from core.judge.demo import human_win_rate
from core.judge.disagreements import disagreements, latest_reviews
from core.records import Policy
from core.runs import list_runs, pid_alive, read_status, write_json
from core.store.database import Store, StoreError
from core.store.preferences import export_votes, import_votes
from core.train import launcher
from core.view import runs as run_view
from core.win_rate import position_bias
from tests.helpers import write_preference_votes


@pytest.fixture
def voted(store, tmp_path):
    import_votes(store, write_preference_votes(tmp_path / "votes.jsonl", 6))
    return store


# ---- reviews: relabel, noise, confirm ------------------------------------------------------------------------------
def test_noise_leaves_the_export_and_confirm_brings_it_back(voted, tmp_path):
    first = voted.votes().iloc[0]
    voted.review_vote(first.comparison_id, "noise", "rev")
    assert first.comparison_id not in set(voted.votes().comparison_id)
    assert export_votes(voted, tmp_path / "a.jsonl").exported == 5
    assert voted.votes(include_noise=True).set_index("comparison_id").loc[first.comparison_id, "review"] == "noise"
    voted.review_vote(first.comparison_id, "confirm", "rev")
    assert export_votes(voted, tmp_path / "b.jsonl").exported == 6


def test_noise_flagged_votes_never_reach_a_training_snapshot(voted, tmp_path):
    from core.train.snapshot import take_preferences

    first = voted.votes().iloc[0]
    voted.review_vote(first.comparison_id, "noise", "rev")
    votes, pairs, lineage = take_preferences(voted, tmp_path, 0.2)
    assert first.comparison_id not in set(votes.comparison_id) | set(pairs.comparison_id)
    assert lineage["votes"] == 5


def test_relabel_retracts_the_vote_and_casts_the_corrected_one(voted):
    first = voted.votes().iloc[0]
    flipped = "right" if first.choice == "left" else "left"
    voted.review_vote(first.comparison_id, "relabel", "rev", flipped)
    now = voted.votes()
    assert len(now) == 6 and first.comparison_id not in set(now.comparison_id)
    replacement = now[now.pair_id == first.pair_id].iloc[0]
    # the corrected vote keeps its annotator and time; the reviewer is on the review
    assert (replacement.choice, replacement.annotator, replacement.created_at) == (flipped, first.annotator,
                                                                                 first.created_at)
    assert voted.table("reviews").annotator.tolist() == ["rev"]
    assert voted.overview()["totals"].retracted.iloc[0] == 0  # a relabel is not an undo
    with pytest.raises(StoreError, match="relabelled already"):
        voted.review_vote(first.comparison_id, "confirm", "rev")
    with pytest.raises(StoreError, match="already says"):
        voted.review_vote(replacement.comparison_id, "relabel", "rev", flipped)
    with pytest.raises(StoreError, match="relabel to one of"):
        voted.review_vote(replacement.comparison_id, "relabel", "rev", "sideways")


def test_overview_counts_what_the_data_page_plots(voted):
    flagged = voted.votes().iloc[1]
    voted.review_vote(flagged.comparison_id, "noise", "rev")
    ov = voted.overview()
    totals = ov["totals"].iloc[0]
    assert (totals.votes, totals.flagged_noise, totals.annotators) == (6, 1, 1)
    assert ov["choices"].votes.sum() == 6 and ov["per_day"].votes.sum() == 6
    assert set(ov["annotators"].columns) >= {"annotator", "votes", "left", "right", "tie", "both_bad"}
    everything = voted.votes(include_noise=True)  # browsing shows flagged votes too, with their review
    films = everything[everything.prompt.str.contains("films") & (everything.choice == "left")]
    assert set(voted.browse_votes(["left"], search="FILMS").comparison_id) == set(films.comparison_id)
    assert voted.browse_votes([]).empty and len(voted.browse_votes(None)) == 6
    assert voted.browse_votes(annotator="nobody").empty


# ---- maths: position bias, human win rate, disagreements, reliability -------------------------------------------------
def test_position_bias_on_a_hand_example():
    bias = position_bias(30, 10)  # 75 % left; Wilson 95 %: [0.5981, 0.8581]
    assert bias["left_share"] == 0.75 and bias["n"] == 40
    assert bias["low"] == pytest.approx(0.5981, abs=1e-4) and bias["high"] == pytest.approx(0.8581, abs=1e-4)
    assert position_bias(0, 0)["left_share"] is None


def test_human_win_rate_reads_each_side_and_counts_ties_and_both_bad_half():
    t, b, other = "base+ppo-1", "base", "base+sft-1"
    votes = pd.DataFrame([
        (t, b, "left"), (b, t, "right"), (b, t, "left"),  # tuned wins, wins, loses
        (t, b, "tie"), (b, t, "both_bad"),  # half, half
        (other, b, "left"), (t, other, "left"),  # other pairs: ignored
    ], columns=["left_policy", "right_policy", "choice"])
    rate = human_win_rate(votes, t, b)
    assert (rate.wins, rate.losses, rate.ties) == (2, 1, 2)
    assert rate.rate == pytest.approx(3 / 5)


def test_reliability_bins_by_hand():
    # p_left 0.95 (left won: right), 0.92 (right won: wrong), 0.35 -> 65 % sure of right (right won: right).
    # Bins are right-closed: (0.9, 1.0] holds 0.95 and 0.92, (0.6, 0.7] holds 0.65.
    bins = reliability_bins([0.95, 0.92, 0.35], [True, False, False], n_bins=5)
    by_low = {round(b["low"], 1): b for b in bins}
    assert by_low[0.9]["count"] == 2 and by_low[0.9]["accuracy"] == 0.5
    assert by_low[0.9]["confidence"] == pytest.approx(0.935)
    assert by_low[0.6]["count"] == 1 and by_low[0.6]["accuracy"] == 1.0 and by_low[0.6]["confidence"] == 0.65
    assert sum(b["count"] for b in bins) == 3


def test_disagreements_are_the_wrong_decided_votes_most_confident_first():
    scores = pd.DataFrame({
        "comparison_id": list("abcde"), "split": ["eval", "eval", "train", "eval", "eval"],
        "prompt": ["q"] * 5, "choice": ["left", "right", "left", "tie", "left"],
        "p_left": [0.6, 0.95, 0.1, 0.99, 0.8], "score_left": [0.0] * 5, "score_right": [0.0] * 5,
        "left_text": ["l"] * 5, "right_text": ["r"] * 5, "annotator": ["x"] * 5})
    reviews = pd.DataFrame({"comparison_id": ["b", "b"], "action": ["noise", "confirm"], "choice": [None, None],
                            "created_at": pd.to_datetime(["2026-01-01", "2026-01-02"])})
    table = disagreements(scores, reviews)
    assert list(table.comparison_id) == ["b", "c"]  # a and e agree with the human; d is a tie
    assert table.confidence.tolist() == pytest.approx([0.95, 0.9])
    assert table.review.tolist() == ["confirmed", "open"]
    assert list(disagreements(scores, reviews, split="train").comparison_id) == ["c"]
    relabelled = latest_reviews(pd.DataFrame({"comparison_id": ["c"], "action": ["relabel"], "choice": ["right"],
                                              "created_at": [pd.Timestamp("2026-01-03")]}))
    assert relabelled.review.tolist() == ["relabelled: right"]


def test_a_runs_adapter_is_named_after_its_run():
    assert Policy("models/SmolLM2", "models/runs/ppo-20261121-101500/adapter").name == "SmolLM2+ppo-20261121-101500"
    assert Policy("models/SmolLM2", "adapters/mine").name == "SmolLM2+mine"


# ---- run folders as the Runs page reads them ---------------------------------------------------------------------------
def _fake_run(root, name, state, metrics=(), config=None, pid=None):
    path = root / name
    path.mkdir(parents=True)
    if state is not None:
        write_json(path / "status.json", {"state": state, "step": len(metrics), "total": 4, "pid": pid, "message": ""})
    (path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics) + '{"step": 9, "torn')
    write_json(path / "config.json", config or {"learning_rate": 1e-4})
    return path


def test_run_views_survive_torn_damaged_and_killed_folders(tmp_path):
    ppo = _fake_run(tmp_path, "ppo-20260101-000001", "finished",
                    [{"step": 1, "objective/kl": 0.1, "objective/scores": 0.5, "eval/scores": 0.2},
                     {"step": 2, "objective/kl": 0.3, "objective/scores": 0.9}], {"learning_rate": 1e-4, "seed": 1})
    _fake_run(tmp_path, "ppo-20260101-000002", "running", pid=2**22 + 12345)  # no such process
    _fake_run(tmp_path, "sft-20260101-000003", None)  # status.json missing
    table = run_view.runs_table(list_runs(tmp_path)).set_index("run")
    assert table.loc["ppo-20260101-000002", "state"] == "killed"
    assert table.loc["sft-20260101-000003", "state"] == "damaged"
    frame = run_view.metrics_frame(ppo)
    assert frame.step.tolist() == [1, 2]  # the torn last line is skipped
    panels = dict(run_view.panels_for("ppo", frame))
    assert panels["Reward"] == ["objective/scores"] and "Entropy" not in panels
    assert run_view.final_figures(frame) == {"eval/scores": 0.2}
    other = _fake_run(tmp_path, "ppo-20260101-000004", "finished", config={"learning_rate": 3e-4, "seed": 1})
    diff = run_view.config_diff(ppo, other)
    assert diff.setting.tolist() == ["learning_rate"]
    assert run_view.metrics_frame(tmp_path / "nowhere").empty and run_view.samples(tmp_path / "nowhere").empty


# ---- the launcher ---------------------------------------------------------------------------------------------------
def test_a_launched_run_that_fails_shows_why(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_DB", str(tmp_path / "db.duckdb"))  # an empty database: nothing to train on
    Store(tmp_path / "db.duckdb")
    monkeypatch.setenv("RLHF_RUNS_DIR", str(tmp_path))  # the runs folder the dashboard was started with
    from core.train.reward_model import RewardConfig

    started = launcher.launch("reward", RewardConfig(output_dir=str(tmp_path / "run")))
    assert started.command[:5] == ["python", "-m", "core", "train", "reward"]
    assert "--output-dir" in started.command
    deadline = time.time() + 120
    while pid_alive(started.pid) and time.time() < deadline:
        time.sleep(0.5)
    status = read_status(started.run_dir)
    assert status["state"] == "failed"
    assert "only 0 training pairs" in launcher.log_tail(started.run_dir)
    with pytest.raises(Exception, match="already holds a run"):
        launcher.launch("reward", RewardConfig(output_dir=str(started.run_dir)))
    with pytest.raises(Exception, match="only PPO runs resume"):
        launcher.resume(started.run_dir)


def test_a_launch_before_its_first_status_reads_as_starting_then_failed(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_json(tmp_path / "launch.json", {"stage": "sft", "pid": sleeper.pid, "command": []})
        assert read_status(tmp_path)["state"] == "starting"
    finally:
        sleeper.kill()
        sleeper.wait()
    (tmp_path / "console.log").write_text("error: --learning-rate: 'x' is not a valid float.\n")
    assert read_status(tmp_path)["state"] == "failed"
    assert "not a valid float" in launcher.log_tail(tmp_path)


def test_a_resume_still_loading_is_starting_and_cannot_be_resumed_twice(tmp_path):
    (tmp_path / "checkpoint").mkdir()
    write_json(tmp_path / "status.json", {"state": "stopped", "pid": 2**22 + 1, "updated_at": "2026-11-21T10:00:00+00:00"})
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_json(tmp_path / "launch.json", {"stage": "ppo", "pid": sleeper.pid,
                                              "launched_at": "2026-11-21T10:05:00+00:00"})
        assert read_status(tmp_path)["state"] == "starting"
        with pytest.raises(Exception, match="is starting"):
            launcher.resume(tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()
    (tmp_path / "console.log").write_text("error: checkpoint/ is damaged\n")
    died = read_status(tmp_path)  # that resume died before the run restarted: said, not the old "stopped" again
    assert died["state"] == "failed" and "console.log" in died["message"]
    assert "checkpoint/ is damaged" in launcher.log_tail(tmp_path)  # what the Runs page shows under it
    assert died["state"] in launcher.RESUMABLE_STATES  # and Resume is offered again


def test_stop_sends_sigterm_to_a_running_run(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)  # stands in for core train"])
    try:
        write_json(tmp_path / "status.json", {"state": "running", "pid": sleeper.pid})
        assert "asked" in launcher.stop(tmp_path)
        assert sleeper.wait(timeout=10) == -15
        assert not pid_alive(sleeper.pid)
        assert "not running" in launcher.stop(tmp_path)  # the pid is gone: read as killed
    finally:
        sleeper.kill()


def test_pid_alive_is_false_for_an_unreaped_child():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 10
    while time.time() < deadline and pid_alive(child.pid):
        time.sleep(0.05)
    assert not pid_alive(child.pid)  # exited, not yet waited for: a zombie
    child.wait()


# ---- paths a page may name --------------------------------------------------------------------------------------------
def test_page_paths_stay_inside_the_data_and_models_folders(tmp_path, monkeypatch):
    from core.paths import DATA_DIR, MODELS_DIR
    from core.records import InputError
    from core.train.sft import SFTConfig

    monkeypatch.setenv("RLHF_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("RLHF_BASE_MODEL", raising=False)
    monkeypatch.delenv("RLHF_DB", raising=False)
    for name, value in [("output_dir", str(MODELS_DIR / "runs" / ".." / ".." / ".." / "outside")),
                        ("output_dir", "/tmp/elsewhere"), ("db", "/etc/passwd"), ("base_model", "/root"),
                        ("base_model", "../models")]:
        with pytest.raises(InputError, match=f"{name.replace('_', '-')}: .* is outside the data and models folders"):
            launcher.check_paths(SFTConfig(**{name: value}))
    for name, value in [("output_dir", str(tmp_path / "runs" / "mine")), ("db", str(DATA_DIR / "other.duckdb")),
                        ("base_model", "HuggingFaceTB/SmolLM2-360M-Instruct"), ("base_model", str(MODELS_DIR))]:
        launcher.check_paths(SFTConfig(**{name: value}))  # inside, or a hub id: accepted
    with pytest.raises(InputError, match="outside"):  # launch checks too, before it creates anything
        launcher.launch("sft", SFTConfig(output_dir=str(tmp_path / "elsewhere")))
    assert not (tmp_path / "elsewhere").exists()


def test_passwords_open_roles_and_an_open_bind_is_warned_about(monkeypatch):
    from core.access import Role, bind_warning, passwords_configured, role_for

    monkeypatch.delenv("RLHF_PASSWORD", raising=False)
    monkeypatch.delenv("RLHF_VIEWER_PASSWORD", raising=False)
    assert not passwords_configured() and role_for("anything") is Role.NONE
    assert bind_warning("127.0.0.1", "arena") is None and bind_warning("::1", "arena") is None
    assert "binds 0.0.0.0 with no RLHF_PASSWORD" in bind_warning("0.0.0.0", "arena")
    monkeypatch.setenv("RLHF_PASSWORD", "a")
    monkeypatch.setenv("RLHF_VIEWER_PASSWORD", "v")
    assert (role_for("a"), role_for("v"), role_for(""), role_for("av")) == (Role.ADMIN, Role.VIEWER, Role.NONE,
                                                                            Role.NONE)
    assert bind_warning("0.0.0.0", "arena") is None  # protected


def test_curves_name_runs_as_text_not_html():
    from core.view import charts

    frame = pd.DataFrame({"step": [0, 1], "train/loss": [2.0, 1.5]})
    fig = charts.curves({"<b>mine</b>": frame, "sft-1": frame}, ["train/loss"], "loss")
    assert [trace.name for trace in fig.data] == ["&lt;b&gt;mine&lt;/b&gt; · train/loss", "sft-1 · train/loss"]


def test_a_bad_page_wait_in_the_environment_is_said_and_the_default_used():
    from apps.dashboard_shared import page_wait_s

    assert page_wait_s(None) == (5.0, None) and page_wait_s("0.5") == (0.5, None)
    for bad in ("five", "-1", "nan", "inf"):
        seconds, said = page_wait_s(bad)
        assert seconds == 5.0 and said.startswith(f"RLHF_PAGE_DB_WAIT_S={bad!r} is not a number of seconds")


def test_as_text_makes_markdown_literal_and_loses_nothing():
    """Inline Markdown (emphasis, links, HTML, LaTeX, :colour[...]) and line-start markers (lists, quotes, setext
    underlines) in typed text are backslash-escaped, CommonMark's literal; unescaping gives the text back."""
    import re

    from apps.dashboard_shared import as_text

    hostile = "1. **bold** <img src=x>\n- item\n  + sub\n> quote\n===\n:red[hi] $x$ a & b\\n ok\n12) twelve"
    shown = as_text(hostile)
    assert re.sub(r"\\(.)", r"\1", shown, flags=re.DOTALL) == hostile
    assert shown.splitlines() == ["1\\. \\*\\*bold\\*\\* \\<img src=x\\>", "\\- item", "  \\+ sub", "\\> quote",
                                  "\\===", "\\:red\\[hi\\] \\$x\\$ a \\& b\\\\n ok", "12\\) twelve"]
    assert as_text("sft-20260101-000001 over a-b") == "sft-20260101-000001 over a-b"  # a run's name reads as typed
