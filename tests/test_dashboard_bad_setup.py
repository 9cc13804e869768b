"""The dashboard started on a bad setup or reading a damaged run: one line on the page saying what to change, never
a traceback (Streamlit AppTest, a fresh database and runs folder each)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from core.runs import append_jsonl, write_json

APP = str(Path(__file__).resolve().parent.parent / "apps" / "dashboard.py")


def open_page(tmp_path, monkeypatch, page: str = "data", db: Path | None = None) -> AppTest:
    monkeypatch.setenv("RLHF_DB", str(db or tmp_path / "db.duckdb"))
    monkeypatch.setenv("RLHF_RUNS_DIR", str(tmp_path / "runs"))
    (tmp_path / "runs").mkdir(exist_ok=True)
    at = AppTest.from_file(APP, default_timeout=120).run()
    if page != "data":
        at.switch_page(f"dashboard_pages/{page}.py").run()
    return at


def test_a_device_this_machine_lacks_is_named_not_raised(tmp_path, monkeypatch, request):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: RLHF_DEVICE=cuda is usable here")
    from apps.dashboard_shared import device_label

    monkeypatch.setenv("RLHF_DEVICE", "cuda")
    device_label.clear()  # cached for the dashboard process's life: another test's in this one
    request.addfinalizer(device_label.clear)  # and this one's not left for the next
    for page in ("data", "train"):
        at = open_page(tmp_path, monkeypatch, page)
        assert not at.exception, at.exception
        sidebar = at.sidebar.text[0].value
        assert ("Device: unusable: Device 'cuda' was asked for but no CUDA GPU is visible; set RLHF_DEVICE to cpu."
                in sidebar)
    assert "set RLHF\\_DEVICE to cpu" in at.caption[0].value  # the Train page's line, escaped as text


def test_a_database_that_is_not_duckdb_gets_one_line(tmp_path, monkeypatch):
    notes = tmp_path / "notes.duckdb"
    notes.write_text("my shopping list\n")
    at = open_page(tmp_path, monkeypatch, db=notes)
    assert not at.exception, at.exception
    assert len(at.error) == 1 and str(notes) in at.error[0].value.replace("\\", "")
    assert notes.read_text() == "my shopping list\n"  # left as it was


def test_samples_without_a_step_read_as_no_samples(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "ppo-20260101-000001"
    run.mkdir(parents=True)
    write_json(run / "config.json", {"stage": "ppo"})
    write_json(run / "status.json", {"state": "running", "step": "5", "total": -3, "pid": 1})  # hand-edited
    append_jsonl(run / "samples.jsonl", [{"step": None, "prompt": "Top 5 x", "response": "1. a"}])
    at = open_page(tmp_path, monkeypatch, "runs")
    assert not at.exception, at.exception
    assert "No samples in this run." in [c.value for c in at.caption]
