"""Any two policies in the arena, switched live: the stored pairing and its checks, the watcher that follows it, a
running arena switching in its background thread (the ready pairs of the old pairing dropped), and the dashboard's
Arena page writing the pairing that an arena then serves."""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.collect.arena import Arena
from core.collect.chooser import (
    BASE,
    PAIRING_KEY,
    PairingWatcher,
    check_pairing,
    read_pairing,
    read_repeat_rate,
    read_round,
    read_sampling,
    read_serving,
    save_pairing,
    save_settings,
)
from core.collect.focus import read_focus
from core.collect.generate import Generator
from core.records import InputError, ModelLoadError, Policy, Prompt, SamplingSettings
from core.runs import adapter_dir, write_json
from core.store.database import Store
from core.train.best import check_policy, set_pairing

LIBRARY = [Prompt(f"Top 5 things #{i}", source="library", split="train") for i in range(5)]
APP = str(Path(__file__).resolve().parent.parent / "apps" / "dashboard.py")


def policy_run(root: Path, name: str, adapter: str, stage: str = "sft", state: str = "finished") -> Path:
    """A run folder as `train sft` leaves it: config, status and the adapter it made."""
    run = root / name
    shutil.copytree(adapter, run / "adapter")
    write_json(run / "config.json", {"stage": stage})
    write_json(run / "status.json", {"state": state, "pid": os.getpid()})
    return run


def reward_run(root: Path, name: str) -> Path:
    """A finished run whose adapter is a sequence classifier: never a policy."""
    run = root / name
    (run / "adapter").mkdir(parents=True)
    write_json(run / "adapter" / "adapter_config.json", {"task_type": "SEQ_CLS", "base_model_name_or_path": "tiny"})
    write_json(run / "config.json", {"stage": "reward"})
    write_json(run / "status.json", {"state": "finished"})
    return run


def loader(generator: Generator, threads: list[str] | None = None):
    """What apps/arena.py passes the arena: a side -> a loaded Policy (noting the thread it loads in)."""
    def load(side: str) -> Policy:
        if threads is not None:
            threads.append(threading.current_thread().name)
        return generator.base_policy if side == BASE else generator.add_adapter(str(adapter_dir(check_policy(side))))
    return load


def wait_until(condition, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


# ---- the setting ----------------------------------------------------------------------------------------------------
def test_a_pairing_round_trips_and_bad_ones_are_refused(store):
    assert (read_pairing(store), read_round(store)) == ((BASE, BASE), None)
    save_pairing(store, (BASE, "/runs/sft-1"), "round 1: sft-1 vs base")
    assert (read_pairing(store), read_round(store)) == ((BASE, "/runs/sft-1"), "round 1: sft-1 vs base")
    for bad in (["base"], ["base", ""], "base,sft", [1, 2], None):
        with pytest.raises(InputError, match="a pairing is two policies"):
            check_pairing(bad)
    with pytest.raises(InputError, match="control characters"):
        save_pairing(store, (BASE, BASE), "round\n2")
    assert read_pairing(store) == (BASE, "/runs/sft-1")  # nothing written when the round is bad
    save_pairing(store, round_name="round 2")  # the pairing left as stored
    assert (read_pairing(store), read_round(store)) == ((BASE, "/runs/sft-1"), "round 2")
    store.set_setting(PAIRING_KEY, "by hand")  # a bad stored value: base vs base, and the arena keeps serving
    assert read_pairing(store) == (BASE, BASE)


def test_the_page_function_stores_run_folders_and_refuses_what_is_not_a_policy(store, tmp_path, tiny_adapter_dir):
    sft = policy_run(tmp_path, "sft-20260101-000001", tiny_adapter_dir)
    reward = reward_run(tmp_path, "reward-20260101-000002")
    assert set_pairing(store, BASE, str(sft), "round 1") == (BASE, str(sft))
    with pytest.raises(ModelLoadError, match="SEQ_CLS adapter, not the CAUSAL_LM"):
        set_pairing(store, str(sft), str(reward), "round 2")
    with pytest.raises(ModelLoadError, match="holds no adapter"):
        set_pairing(store, str(tmp_path / "nowhere"), BASE, "round 2")
    assert (read_pairing(store), read_round(store)) == ((BASE, str(sft)), "round 1")  # both refused: unchanged
    set_pairing(store, BASE, str(sft), "")  # an empty name ends the round
    assert read_round(store) is None


# ---- the watcher ----------------------------------------------------------------------------------------------------
def test_the_watcher_switches_once_keeps_the_old_pair_when_a_side_will_not_load_and_says_what_it_serves(store):
    loaded, calls = [], []

    def load(side):
        loaded.append(side)
        if side == "/runs/broken":
            raise OSError("adapter_model.safetensors is truncated")
        return Policy("tiny", adapter=None if side == BASE else side)

    fixed = (Policy("tiny"), Policy("tiny"))
    watcher = PairingWatcher(store, load, fixed)
    assert not watcher.refresh() and watcher.policies == (Policy("tiny"), Policy("tiny"))
    save_pairing(store, (BASE, "/runs/sft-1"), "round 1")
    assert watcher.refresh(before_switch=lambda: calls.append(watcher.policies))
    assert calls == [fixed]  # called before the swap: the arena drops the old pairing's pairs there
    assert watcher.policies == (Policy("tiny"), Policy("tiny", "/runs/sft-1")) and watcher.round == "round 1"
    assert not watcher.refresh()  # nothing new: nothing reloaded
    assert loaded == [BASE, "/runs/sft-1"]  # nothing stored at first: the fixed two, nothing loaded
    served = read_serving(store)
    assert served["pairing"] == [BASE, "/runs/sft-1"] and served["policies"] == ["tiny", "tiny+sft-1"]
    assert served["round"] == "round 1" and served["error"] is None and served["since"]
    save_pairing(store, ("/runs/sft-1", "/runs/broken"))
    assert not watcher.refresh() and not watcher.refresh()
    assert loaded.count("/runs/broken") == 1  # not retried at every refill
    assert watcher.policies[1] == Policy("tiny", "/runs/sft-1")  # the old two are kept
    assert "truncated" in read_serving(store)["error"] and read_serving(store)["pairing"] == [BASE, "/runs/sft-1"]


def test_without_a_loader_the_policies_stay_fixed_and_only_the_round_is_followed(store):
    watcher = PairingWatcher(store, None, (Policy("tiny"), Policy("tiny", "/runs/x")))
    save_pairing(store, ("/runs/a", "/runs/b"), "round 3")
    assert not watcher.refresh()
    assert watcher.policies == (Policy("tiny"), Policy("tiny", "/runs/x")) and watcher.round == "round 3"


# ---- a running arena ------------------------------------------------------------------------------------------------
def test_a_running_arena_switches_in_its_background_thread_and_drops_the_old_pairs(store, tmp_path, tiny_loaded,
                                                                                   tiny_adapter_dir):
    generator, threads = Generator(tiny_loaded), []
    sft = policy_run(tmp_path, "sft-20260101-000001", tiny_adapter_dir)
    arena = Arena(store, generator, LIBRARY, sampling=SamplingSettings(max_new_tokens=4), queue_size=2, seed=0,
                  load_policy=loader(generator, threads))
    arena.queue.idle_prepare_s = 0.1
    dropped, drop = [], arena.queue.drop_ready
    arena.queue.drop_ready = lambda: dropped.append(drop()) or dropped[-1]
    arena.start()
    try:
        assert arena.queue.wait_until_full(timeout=60)  # two base-vs-base pairs ready
        threads.clear()
        set_pairing(store, BASE, str(sft), "round 1: sft vs base")  # what the Arena page's Switch does
        assert wait_until(lambda: arena.policies[1].adapter is not None)  # while full: no pair was taken
        assert threads == ["pair-queue", "pair-queue"]  # loaded in the filler, never on a request thread
        assert dropped == [2]  # the two ready pairs of the old pairing: dropped, never shown
        assert arena.queue.wait_until_full(timeout=60)
        shown = [arena.next_pair() for _ in range(3)]
    finally:
        arena.stop()
    pairs = store.table("pairs")
    assert set(pairs.pair_id) == {s.pair_id for s in shown}  # the dropped pairs were never stored
    assert set(pairs["round"]) == {"round 1: sft vs base"}
    generations = store.table("generations")
    assert set(generations.adapter.dropna()) == {str(sft / "adapter")}  # the run the adapter came from
    name = generator.base_policy.name
    assert set(generations.policy) == {name, f"{name}+sft-20260101-000001"}
    assert all(len(set(generations[generations.generation_id.isin([s.left_generation_id, s.right_generation_id])]
                       .policy)) == 2 for s in shown)  # every pair: base vs the run, sides shuffled and hidden
    assert read_serving(store)["policies"] == [name, f"{name}+sft-20260101-000001"]
    assert arena.vote(shown[0].pair_id, "left", "ann").right_policy in (name, f"{name}+sft-20260101-000001")


def test_the_arena_command_line_takes_a_pairing_and_a_round(store, tmp_path, tiny_model_dir, tiny_adapter_dir):
    from apps.arena import build_arena, parse_args

    sft = policy_run(tmp_path, "sft-20260101-000001", tiny_adapter_dir)
    db = str(store.path)
    with pytest.raises(InputError, match="not both"):
        build_arena(parse_args(["--pairing", f"base,{sft}", "--challenger", str(sft), "--db", db]))
    with pytest.raises(InputError, match="two policies"):
        build_arena(parse_args(["--pairing", str(sft), "--db", db]))
    with pytest.raises(InputError, match="repeat"):
        build_arena(parse_args(["--pairing", f"{sft},base", "--repeat-rate", "2", "--db", db]))
    for flag, bad in (("--sampling", "best"), ("--focus", "weakest")):
        with pytest.raises(SystemExit):  # argparse's one line
            parse_args([flag, bad])
    arena = build_arena(parse_args(["--base-model", tiny_model_dir, "--pairing", f"{sft}, base", "--round", "round 1",
                                    "--sampling", "uncertain", "--repeat-rate", "0.1", "--queue-size", "0",
                                    "--focus", "weak", "--db", db]))  # the space after the comma is not part of the second side
    try:
        assert [p.adapter for p in arena.policies] == [str(sft / "adapter"), None]
        assert (read_pairing(store), read_round(store)) == ((str(sft), BASE), "round 1")
        assert (read_sampling(store), read_repeat_rate(store)) == ("uncertain", 0.1)
        assert read_focus(store) == "weak"
    finally:
        arena.stop()


def test_a_bad_arena_port_in_the_environment_gets_one_line(monkeypatch, capsys):
    from apps.arena import parse_args

    monkeypatch.setenv("ARENA_PORT", "78x0")
    with pytest.raises(SystemExit):
        parse_args([])
    assert "invalid int value: '78x0'" in capsys.readouterr().err
    monkeypatch.setenv("ARENA_PORT", "7861")
    assert parse_args([]).port == 7861


def test_the_arena_command_line_names_the_reward_model_uncertain_choice_keeps(tmp_path, tiny_adapter_dir, monkeypatch):
    """--reward-model fixes the reward run uncertain choice scores with, even when a newer one finishes; without it
    the arena follows the newest finished one. A folder holding no reward adapter is refused in one line."""
    from apps.arena import reward_run_finder
    from core.records import ModelLoadError

    monkeypatch.setenv("RLHF_RUNS_DIR", str(tmp_path))
    older = reward_run(tmp_path, "reward-20260101-000001")
    fixed, newest = reward_run_finder(str(older)), reward_run_finder(None)
    assert fixed() == newest() == older.absolute()
    newer = reward_run(tmp_path, "reward-20260101-000002")
    assert (fixed(), newest()) == (older.absolute(), newer)
    with pytest.raises(ModelLoadError, match="not the SEQ_CLS adapter"):
        reward_run_finder(str(policy_run(tmp_path, "sft-20260101-000003", tiny_adapter_dir)))
    with pytest.raises(ModelLoadError, match="holds no adapter"):
        reward_run_finder(str(tmp_path / "nothing"))


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


def test_the_arena_page_switches_a_running_arena_and_shows_what_it_serves(dashboard_env, tiny_loaded,
                                                                          tiny_adapter_dir):
    runs = dashboard_env / "runs"
    sft = policy_run(runs, "sft-20260101-000001", tiny_adapter_dir)
    ppo = policy_run(runs, "ppo-20260101-000002", tiny_adapter_dir, stage="ppo")
    policy_run(runs, "sft-20260101-000003", tiny_adapter_dir, state="running")  # not finished: not a choice
    reward_run(runs, "reward-20260101-000004")  # a reward model: not a choice
    store, generator = Store(dashboard_env / "db.duckdb"), Generator(tiny_loaded)
    arena = Arena(store, generator, LIBRARY, sampling=SamplingSettings(max_new_tokens=4), queue_size=0, seed=0,
                  load_policy=loader(generator))
    at = open_arena_page()
    assert at.metric[0].value == "base vs base"  # the shared base model named once, in the help
    assert at.metric[0].help == f"{generator.base_policy.name} vs {generator.base_policy.name}"
    assert at.selectbox(key="pairing_second").options == ["base", ppo.name, sft.name]  # newest first
    at.selectbox(key="pairing_first").set_value(str(sft))
    at.selectbox(key="pairing_second").set_value(str(ppo))
    at.text_input(key="pairing_round").set_value("round 2: ppo vs sft")
    at.button(key="pairing_save").click().run()
    assert not at.exception and not at.error
    assert (read_pairing(store), read_round(store)) == ((str(sft), str(ppo)), "round 2: ppo vs sft")
    before = arena.next_pair()  # a request before the background thread noticed: the old pairing, nothing loads
    assert arena.policies == (generator.base_policy, generator.base_policy)
    arena.pairing.refresh(before_switch=arena.queue.drop_ready)  # what the queue's prepare does in the background
    after = arena.next_pair()
    pairs = store.table("pairs").set_index("pair_id")
    assert list(pairs["round"][[before.pair_id, after.pair_id]].fillna("none")) == ["none", "round 2: ppo vs sft"]
    adapters = set(store.table("generations").set_index("generation_id").adapter[
        [after.left_generation_id, after.right_generation_id]])
    assert adapters == {str(sft / "adapter"), str(ppo / "adapter")}
    page = open_arena_page()  # the page shows what the arena said it serves now
    name = generator.base_policy.name
    assert page.metric[0].value == "sft-20260101-000001 vs ppo-20260101-000002"
    assert page.metric[0].help == f"{name}+sft-20260101-000001 vs {name}+ppo-20260101-000002"
    assert page.selectbox(key="pairing_first").value == str(sft)
    assert json.loads(store.setting("arena.serving"))["round"] == "round 2: ppo vs sft"


def test_the_arena_page_shows_a_pairing_and_settings_saved_elsewhere_since_it_was_drawn(dashboard_env,
                                                                                        tiny_adapter_dir):
    """A keyed widget keeps its value across reruns: the page must still follow what Next round or another tab
    saved, and keep the person's unsaved pick while nothing new was saved."""
    sft = policy_run(dashboard_env / "runs", "sft-20260101-000001", tiny_adapter_dir)
    store = Store(dashboard_env / "db.duckdb")
    at = open_arena_page()
    at.text_input(key="pairing_round").set_value("typed, not saved").run()
    assert at.text_input(key="pairing_round").value == "typed, not saved"
    set_pairing(store, "base", str(sft), "round 2")  # as Next round does when its policy is trained
    save_settings(store, "uncertain", 0.25)
    at.run()
    assert at.selectbox(key="pairing_second").value == str(sft)
    assert at.text_input(key="pairing_round").value == "round 2"
    assert at.radio(key="arena_sampling").value == "uncertain"
    assert at.number_input(key="arena_repeat_rate").value == 0.25
