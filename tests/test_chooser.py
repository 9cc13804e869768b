"""Active choice of the next pair: the pure chooser against hand-computed values, the arena's uncertain pairs and
their stored prediction, the fallback to random, the reward-model watcher, and the dashboard's Arena page."""
from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.collect.arena import Arena
from core.collect.chooser import (
    REPEAT_RATE_KEY,
    REWARD_SERVING_KEY,
    SAMPLING_KEY,
    RewardWatcher,
    check_repeat_rate,
    most_uncertain_pair,
    preference,
    read_repeat_rate,
    read_reward_serving,
    read_sampling,
    save_settings,
)
from core.collect.generate import Generator
from core.records import InputError, Prompt, SamplingSettings
from core.runs import write_json
from core.store.database import Store

LIBRARY = [Prompt(f"Top 5 things #{i}", source="library", split="train") for i in range(5)]
APP = str(Path(__file__).resolve().parent.parent / "apps" / "dashboard.py")


class LengthScorer:
    """A reward model stand-in: a list scores a tenth of its length; every call is remembered, {text: score}."""

    def __init__(self):
        self.calls: list[dict[str, float]] = []

    def score(self, prompts, responses):
        scores = [len(text) / 10 for text in responses]
        self.calls.append(dict(zip(responses, scores)))
        return scores


def loaded_watcher(scorer) -> RewardWatcher:
    watcher = RewardWatcher(lambda: Path("reward-run"), lambda path: scorer)
    watcher.refresh()
    return watcher


def make_arena(store, tiny_loaded, reward=None, queue_size=0, candidates=4) -> Arena:
    return Arena(store, Generator(tiny_loaded), LIBRARY, sampling=SamplingSettings(max_new_tokens=8),
                 queue_size=queue_size, seed=0, reward=reward, candidates=candidates)


# ---- the pure chooser -----------------------------------------------------------------------------------------------
def test_preference_is_bradley_terry_and_never_overflows():
    assert preference(0.0, 0.0) == 0.5
    assert preference(1.0, 0.0) == pytest.approx(1 / (1 + math.exp(-1)))
    assert preference(0.0, 1.0) == pytest.approx(1 - preference(1.0, 0.0))
    assert (preference(900.0, -900.0), preference(-900.0, 900.0)) == (1.0, 0.0)


def test_the_most_uncertain_of_hand_scored_candidates_is_chosen():
    # gaps: (0,1) 3.0  (0,2) 1.0  (0,3) 2.6  (1,2) 2.0  (1,3) 0.4  (2,3) 1.6
    i, j, p_left = most_uncertain_pair([0.0, 3.0, 1.0, 2.6])
    assert (i, j) == (1, 3)
    assert p_left == pytest.approx(1 / (1 + math.exp(-0.4)))  # σ(3.0 - 2.6) = 0.5987


def test_ties_go_to_the_first_pair_every_time():
    assert most_uncertain_pair([0.0, 1.0, 2.0]) == (0, 1, pytest.approx(1 / (1 + math.e)))  # (0,1) and (1,2) tie
    assert {most_uncertain_pair([5.0, 5.0, 5.0, 5.0])[:2] for _ in range(5)} == {(0, 1)}


def test_only_allowed_pairs_are_eligible():
    policy = ["base", "base", "tuned", "tuned"]
    i, j, _ = most_uncertain_pair([0.0, 0.1, 5.0, 5.05], lambda i, j: policy[i] != policy[j])
    assert (i, j) == (1, 2)  # 4.9, the closest base-vs-tuned call; (0,1) and (2,3) are closer but same-policy
    with pytest.raises(ValueError, match="no eligible pair"):
        most_uncertain_pair([1.0, 2.0], lambda i, j: False)


@pytest.mark.parametrize("rate", [-0.1, 1.5, "often", None, True, math.nan])
def test_a_bad_repeat_rate_is_refused(rate):
    with pytest.raises(InputError, match="between 0 and 1"):
        check_repeat_rate(rate)


def test_settings_default_round_trip_and_refuse_bad_values(store):
    assert (read_sampling(store), read_repeat_rate(store)) == ("random", 0.05)
    save_settings(store, "uncertain", 0.2)
    assert (read_sampling(store), read_repeat_rate(store)) == ("uncertain", 0.2)
    with pytest.raises(InputError, match="sampling is one of random, uncertain"):
        save_settings(store, "greedy", 0.5)
    assert read_repeat_rate(store) == 0.2  # nothing written when one value is bad
    save_settings(store, repeat_rate=0.0)  # None leaves the other as stored
    assert (read_sampling(store), read_repeat_rate(store)) == ("uncertain", 0.0)
    store.set_setting(SAMPLING_KEY, "by hand")  # a bad stored value falls back to the default
    assert read_sampling(store) == "random"


# ---- the arena's uncertain pairs ------------------------------------------------------------------------------------
def test_an_uncertain_pair_is_the_closest_call_and_stores_its_prediction(store, tiny_loaded):
    scorer = LengthScorer()
    arena = make_arena(store, tiny_loaded, reward=loaded_watcher(scorer))
    save_settings(store, "uncertain")
    for _ in range(3):
        shown = arena.next_pair()
        scored = scorer.calls[-1]
        assert len(scored) <= 4 and {shown.left, shown.right} <= set(scored)  # 4 samples, identical ones merged
        texts = list(scored)
        closest = min(abs(scored[a] - scored[b]) for n, a in enumerate(texts) for b in texts[n + 1:])
        assert abs(scored[shown.left] - scored[shown.right]) == pytest.approx(closest)
        row = store.table("pairs").set_index("pair_id").loc[shown.pair_id]
        assert row.chosen_by == "uncertain"
        assert row.predicted_p_left == pytest.approx(preference(scored[shown.left], scored[shown.right]))
    assert store.votes().empty  # choosing casts no vote


def test_random_sampling_or_no_reward_model_gives_random_pairs(store, tiny_loaded, monkeypatch):
    scorer = LengthScorer()
    with_model = make_arena(store, tiny_loaded, reward=loaded_watcher(scorer))
    without = make_arena(store, tiny_loaded, reward=RewardWatcher(lambda: None, lambda path: scorer))
    batches = []
    real = Generator.generate
    monkeypatch.setattr(Generator, "generate", lambda self, prompt, policies, *a, **k:
                        batches.append(len(policies)) or real(self, prompt, policies, *a, **k))
    with_model.next_pair()  # the setting says random (the default)
    save_settings(store, "uncertain")
    without.next_pair()  # uncertain, but no reward run has finished
    without.custom_pair("Top 5 rivers to swim in")  # a typed request is always random
    assert batches == [2, 2, 2] and not scorer.calls
    pairs = store.table("pairs")
    assert list(pairs.chosen_by) == ["random"] * 3 and pairs.predicted_p_left.isna().all()


def test_a_typed_request_stays_random_under_uncertain_choice(store, tiny_loaded):
    scorer = LengthScorer()
    arena = make_arena(store, tiny_loaded, reward=loaded_watcher(scorer))
    save_settings(store, "uncertain")
    shown = arena.custom_pair("Top 5 mountains for a first climb")
    assert not scorer.calls and store.table("pairs").set_index("pair_id").loc[shown.pair_id].chosen_by == "random"


def test_fewer_than_two_candidates_is_refused(store, tiny_loaded):
    with pytest.raises(InputError, match="pass 2 or more"):
        make_arena(store, tiny_loaded, candidates=1)


# ---- the reward-model watcher ---------------------------------------------------------------------------------------
def write_run(root: Path, name: str, stage: str, state: str) -> Path:
    run = root / name
    run.mkdir(parents=True)
    write_json(run / "config.json", {"stage": stage})
    write_json(run / "status.json", {"state": state, "pid": os.getpid()})  # our pid: a "running" run stays running
    return run


def test_the_watcher_picks_up_each_newer_finished_reward_run(tmp_path, monkeypatch, store):
    from core.runs import newest_finished_run

    monkeypatch.setenv("RLHF_RUNS_DIR", str(tmp_path))
    loaded = []

    def load(path):
        loaded.append(Path(path).name)
        if "broken" in str(path):
            raise OSError("adapter_model.safetensors is truncated")
        return LengthScorer()

    watcher = RewardWatcher(lambda: newest_finished_run("reward"), load, store)
    watcher.refresh()
    assert watcher.scorer is None and not loaded  # no run yet: random pairs
    assert read_reward_serving(store) == {"run": None, "failed": None}
    first = write_run(tmp_path, "reward-20260101-000001", "reward", "finished")
    watcher.refresh()
    watcher.refresh()  # nothing new: nothing reloaded
    assert (watcher.run, loaded) == (first, ["reward-20260101-000001"])
    write_run(tmp_path, "reward-20260102-000001", "reward", "running")
    write_run(tmp_path, "reward-20260103-000001", "reward", "failed")
    write_run(tmp_path, "sft-20260104-000001", "sft", "finished")
    watcher.refresh()
    assert watcher.run == first and len(loaded) == 1  # running, failed and other stages are not candidates
    newer = write_run(tmp_path, "reward-20260105-000001", "reward", "finished")
    watcher.refresh()
    assert watcher.run == newer and loaded[-1] == newer.name
    write_run(tmp_path, "reward-20260106-000001-broken", "reward", "finished")
    watcher.refresh()
    watcher.refresh()
    assert watcher.run == newer and watcher.scorer is not None  # a run that will not load keeps the last good one
    assert loaded.count("reward-20260106-000001-broken") == 1  # and is not retried at every refill
    # what the arena says it uses, for the Arena page: the last good run, and the newer one that would not load
    assert read_reward_serving(store) == {"run": str(newer), "failed": str(tmp_path / "reward-20260106-000001-broken")}
    newest = write_run(tmp_path, "reward-20260107-000001", "reward", "finished")
    watcher.refresh()  # a newer run loads: the broken one is behind it, nothing to warn of
    assert read_reward_serving(store) == {"run": str(newest), "failed": None}
    store.set_setting(REWARD_SERVING_KEY, "[]")  # garbled: read as nothing said
    assert read_reward_serving(store) == {}


def test_the_background_queue_loads_the_reward_model_and_fills_with_uncertain_pairs(store, tiny_loaded):
    threads = []

    def load(path):
        threads.append(threading.current_thread().name)
        return LengthScorer()

    save_settings(store, "uncertain")
    arena = make_arena(store, tiny_loaded, reward=RewardWatcher(lambda: Path("reward-run"), load), queue_size=1)
    arena.start()
    try:
        assert arena.queue.wait_until_full(timeout=60)
        assert threads == ["pair-queue"]  # loaded in the filler, never on a request thread
        shown = arena.next_pair()
    finally:
        arena.stop()
    assert store.table("pairs").set_index("pair_id").loc[shown.pair_id].chosen_by == "uncertain"


# ---- the dashboard's Arena page -------------------------------------------------------------------------------------
@pytest.fixture
def dashboard_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_DB", str(tmp_path / "db.duckdb"))
    monkeypatch.setenv("RLHF_RUNS_DIR", str(tmp_path / "runs"))
    (tmp_path / "runs").mkdir()
    return tmp_path


def open_arena_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("dashboard_pages/arena.py").run()
    assert not at.exception, at.exception
    return at


def test_the_arena_page_changes_what_a_running_arena_does(dashboard_env, tiny_loaded):
    write_run(dashboard_env / "runs", "reward-20260101-000001", "reward", "finished")
    arena_store = Store(dashboard_env / "db.duckdb")
    scorer = LengthScorer()
    arena = make_arena(arena_store, tiny_loaded, reward=loaded_watcher(scorer))
    before = arena.next_pair()
    at = open_arena_page()
    assert {m.label: m.value for m in at.metric}["reward model that uncertain choice scores with"] == \
        "reward-20260101-000001"
    # the arena's own word wins over the newest finished run: it was started with --reward-model, and a newer
    # run would not load
    write_run(dashboard_env / "runs", "reward-20260102-000001", "reward", "finished")
    arena_store.set_setting(REWARD_SERVING_KEY, json.dumps(
        {"run": str(dashboard_env / "runs" / "reward-20260101-000001"),
         "failed": str(dashboard_env / "runs" / "reward-20260102-000001")}))
    said = open_arena_page()
    assert {m.label: m.value for m in said.metric}["reward model that uncertain choice scores with"] == \
        "reward-20260101-000001"
    assert "could not load the reward model in reward-20260102-000001" in said.warning[0].value.replace("\\", "")
    arena_store.set_setting(REWARD_SERVING_KEY, json.dumps(  # the only run would not load: nothing scores pairs
        {"run": None, "failed": str(dashboard_env / "runs" / "reward-20260102-000001")}))
    shown = {m.label: m.value for m in open_arena_page().metric}["reward model that uncertain choice scores with"]
    assert shown.replace("\\", "") == "none: random pairs"  # escaped as text
    at.radio(key="arena_sampling").set_value("uncertain").run()
    at.number_input(key="arena_repeat_rate").set_value(0.25).run()
    at.button(key="arena_save").click().run()
    assert not at.exception and not at.error
    assert (arena_store.setting(SAMPLING_KEY), arena_store.setting(REPEAT_RATE_KEY)) == ("uncertain", "0.25")
    after = arena.next_pair()  # the same arena object: no restart
    chosen_by = arena_store.table("pairs").set_index("pair_id").chosen_by
    assert (chosen_by[before.pair_id], chosen_by[after.pair_id]) == ("random", "uncertain")
    assert read_repeat_rate(arena.store) == 0.25
    assert open_arena_page().radio(key="arena_sampling").value == "uncertain"  # the page shows what is stored


def test_a_viewer_sees_the_arena_settings_but_cannot_change_them(dashboard_env, monkeypatch):
    monkeypatch.setenv("RLHF_PASSWORD", "s3cret-admin")
    monkeypatch.setenv("RLHF_VIEWER_PASSWORD", "look-only")
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.text_input(key="password").set_value("look-only").run()
    at.switch_page("dashboard_pages/arena.py").run()
    assert not at.exception and at.info  # no reward run yet: the page says what that means
    assert at.radio(key="arena_sampling").disabled and at.number_input(key="arena_repeat_rate").disabled
    assert "arena_save" not in {b.key for b in at.button}
    assert Store(dashboard_env / "db.duckdb").setting(SAMPLING_KEY) is None
