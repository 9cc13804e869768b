"""The Train page's Start button: a double click (Streamlit queues the second press as a rerun) starts one run."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.train import launcher

APP = str(Path(__file__).resolve().parent.parent / "apps" / "dashboard.py")


def test_a_second_click_on_start_starts_nothing(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.setenv("RLHF_DB", str(tmp_path / "db.duckdb"))
    monkeypatch.setenv("RLHF_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("RLHF_BASE_MODEL", tiny_model_dir)
    (tmp_path / "runs").mkdir()
    started = []

    def launch(stage, cfg):
        started.append(stage)
        return launcher.Launch(tmp_path / "runs" / f"sft-{len(started)}", pid=1, command=[])
    monkeypatch.setattr(launcher, "launch", launch)
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("dashboard_pages/train.py").run()
    at.text_input(key="sft:quick:base_model").set_value(tiny_model_dir).run()
    at.button(key="start").click().run()
    at.button(key="start").click().run()
    assert started == ["sft"] and not at.exception
    assert any("a second click starts nothing" in info.value for info in at.info)
    at.text_input(key="sft:quick:max_steps").set_value("3").run()  # other settings: a run of their own
    at.button(key="start").click().run()
    assert started == ["sft", "sft"] and any("started sft-2" in s.value for s in at.success)
