"""Dashboard buttons that act: a double click on Start (Streamlit queues the second press as a rerun) starts one
run; an export that cannot be written says so in one line."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.train import launcher

APP = str(Path(__file__).resolve().parent.parent / "apps" / "dashboard.py")


def open_page(tmp_path, monkeypatch, page: str) -> AppTest:
    monkeypatch.setenv("RLHF_DB", str(tmp_path / "db.duckdb"))
    monkeypatch.setenv("RLHF_RUNS_DIR", str(tmp_path / "runs"))
    (tmp_path / "runs").mkdir()
    at = AppTest.from_file(APP, default_timeout=120).run()
    if page != "data":
        at.switch_page(f"dashboard_pages/{page}.py").run()
    return at


def test_a_second_click_on_start_starts_nothing(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.setenv("RLHF_BASE_MODEL", tiny_model_dir)
    started = []

    def launch(stage, cfg):
        started.append(stage)
        return launcher.Launch(tmp_path / "runs" / f"sft-{len(started)}", pid=1, command=[])
    monkeypatch.setattr(launcher, "launch", launch)
    at = open_page(tmp_path, monkeypatch, "train")
    at.text_input(key="sft:quick:base_model").set_value(tiny_model_dir).run()
    at.button(key="start").click().run()
    at.button(key="start").click().run()
    assert started == ["sft"] and not at.exception
    assert any("a second click starts nothing" in info.value for info in at.info)
    at.text_input(key="sft:quick:max_steps").set_value("3").run()  # other settings: a run of their own
    at.button(key="start").click().run()
    assert started == ["sft", "sft"] and any("started sft-2" in s.value for s in at.success)


def test_an_export_that_cannot_be_written_says_so(tmp_path, monkeypatch):
    def full(store, out):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("core.store.preferences.export_votes", full)
    at = open_page(tmp_path, monkeypatch, "data")
    at.button(key="prepare_export").click().run()
    assert not at.exception and "could not be written: \\[Errno 28\\] No space left" in at.error[-1].value
