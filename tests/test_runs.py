"""Run folders: what the writer puts in status.json / metrics.jsonl, what readers make of damaged or killed runs,
which run is the newest, stopping on SIGTERM (the snapshot a run trains on: test_snapshot.py)."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from core.records import (
    InputError,
    ModelLoadError,
)
from core.runs import (
    list_runs,
    new_run_dir,
    newest_finished_run,
    read_json,
    read_jsonl,
    read_status,
    write_json,
)
from core.train.run_writer import Run, StopRequest
from tests.helpers import tensorboard_scalars


@pytest.fixture(autouse=True)
def restore_process_state():
    """Run installs SIGTERM/SIGINT handlers and lowers the root log level for the whole process: undo both."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    level = logging.getLogger().level
    yield
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    logging.getLogger().setLevel(level)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ---- the writer ----------------------------------------------------------------------------------------------------
def test_status_goes_from_running_to_finished_with_step_and_total(tmp_path):
    run = Run(tmp_path, total=3)
    status = read_json(tmp_path / "status.json")
    assert (status["state"], status["step"], status["total"], status["eta_s"]) == ("running", 0, 3, None)
    assert status["pid"] == os.getpid()
    assert read_status(tmp_path)["state"] == "running"  # our own pid is alive

    for step in (1, 2, 3):
        run.log_metrics(step, {"train/loss": 1.0 / step})
        assert read_json(tmp_path / "status.json")["step"] == step
    run.finish()

    final = read_status(tmp_path)
    assert (final["state"], final["step"], final["total"], final["eta_s"]) == ("finished", 3, 3, 0.0)
    assert final["started_at"] == status["started_at"] and "finished_at" in final
    assert not list(tmp_path.glob(".*.tmp"))  # write_json left no temporary file behind


def test_a_phase_message_ends_with_the_next_logged_step(tmp_path):
    """PPO says "measuring the starting policy's reward scale" before its first update; once an update is logged the
    running status must no longer say so (it did, on the GPU check, until the run ended)."""
    run = Run(tmp_path, total=2)
    run.set_status("running", message="measuring the starting policy's reward scale")
    assert read_json(tmp_path / "status.json")["message"] == "measuring the starting policy's reward scale"
    run.log_metrics(1, {"train/loss": 1.0})
    assert read_json(tmp_path / "status.json")["message"] == ""
    run.complete(stopped=False)
    assert read_json(tmp_path / "status.json")["message"] == "adapter saved"


def test_eta_mid_run_is_the_remaining_steps_at_the_pace_so_far(tmp_path):
    before = time.monotonic()
    run = Run(tmp_path, total=4)
    time.sleep(0.1)
    run.log_metrics(1, {"train/loss": 2.0})
    elapsed = time.monotonic() - before

    eta = read_json(tmp_path / "status.json")["eta_s"]
    assert 3 * 0.1 - 0.05 <= eta <= 3 * elapsed + 0.05  # three steps left at >= 0.1 s each
    run.finish()


def test_metrics_are_flat_rows_with_their_step_and_nan_as_null(tmp_path):
    run = Run(tmp_path, total=2)
    run.log_metrics(1, {"train/loss": torch.tensor(0.5), "objective/kl": np.float32(0.25), "eval/prompts": 3})
    run.log_metrics(2, {"train/loss": float("nan"), "objective/kl": torch.tensor(float("inf")), "eval/prompts": 3})
    run.finish()

    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert rows == [{"step": 1, "train/loss": 0.5, "objective/kl": 0.25, "eval/prompts": 3},
                    {"step": 2, "train/loss": None, "objective/kl": None, "eval/prompts": 3}]
    assert "NaN" not in (tmp_path / "metrics.jsonl").read_text()  # strict JSON, readable by any tool
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


def test_samples_carry_their_step(tmp_path):
    run = Run(tmp_path, total=1)
    run.log_samples(1, [{"policy": "base", "text": "1. a"}, {"policy": "tuned", "text": "1. b"}])
    run.finish()
    assert read_jsonl(tmp_path / "samples.jsonl") == [{"step": 1, "policy": "base", "text": "1. a"},
                                                     {"step": 1, "policy": "tuned", "text": "1. b"}]


def test_fail_records_the_error_and_keeps_the_traceback_in_the_log(tmp_path):
    run = Run(tmp_path, total=5)
    run.log_metrics(2, {"train/loss": 1.0})
    try:
        raise ValueError("loss exploded")
    except ValueError as err:
        run.fail(err)

    status = read_status(tmp_path)
    assert (status["state"], status["step"], status["message"]) == ("failed", 2, "ValueError: loss exploded")
    log_text = (tmp_path / "train.log").read_text()
    assert "Traceback" in log_text and "loss exploded" in log_text


def test_a_resumed_run_keeps_its_start_time_and_counts_eta_from_the_resume_step(tmp_path):
    first = Run(tmp_path, total=10)
    first.log_metrics(4, {"train/loss": 1.0})
    first.finish("stopped")
    started_at = read_json(tmp_path / "status.json")["started_at"]

    resumed = Run(tmp_path, total=10, resumed_step=4)
    status = read_json(tmp_path / "status.json")
    assert (status["state"], status["step"], status["resumed_at_step"]) == ("running", 4, 4)
    assert status["started_at"] == started_at
    assert status["eta_s"] is None  # no step done since the resume: no pace to extrapolate from
    resumed.finish()


def test_a_non_main_rank_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")  # as `accelerate launch` sets it for the second process
    run = Run(tmp_path, total=2)
    run.save_config(object())
    run.log_metrics(1, {"train/loss": 1.0})
    run.log_samples(1, [{"text": "x"}])
    run.finish()
    assert list(tmp_path.iterdir()) == []


# ---- stopping ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_and_ctrl_c_ask_the_run_to_stop_instead_of_killing_it(tmp_path, sig):
    run = Run(tmp_path, total=3)
    assert not run.stop.requested
    os.kill(os.getpid(), sig)
    time.sleep(0.01)  # Python runs the handler at the next bytecode boundary in the main thread
    assert run.stop.requested
    run.finish("stopped", message="stopped on request")
    assert read_status(tmp_path)["state"] == "stopped"


def test_installing_outside_the_main_thread_does_not_raise():
    errors = []
    thread = threading.Thread(target=lambda: errors.append(StopRequest().install().requested))
    thread.start()
    thread.join()
    assert errors == [False]


# ---- the reader ----------------------------------------------------------------------------------------------------
def test_a_running_status_whose_process_is_gone_reads_killed(tmp_path):
    write_json(tmp_path / "status.json", {"state": "running", "step": 7, "total": 30, "pid": dead_pid()})
    status = read_status(tmp_path)
    assert status["state"] == "killed" and status["step"] == 7 and "killed" in status["message"]


@pytest.mark.parametrize("pid", [None, "123", 0])
def test_a_running_status_without_a_usable_pid_reads_killed(tmp_path, pid):
    write_json(tmp_path / "status.json", {"state": "running", "pid": pid})
    assert read_status(tmp_path)["state"] == "killed"


def test_a_final_state_is_kept_even_though_the_process_is_gone(tmp_path):
    write_json(tmp_path / "status.json", {"state": "finished", "pid": dead_pid()})
    assert read_status(tmp_path)["state"] == "finished"


@pytest.mark.parametrize("content", [None, "", "{\"state\": \"runn", "[1, 2]", "not json at all"])
def test_a_missing_or_garbled_status_reads_damaged(tmp_path, content):
    if content is not None:
        (tmp_path / "status.json").write_text(content)
    status = read_status(tmp_path)
    assert status["state"] == "damaged" and "status.json" in status["message"]


def test_read_jsonl_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "train/loss": 2.0}\n{"step": 2, "train/loss": 1.5}\n{"step": 3, "train/lo')
    assert read_jsonl(path) == [{"step": 1, "train/loss": 2.0}, {"step": 2, "train/loss": 1.5}]
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_new_run_dir_never_reuses_a_folder(tmp_path):
    first, second = new_run_dir("sft", tmp_path), new_run_dir("sft", tmp_path)
    assert first != second and first.is_dir() and second.is_dir()
    assert first.name.startswith("sft-") and second.name.startswith("sft-")


def test_list_runs_orders_newest_first_across_stages(tmp_path):
    for name in ("sft-20261120-100000", "reward-20261121-090000", "ppo-20261121-100000", "sft-20261121-100000-1"):
        (tmp_path / name).mkdir()
        write_json(tmp_path / name / "config.json", {"stage": name.split("-")[0]})
    write_json(tmp_path / "ppo-20261121-100000" / "status.json", {"state": "finished", "pid": 1})
    (tmp_path / "notes.txt").write_text("not a run")

    runs = list_runs(tmp_path)
    assert [r.name for r in runs] == ["sft-20261121-100000-1", "ppo-20261121-100000", "reward-20261121-090000",
                                      "sft-20261120-100000"]
    assert [r.stage for r in runs] == ["sft", "ppo", "reward", "sft"]
    assert runs[1].status["state"] == "finished" and runs[0].status["state"] == "damaged"


def test_the_stage_comes_from_the_runs_own_files_not_its_name(tmp_path):
    """A run with its own --output-dir name is still plotted, offered and resumed as what it is."""
    named = tmp_path / "my-experiment"
    named.mkdir()
    write_json(named / "config.json", {"stage": "ppo", "learning_rate": 1e-4})
    old = tmp_path / "thursday"  # written before config.json named its stage: the config class says it
    old.mkdir()
    write_json(old / "config.json", {"stage_config": "RewardConfig"})
    starting = tmp_path / "sft-but-really-ppo"  # launched, no config yet: launch.json says
    starting.mkdir()
    write_json(starting / "launch.json", {"stage": "ppo", "pid": 1})
    (tmp_path / "ppo-20261121-100000").mkdir()  # nothing inside: its name is not trusted
    stages = {r.name: r.stage for r in list_runs(tmp_path)}
    assert stages == {"my-experiment": "ppo", "thursday": "reward", "sft-but-really-ppo": "ppo",
                      "ppo-20261121-100000": ""}


def test_newest_goes_by_when_a_run_started_not_by_its_name(tmp_path):
    """A run named by --output-dir is as new as it is: "reward-mine" from last week is not the newest reward run
    (the arena's uncertain choice and the leaderboard take the newest)."""
    for name, started_at in (("reward-mine", "2026-11-28T09:00:00+00:00"), ("reward-20261205-100000", None),
                             ("reward-20261204-100000", "2026-12-06T08:00:00+00:00")):  # resumed? still its start
        (tmp_path / name).mkdir()
        write_json(tmp_path / name / "config.json", {"stage": "reward"})
        write_json(tmp_path / name / "status.json", {"state": "finished", "pid": 1,
                                                     **({"started_at": started_at} if started_at else {})})
    assert [r.name for r in list_runs(tmp_path)] == ["reward-20261204-100000", "reward-20261205-100000",
                                                     "reward-mine"]
    assert newest_finished_run("reward", tmp_path) == tmp_path / "reward-20261204-100000"
    unnamed = tmp_path / "thursday"  # no status, no stamp: its folder's time
    unnamed.mkdir()
    assert list_runs(tmp_path)[0].path == unnamed
    odd = tmp_path / "reward-20261301-000000"  # digits that are no time (month 13): its folder's time too
    odd.mkdir()
    assert {r.path for r in list_runs(tmp_path)[:2]} == {unnamed, odd}


def test_list_runs_puts_a_run_made_later_first(tmp_path):
    older = new_run_dir("sft", tmp_path)
    newer = new_run_dir("sft", tmp_path)  # same second: a suffix; next second: a later stamp
    assert [r.path for r in list_runs(tmp_path)] == [newer, older]
    assert list_runs(tmp_path / "nothing-here") == []


def test_report_to_tensorboard_writes_every_logged_metric_by_name(tmp_path):
    @dataclass
    class TinyConfig:
        lr: float = 0.1
        report_to: str = "tensorboard"

    run = Run(tmp_path, total=2)
    run.save_config(TinyConfig())
    run.log_metrics(1, {"train/loss": 2.5, "objective/kl": 0.25, "note": "text is not a scalar", "gap": None})
    run.log_metrics(2, {"train/loss": 1.5, "objective/kl": 0.5})
    run.finish()
    logged = tensorboard_scalars(tmp_path / "tensorboard")
    assert logged == {"train/loss": [(1, 2.5), (2, 1.5)], "objective/kl": [(1, 0.25), (2, 0.5)]}
    assert read_json(tmp_path / "config.json")["report_to"] == "tensorboard"


def test_report_to_an_unknown_tracker_says_what_to_pass(tmp_path):
    @dataclass
    class TinyConfig:
        report_to: str = "mlflow"

    run = Run(tmp_path, total=1)
    with pytest.raises(InputError, match="--report-to 'mlflow' is not one of none, tensorboard, wandb"):
        run.save_config(TinyConfig())
    run.finish()


def test_a_reward_run_whose_adapter_names_no_base_model_is_one_line(tmp_path):
    """The scorer loads the base its adapter names; a config without one (hand-made, cut short) says so."""
    from core.train.reward_model import RewardScorer

    (tmp_path / "adapter").mkdir()
    write_json(tmp_path / "adapter" / "adapter_config.json", {"task_type": "SEQ_CLS"})
    with pytest.raises(ModelLoadError, match="names no base model.*python -m core train reward"):
        RewardScorer.from_folder(tmp_path)
