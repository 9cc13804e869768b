"""kill -9 in the middle of writing, for each kind of process that writes: the arena, an import, the SFT and reward
stages (PPO's kill -9 and exact resume are in test_ppo.py). Afterwards the database opens, holds no partial row,
and every write that was acknowledged is there."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from gradio_client import Client

from core.runs import read_jsonl, read_status
from core.store.database import Store
from core.store.preferences import import_votes
from tests.helpers import REPO, serve, write_preference_votes


def assert_whole(store: Store) -> None:
    """No partial rows: every vote's pair is stored, and every pair's two generations and prompt."""
    pairs, comparisons = store.table("pairs"), store.table("comparisons")
    generations, prompts = set(store.table("generations").generation_id), set(store.table("prompts").prompt_id)
    assert set(comparisons.pair_id) <= set(pairs.pair_id)
    assert set(pairs.left_generation_id) | set(pairs.right_generation_id) <= generations
    assert set(store.table("generations").prompt_id) <= prompts


def test_kill_9_of_the_arena_mid_votes_loses_no_acknowledged_vote(tiny_model_dir, tmp_path):
    db = tmp_path / "arena.duckdb"
    acknowledged, stop = [], threading.Event()
    with serve(["-m", "apps.arena", "--base-model", tiny_model_dir, "--db", str(db), "--port", "PORT"], "/",
                {}, tmp_path) as (url, process):
        client = Client(url, verbose=False)

        def vote_on() -> None:
            while not stop.is_set():
                try:
                    pair_id, *_ = client.predict(api_name="/next_pair")
                    _, vote_id = client.predict(pair_id, "left", None, "kill-test", api_name="/vote")
                    acknowledged.append(vote_id)
                except Exception:  # the server died under us: what it acknowledged is what counts
                    return

        voter = threading.Thread(target=vote_on, daemon=True)
        voter.start()
        deadline = time.time() + 180
        while len(acknowledged) < 4 and time.time() < deadline:
            time.sleep(0.1)
        os.kill(process.pid, signal.SIGKILL)  # mid-stream: the next vote may be half way through
        stop.set()
        voter.join(timeout=30)
    assert len(acknowledged) >= 4
    store = Store(db)  # opens: DuckDB's write-ahead log replays or drops the unfinished transaction
    assert set(acknowledged) <= set(store.votes().comparison_id)
    assert_whole(store)


def write_lock_held(db) -> bool:
    """Whether some process holds the store's write lock on `db` (we take and drop a shared lock to see)."""
    with open(f"{db}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lock, fcntl.LOCK_UN)
        return False


def staging_folders(db) -> list:
    """The import's staging folders beside `db` (core/store/imports.py)."""
    return list(Path(db).parent.glob(f".{Path(db).name}.import-*"))


@pytest.mark.parametrize("when", ["staging", "merging"])
def test_kill_9_of_an_import_leaves_all_of_the_file_or_none_of_it(tmp_path, when):
    """Killed while it stages the rows (no lock held) or while it merges them (the write lock held): the database
    holds all of the file or none of it, takes writes again, and the next import deletes the staging folder left."""
    db = tmp_path / "db.duckdb"
    Store(db)
    votes = write_preference_votes(tmp_path / "votes.jsonl", 40_000)
    process = subprocess.Popen([sys.executable, "-m", "core", "import-votes", votes, "--db", str(db)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while process.poll() is None and time.time() < deadline:
        staging = staging_folders(db)
        if staging and (when == "staging" and any(staging[0].glob("*.duckdb")) and not write_lock_held(db)
                        or when == "merging" and write_lock_held(db)):
            break
        time.sleep(0.005)
    process.kill()
    assert process.wait() == -signal.SIGKILL, "the import finished before it could be killed"
    assert staging_folders(db), "killed before it staged anything"
    store = Store(db)
    assert len(store.votes()) in ((0,) if when == "staging" else (0, 40_000))
    assert_whole(store)
    import_votes(store, write_preference_votes(tmp_path / "small.jsonl", 3, seed=1))  # and it still takes writes
    assert len(store.votes()) - 3 in (0, 40_000) and staging_folders(db) == []


@pytest.mark.parametrize("stage, extra", [("sft", ["--eval-prompts", "0"]), ("reward", ["--batch-size", "2"])])
def test_kill_9_of_a_training_stage_leaves_a_readable_run_and_an_intact_database(stage, extra, tiny_model_dir,
                                                                                    preference_db, tmp_path):
    db = tmp_path / "db.duckdb"
    db.write_bytes(open(preference_db, "rb").read())
    before = Store(db).counts()
    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "core", "train", stage, "--base-model", tiny_model_dir,
                                "--db", str(db), "--max-steps", "500", "--output-dir", str(run), *extra],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 240

    def reached_step_2() -> bool:  # status.json is written just after the step's metrics line: wait for both
        return (any(m.get("step", 0) >= 2 for m in read_jsonl(run / "metrics.jsonl"))
                and read_status(run).get("step", 0) >= 2)

    while not reached_step_2() and time.time() < deadline:
        assert process.poll() is None, f"{stage} ended before it could be killed"
        time.sleep(0.2)
    process.kill()
    process.wait()
    status = read_status(run)
    assert status["state"] == "killed" and status["step"] >= 2
    assert all(isinstance(m, dict) for m in read_jsonl(run / "metrics.jsonl"))  # a torn last line is skipped
    lineage = json.loads((run / "data" / "lineage.json").read_text())  # the snapshot was written whole first
    assert lineage["taken_at"]
    assert Store(db).counts() == before  # training read a snapshot; the live database is untouched


def test_a_bad_challenger_gets_one_line_and_a_run_folder_resolves_to_its_adapter(tiny_model_dir, tiny_adapter_dir,
                                                                                    tmp_path):
    from apps.arena import build_arena, parse_args

    done = subprocess.run([sys.executable, "-m", "apps.arena", "--challenger", str(tmp_path / "nowhere")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "holds no adapter" in done.stderr and "Traceback" not in done.stderr
    run = tmp_path / "sft-run"
    shutil.copytree(tiny_adapter_dir, run / "adapter")  # a run folder, as `train sft` leaves it
    from core.collect.chooser import REWARD_SERVING_KEY, read_reward_serving

    Store(tmp_path / "arena.duckdb").set_setting(REWARD_SERVING_KEY, '{"run": "models/runs/reward-old"}')
    arena = build_arena(parse_args(["--base-model", tiny_model_dir, "--challenger", str(run), "--db",
                                    str(tmp_path / "arena.duckdb")]))
    try:
        assert arena.policies[1].adapter == str(run / "adapter")  # the run folder resolved to its adapter
        # a previous arena's reward model is not shown as this one's: nothing loaded yet (random pairs)
        assert read_reward_serving(arena.store) == {"run": None, "failed": None}
    finally:
        arena.stop()


REVIEWER = """
import sys
from core.store.database import Store
store = Store(sys.argv[1])
for row in store.votes().itertuples():
    other = "right" if row.choice == "left" else "left"
    print(store.review_vote(row.comparison_id, "relabel", "reviewer", choice=other), row.comparison_id, flush=True)
"""


def test_kill_9_of_the_dashboard_and_of_its_relabels_leaves_every_acknowledged_review_whole(tmp_path):
    """The dashboard's one write is a review (Disagreements: relabel retracts a vote and casts the corrected one in
    one transaction). kill -9 a process relabelling through that same call, and the dashboard server itself while
    it serves; afterwards every acknowledged relabel is whole, nothing half-done exists, no lock is left behind, and
    a fresh dashboard serves the same database."""
    db = tmp_path / "db.duckdb"
    import_votes(Store(db), write_preference_votes(tmp_path / "votes.jsonl", 400))
    env = {"RLHF_DB": str(db), "RLHF_RUNS_DIR": str(tmp_path / "runs"), "RLHF_PASSWORD": "", "RLHF_VIEWER_PASSWORD": ""}
    dashboard = ["-m", "streamlit", "run", "apps/dashboard.py", "--server.port", "PORT"]
    with serve(dashboard, "/_stcore/health", env, tmp_path) as (_, server):
        reviewer = subprocess.Popen([sys.executable, "-c", REVIEWER, str(db)], cwd=REPO, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True)
        acknowledged = [reviewer.stdout.readline().split() for _ in range(20)]  # 20 relabels answered, then kill
        reviewer.kill()
        server.kill()
        assert reviewer.wait() == -signal.SIGKILL and server.wait() == -signal.SIGKILL
    store = Store(db, timeout_s=5)  # a lock left behind would make this wait and fail
    reviews, comparisons = store.table("reviews"), store.table("comparisons").set_index("comparison_id")
    retracted = set(store.table("retractions").comparison_id)
    assert len(reviews) >= 20 and {r for r, _ in acknowledged} <= set(reviews.review_id)
    for review in reviews.itertuples():  # whole: the old vote retracted, the new one cast, both or neither
        assert review.comparison_id in retracted and review.new_comparison_id in comparisons.index
        assert comparisons.choice[review.new_comparison_id] == review.choice
    assert len(comparisons) == 400 + len(reviews) and len(store.votes()) == 400
    assert_whole(store)
    with serve(dashboard, "/_stcore/health", env, tmp_path) as (url, _):
        assert urllib.request.urlopen(f"{url}/_stcore/health", timeout=10).read() == b"ok"
