"""The dashboard through Streamlit's AppTest: every page on an empty and on a seeded database, reviews and blind
votes through the page's own buttons, and a real two-step run started from the Train page."""
from __future__ import annotations

import io
import json
import os
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.records import Generation, Pair, Policy, Prompt
from core.runs import read_status, write_json
from core.store.database import Store

APP = str(Path(__file__).resolve().parent.parent / "apps" / "dashboard.py")
PAGES = ("data", "train", "runs", "disagreements", "demo")


@pytest.fixture
def dashboard(tmp_path, monkeypatch):
    """Point the dashboard at a fresh database and runs folder; `open(page)` renders a page and checks it ran."""
    monkeypatch.setenv("RLHF_DB", str(tmp_path / "db.duckdb"))
    monkeypatch.setenv("RLHF_RUNS_DIR", str(tmp_path / "runs"))
    (tmp_path / "runs").mkdir()

    class Dashboard:
        db, runs = tmp_path / "db.duckdb", tmp_path / "runs"

        def open(self, page: str = "data") -> AppTest:
            at = AppTest.from_file(APP, default_timeout=120).run()
            if page != "data":
                at.switch_page(f"dashboard_pages/{page}.py").run()
            assert not at.exception, at.exception
            return at
    return Dashboard()


def _titles(at: AppTest) -> list[str]:
    return [json.loads(chart.proto.spec)["layout"]["title"]["text"] for chart in at.get("plotly_chart")]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_explains_itself_on_a_first_start(dashboard, page):
    at = dashboard.open(page)
    assert at.info, f"{page}: no empty-state message"
    assert not at.error


# ---- seeded ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def seeded(dashboard, tiny_reward_run, tiny_adapter_dir, preference_db, tiny_model_dir):
    """The reward fixture's database and run, a hand-made PPO run, a killed and a damaged run, and an SFT adapter."""
    shutil.copy(preference_db, dashboard.db)
    store = Store(dashboard.db)
    votes = store.votes()
    store.record_rating(votes.left_generation_id.iloc[0], 4, "alice")
    prompt = Prompt("Top 5 rivers to paddle")  # one arena vote: its sides were shuffled, so it counts for position bias
    arena_pair = Pair(prompt, *(Generation(prompt, f"1. River {k}", Policy("base"), False, 1) for k in "AB"))
    store.record_pair(arena_pair)
    store.record_vote(arena_pair.pair_id, "left", "alice", decision_ms=4200)
    shutil.copytree(tiny_reward_run, dashboard.runs / "reward-20260101-000001")
    # a second reward run whose scores disagree with the first three decided votes, confidently
    scored = dashboard.runs / "reward-20260101-000002"
    shutil.copytree(tiny_reward_run, scored)
    scores = pd.read_parquet(scored / "scores.parquet")
    decided = scores.choice.isin(["left", "right"])
    scores["p_left"] = (scores.choice == "left").astype(float) * 0.8 + 0.1  # agrees: 0.9 for left, 0.1 for right
    flip = scores[decided].index[:3]
    scores.loc[flip, "p_left"] = 1 - scores.loc[flip, "p_left"]
    scores.to_parquet(scored / "scores.parquet")
    ppo = dashboard.runs / "ppo-20260101-000003"
    ppo.mkdir()
    write_json(ppo / "status.json", {"state": "finished", "step": 2, "total": 2, "message": "adapter saved"})
    write_json(ppo / "config.json", {"stage": "ppo", "learning_rate": 1e-4, "kl_coef": 0.05})
    rows = [{"step": s, "objective/scores": 0.1 * s, "objective/rlhf_reward": 0.05 * s, "objective/kl": 0.2 * s,
             "objective/entropy": 2.0, "val/ratio": 1.0, "eval/scores": 0.3 * s, "eval/kl": 0.1 * s,
             "eval/sqrt_kl": (0.1 * s) ** 0.5, "eval/well_formed": 0.5} for s in (0, 1, 2)]
    (ppo / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (ppo / "samples.jsonl").write_text(json.dumps({"step": 2, "prompt": "Top 5 rivers", "text": "1. Nile"}) + "\n")
    killed = dashboard.runs / "ppo-20260101-000004"
    killed.mkdir()
    write_json(killed / "status.json", {"state": "running", "step": 1, "total": 9, "pid": 2**22 + 4321})
    write_json(killed / "config.json", {"stage": "ppo", "learning_rate": 1e-4, "kl_coef": 0.1})
    (killed / "train.log").write_text("step 1\nRuntimeError: out of memory while sampling\n")
    (killed / "checkpoint").mkdir()
    (killed / "checkpoint" / "state.pt").write_bytes(b"")  # what Resume needs; the test never loads it
    (dashboard.runs / "sft-20260101-000005").mkdir()  # damaged: nothing inside
    sft = dashboard.runs / "sft-20260101-000006"
    shutil.copytree(tiny_adapter_dir, sft / "adapter")
    write_json(sft / "status.json", {"state": "finished", "step": 2, "total": 2})
    write_json(sft / "config.json", {"stage": "sft"})
    return dashboard


def test_data_page_counts_plots_browses_and_exports(seeded):
    at, store = seeded.open("data"), Store(seeded.db)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["votes"] == "50" and metrics["ratings"] == "1"
    assert {"Votes per day", "Choice mix", "Ratings", "Decision time (60: a minute or more)"} <= set(_titles(at))
    # the 48 imported a/b votes are not counted: their sides were never shuffled
    assert (metrics["position bias: decided arena votes that went left"], metrics["decided arena votes"]) == ("100%", "1")
    assert len(at.dataframe[-1].value) == 50
    at.multiselect(key="browse_choices").set_value(["tie"]).run()
    assert at.dataframe[-1].value.comparison_id.tolist() == \
        store.browse_votes(["tie"], None, "", 200).comparison_id.tolist()
    at.multiselect(key="browse_choices").set_value([]).run()
    assert len(at.dataframe[-1].value) == 0
    at.button(key="prepare_export").click().run()
    data, name, _ = at.session_state["export"]
    exported = pd.read_json(io.BytesIO(data), lines=True)  # the download's bytes: the temporary file is gone
    assert name == "preferences.jsonl"
    assert len(exported) == 49 and set(exported.columns) >= {"prompt", "chosen", "rejected"}


def test_runs_page_plots_curves_and_shows_broken_runs(seeded):
    at = seeded.open("runs")
    table = at.dataframe[0].value.set_index("run")
    assert table.loc["ppo-20260101-000004", "state"] == "killed"
    assert table.loc["sft-20260101-000005", "state"] == "damaged"
    at.multiselect(key="plotted_runs").set_value(["ppo-20260101-000003", "ppo-20260101-000004",
                                                  "sft-20260101-000005"]).run()
    assert not at.exception
    assert {"Reward", "KL to the reference (nats) and beta", "Over-optimisation: reward against sqrt(KL)"} \
        <= set(_titles(at))
    errors = " ".join(e.value for e in at.error)
    assert "ppo-20260101-000004 killed" in errors and "sft-20260101-000005 damaged" in errors
    assert any("out of memory" in c.value for c in at.code)
    assert not at.get("help")  # no stray st.help from a bare expression


def test_runs_page_overlays_runs_that_logged_different_metrics(seeded):
    second = seeded.runs / "ppo-20260101-000007"
    shutil.copytree(seeded.runs / "ppo-20260101-000003", second)
    rows = [{"step": s, "objective/scores": 0.2 * s, "objective/well_formed": 0.4} for s in (1, 2)]
    (second / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    at = seeded.open("runs")
    at.multiselect(key="plotted_runs").set_value(["ppo-20260101-000003", "ppo-20260101-000007"]).run()
    assert not at.exception
    titles = _titles(at)
    assert titles.count("Well-formed rate") == 1 and titles.count("Reward") == 1
    reward = next(c for c in at.get("plotly_chart") if json.loads(c.proto.spec)["layout"]["title"]["text"] == "Reward")
    names = {trace["name"] for trace in json.loads(reward.proto.spec)["data"]}
    assert {"ppo-20260101-000003 · objective/scores", "ppo-20260101-000007 · objective/scores"} <= names


def test_disagreements_page_reviews_through_its_buttons(seeded):
    at = seeded.open("disagreements")
    picker = at.selectbox(key="disagreements_run")
    picker.set_value(next(o for o in picker.options if o.endswith("000002"))).run()
    at.radio(key="disagreements_split").set_value("all").run()
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["disagreements"], metrics["not reviewed"]) == ("3", "3")
    assert len([b for b in at.button if b.key.startswith("relabel:")]) == 3
    assert {"Calibration (reliability diagram)"} <= set(_titles(at))
    store = Store(seeded.db)
    before = len(store.votes())
    at.button(key=next(b.key for b in at.button if b.key.startswith("noise:"))).click().run()
    assert len(store.votes()) == before - 1  # flagged noise: out of exports and training
    assert store.table("reviews").action.tolist() == ["noise"]
    assert {m.label: m.value for m in at.metric}["not reviewed"] == "2"
    relabel = [b.key for b in at.button if b.key.startswith("relabel:")][1]  # the next one, not the flagged one
    old_id = relabel.split(":", 1)[1]
    at.selectbox(key=f"to:{old_id}").set_value("tie")
    at.button(key=relabel).click().run()
    reviews = store.table("reviews")
    assert sorted(reviews.action) == ["noise", "relabel"]
    assert len(store.votes()) == before - 1  # the relabelled vote was replaced, not added
    old = store.votes(include_retracted=True).set_index("comparison_id").loc[old_id]
    new = store.votes().set_index("comparison_id").loc[reviews.new_comparison_id.dropna().iloc[0]]
    assert (new.choice, new.annotator, new.created_at, new.pair_id) == ("tie", old.annotator, old.created_at,
                                                                        old.pair_id)


def test_demo_page_blind_vote_feeds_the_human_win_rate(seeded):
    at = seeded.open("demo")
    at.toggle(key="demo_blind").set_value(True).run()
    at.button(key="demo_generate").click().run()
    assert not at.exception
    assert [s.value for s in at.subheader][:2] == ["List A", "List B"]
    at.button(key="vote:left").click().run()
    demo_votes = Store(seeded.db).votes().query("source == 'demo'")
    assert len(demo_votes) == 1 and demo_votes.choice.iloc[0] == "left"
    assert {m.label: m.value for m in at.metric}["human win rate, tuned vs base"] in ("0%", "100%")
    assert any("over 1 (" in c.value for c in at.caption)


def test_demo_page_offers_every_finished_policy_run_and_no_reward_model(seeded):
    dpo = seeded.runs / "dpo-20260101-000007"
    shutil.copytree(seeded.runs / "sft-20260101-000006", dpo)
    write_json(dpo / "config.json", {"stage": "dpo"})
    at = seeded.open("demo")
    options = at.selectbox(key="demo_tuned").options
    assert {"dpo-20260101-000007", "sft-20260101-000006"} <= set(options)
    assert not {"reward-20260101-000001", "sft-20260101-000005"} & set(options)  # a reward model, a damaged run


def test_train_page_offers_finished_runs_and_resume_for_a_killed_ppo_run(seeded):
    at = seeded.open("train")
    assert any(b.key == "resume:ppo-20260101-000004" for b in at.button)
    assert "killed" in " ".join(e.value for e in at.error)
    at.radio(key="stage").set_value("ppo").run()
    picker = at.selectbox(key="ppo:quick:reward_model")
    assert set(picker.options) == {"(none)", "reward-20260101-000001", "reward-20260101-000002"}
    assert "PPO needs a reward model" in at.error[0].value  # PPO needs one: the config's own message
    picker.set_value(str(seeded.runs / "reward-20260101-000001")).run()
    assert "--reward-model" in at.code[0].value and not any("PPO needs" in e.value for e in at.error)


def test_train_page_validates_and_previews_the_command(dashboard):
    at = dashboard.open("train")
    assert "python -m core train sft" in at.code[0].value
    at.text_input(key="sft:quick:learning_rate").set_value("fast").run()
    assert "not a valid float" in at.error[0].value
    assert "start" not in {b.key for b in at.button}  # no Start button for a config that would not run


def test_train_page_refuses_paths_outside_the_project_folders(dashboard):
    at = dashboard.open("train")
    outside = dashboard.runs.parent / "outside-run"
    at.text_input(key="sft:quick:output_dir").set_value(str(dashboard.runs / ".." / "outside-run")).run()
    assert "output-dir" in at.error[0].value and "outside the data and models folders" in at.error[0].value
    assert "start" not in {b.key for b in at.button} and not outside.exists()
    at.text_input(key="sft:quick:output_dir").set_value("").run()
    at.text_input(key="sft:quick:db").set_value("/etc/passwd").run()
    assert "db: /etc/passwd is outside" in at.error[0].value.replace("\\", "")


def test_a_busy_database_gets_a_message_not_a_crash(dashboard, monkeypatch):
    from core.store.lock import file_lock

    Store(dashboard.db).counts()  # create the file
    monkeypatch.setenv("RLHF_PAGE_DB_WAIT_S", "0.5")
    with file_lock(dashboard.db, write=True, deadline=time.monotonic() + 5):  # another process mid-write
        at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    assert "database is busy" in at.warning[0].value


def test_disagreements_show_typed_text_as_text(seeded):
    scored = seeded.runs / "reward-20260101-000002"
    scores = pd.read_parquet(scored / "scores.parquet")
    hostile = "Top 5 C++ headers like #include <iostream> ![beacon](http://127.0.0.1:9/t.png) **bold**"
    first = scores[scores.choice.isin(["left", "right"])].index[0]
    scores.loc[first, ["prompt", "annotator"]] = [hostile, "<b>mallory</b>"]
    scores.loc[first, "p_left"] = 0.99 if scores.loc[first, "choice"] == "right" else 0.01  # a confident disagreement
    scores.to_parquet(scored / "scores.parquet")
    at = seeded.open("disagreements")
    picker = at.selectbox(key="disagreements_run")
    picker.set_value(next(o for o in picker.options if o.endswith("000002"))).run()
    at.radio(key="disagreements_split").set_value("all").run()
    assert hostile in [t.value for t in at.text]
    assert any("by <b>mallory</b>" in t.value for t in at.text)
    assert not any("beacon" in m.value or "mallory" in m.value for m in [*at.markdown, *at.caption])


def test_disagreements_show_accuracy_by_round_when_votes_span_rounds(seeded):
    scores = pd.read_parquet(path := seeded.runs / "reward-20260101-000002" / "scores.parquet")
    scores["round"] = ["round 1: <b>x</b>" if i % 2 else "round 2" for i in range(len(scores))]
    scores.to_parquet(path)
    at = seeded.open("disagreements")
    at.selectbox(key="disagreements_run").set_value("reward-20260101-000002").run()
    at.radio(key="disagreements_split").set_value("all").run()
    table = next(d for d in at.dataframe if list(d.value.columns[:3]) == ["round", "pairs", "correct"]).value
    assert set(table["round"]) == {"round 1: <b>x</b>", "round 2"}  # typed text, shown as text in a table
    assert table.pairs.sum() == scores.choice.isin(["left", "right"]).sum()


def test_train_page_starts_a_real_run_whose_curves_appear(dashboard, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("RLHF_BASE_MODEL", tiny_model_dir)  # the base the dashboard was started with: a page may name it
    at = dashboard.open("train")
    for name, value in {"base_model": tiny_model_dir, "max_steps": "2", "eval_prompts": "2",
                        "eval_max_new_tokens": "8"}.items():
        at.text_input(key=f"sft:quick:{name}").set_value(value)
    at.run()
    assert "--max-steps 2" in at.code[0].value
    at.button(key="start").click().run()
    assert "started sft-" in at.success[0].value
    run_dir = next(dashboard.runs.glob("sft-*"))
    deadline = time.time() + 300
    while read_status(run_dir)["state"] in ("starting", "running") and time.time() < deadline:
        time.sleep(1)
    assert read_status(run_dir)["state"] == "finished", (run_dir / "console.log").read_text()[-2000:]
    at = dashboard.open("runs")
    assert {"Loss", "Learning rate"} <= set(_titles(at))


@pytest.fixture
def dashboard_server(dashboard):
    """The dashboard served by the Procfile's own command line (what `make run` starts), on a free port."""
    import shlex
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procfile = (Path(APP).parent.parent / "Procfile").read_text()
    line = next(l for l in procfile.splitlines() if l.startswith("dashboard:")).split(":", 1)[1]
    argv = shlex.split(os.path.expandvars(line.replace("${DASHBOARD_PORT:-8501}", str(port))
                                          .replace("${DASHBOARD_HOST:-127.0.0.1}", "127.0.0.1")))
    assert argv[0] == "streamlit"
    server = subprocess.Popen([sys.executable, "-m", *argv], cwd=Path(APP).parent.parent,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def _get(url: str, timeout_s: float = 60) -> str:
    import urllib.request

    deadline = time.time() + timeout_s
    while True:
        try:
            return urllib.request.urlopen(url, timeout=5).read().decode()
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


def test_the_procfile_command_serves_the_dashboard(dashboard_server):
    assert _get(f"{dashboard_server}/_stcore/health") == "ok"
    assert "<title>" in _get(f"{dashboard_server}/")


def test_a_real_browser_renders_the_pages(dashboard_server):
    """Headless Chromium (through Playwright) loads the app, runs its JavaScript and shows each page's content."""
    import shutil

    from playwright.sync_api import sync_playwright

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:  # a skipped browser test is not a passing one: `make test` installs it
        pytest.fail("no chromium: run `make browser` (it installs Debian's chromium)")
    _get(f"{dashboard_server}/_stcore/health")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=browser, args=["--no-sandbox"])
        page = chromium.new_page()
        for path, expected in [("", "No votes yet"), ("/train", "Runs start as their own processes"),
                               ("/runs", "No runs yet")]:
            # waits on the page's real content, not a fixed time budget: the first visit waits on the server's
            # first script run (importing torch: tens of seconds on a busy machine)
            page.goto(f"{dashboard_server}{path}", timeout=180_000)
            page.get_by_text(expected).first.wait_for(timeout=180_000)
        chromium.close()


# ---- passwords ------------------------------------------------------------------------------------------------------
def test_a_password_keeps_every_page_closed_until_it_is_typed(seeded, monkeypatch):
    monkeypatch.setenv("RLHF_PASSWORD", "s3cret-admin")
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.metric and not at.get("plotly_chart")  # nothing of the data shows
    at.text_input(key="password").set_value("guess").run()
    assert at.error[0].value == "Wrong password." and not at.metric
    at.text_input(key="password").set_value("s3cret-admin").run()
    assert {m.label: m.value for m in at.metric}["votes"] == "50"


def test_a_viewer_can_look_but_not_start_or_review(seeded, monkeypatch):
    monkeypatch.setenv("RLHF_PASSWORD", "s3cret-admin")
    monkeypatch.setenv("RLHF_VIEWER_PASSWORD", "look-only")
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.text_input(key="password").set_value("look-only").run()
    at.switch_page("dashboard_pages/train.py").run()
    assert not at.exception and at.code  # the command is previewed ...
    keys = {b.key for b in at.button}
    assert "start" not in keys and not any(k.startswith(("resume:", "stop:")) for k in keys)  # ... but not started
    at.switch_page("dashboard_pages/disagreements.py").run()
    assert not any(b.key.startswith(("relabel:", "noise:", "confirm:")) for b in at.button)
    assert len(Store(seeded.db).table("reviews")) == 0
    at.switch_page("dashboard_pages/demo.py").run()  # generating loads models and stores a pair: not for a viewer
    assert not at.exception and "demo_generate" not in {b.key for b in at.button} and at.selectbox(key="demo_tuned")
