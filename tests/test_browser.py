"""Real-browser journeys in headless Chromium (Debian's, driven by Playwright; `make test` installs it): votes by
mouse and by keyboard, an edited list saved as a demonstration, hostile text shown exactly as typed, the dashboard's
curves, and passwords refused. Each journey checks what the database or the page holds; a failing one leaves a
screenshot in the test's tmp folder (its path is in the failure message)."""
from __future__ import annotations

import json
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from core.runs import write_json
from core.store.database import Store
from tests.helpers import serve

HOSTILE = "Top 5 C++ headers like #include <iostream> <img src=http://127.0.0.1:9/beacon.png> **bold**"


@pytest.fixture(scope="module")
def chromium():
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if not executable:  # a skipped browser test is not a passing one
        pytest.fail("no chromium: run `make browser` (it installs Debian's chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@contextmanager
def page_of(chromium, tmp_path: Path, name: str):
    """A fresh page that records every URL it requested; on failure, a screenshot named in the error."""
    page = chromium.new_page()
    page.requested = []
    page.on("request", lambda request: page.requested.append(request.url))
    try:
        yield page
    except Exception as err:
        shot = tmp_path / f"{name}.png"
        page.screenshot(path=str(shot), full_page=True)
        raise AssertionError(f"{err}\nscreenshot: {shot}") from err
    finally:
        page.close()


def text_of(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} textarea").input_value()


def wait_until(condition, timeout_s: float = 120, what: str = ""):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if value := condition():
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def arena(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser-arena")
    db = tmp / "arena.duckdb"
    with serve(["-m", "apps.arena", "--base-model", tiny_model_dir, "--db", str(db), "--port", "PORT",
                 "--annotator", "browser"], "/", {"RLHF_PASSWORD": ""}, tmp) as (url, _):
        yield url, Store(db), tmp


def test_votes_by_mouse_and_by_keyboard_land_in_the_database(chromium, arena):
    url, store, tmp = arena
    with page_of(chromium, tmp, "votes") as page:
        page.goto(url)
        # a pair is shown once its request is: the tiny random model may write an empty list for either side
        wait_until(lambda: text_of(page, "shown-request"), what="the first pair")
        page.click("#vote-left")
        wait_until(lambda: len(store.votes()) == 1, what="the mouse vote")
        wait_until(lambda: "Votes: 1" in text_of(page, "status"), what="the counter")
        page.locator("body").press("2")  # keyboard: 2 = right is better
        wait_until(lambda: len(store.votes()) == 2, what="the keyboard vote")
        assert sorted(store.votes().choice) == ["left", "right"]


def test_an_edited_list_is_saved_as_a_demonstration(chromium, arena):
    url, store, tmp = arena
    edited = "1. Chess\n2. Go\n3. Hive\n4. Patchwork\n5. Jaipur"
    before = store.counts()["demonstrations"]
    with page_of(chromium, tmp, "demonstration") as page:
        page.goto(url)
        wait_until(lambda: text_of(page, "left-list") or text_of(page, "right-list"), what="a pair with a list")
        side = "left" if text_of(page, "left-list") else "right"  # the tiny model may leave one side empty
        page.get_by_text("Edit a list into a good one").click()
        page.locator("#edit-side").get_by_text(side, exact=True).click()
        wait_until(lambda: text_of(page, "edit-text"), what=f"the {side} list copied into the editor")
        page.locator("#edit-text textarea").fill(edited)
        page.click("#save-demo")
        wait_until(lambda: store.counts()["demonstrations"] == before + 1, what="the demonstration")
    assert edited in store.table("demonstrations").text.tolist()


def test_a_hostile_request_appears_exactly_as_typed_and_loads_nothing(chromium, arena):
    url, store, tmp = arena
    with page_of(chromium, tmp, "hostile") as page:
        page.goto(url)
        page.locator("#request textarea").fill(HOSTILE)
        page.click("#ask")
        wait_until(lambda: text_of(page, "shown-request") == HOSTILE, what="the request shown back")
        assert not any("beacon" in u for u in page.requested)  # the <img> was never fetched
        assert page.locator("#shown-request img").count() == 0
    assert HOSTILE in store.table("prompts").text.tolist()


def test_a_wrong_password_is_refused_by_the_arena(chromium, tiny_model_dir, tmp_path):
    with serve(["-m", "apps.arena", "--base-model", tiny_model_dir, "--db", str(tmp_path / "a.duckdb"),
                 "--port", "PORT"], "/", {"RLHF_PASSWORD": "s3cret-admin"}, tmp_path) as (url, _), \
            page_of(chromium, tmp_path, "arena-password") as page:
        page.goto(url)
        page.get_by_label("username").fill("alice")
        page.get_by_label("password").fill("guess")
        page.get_by_role("button", name="Login").click()
        wait_until(lambda: page.get_by_text("Incorrect Credentials").count(), what="the refusal")
        page.get_by_label("username").fill("alice")  # the login form clears itself after a refusal
        page.get_by_label("password").fill("s3cret-admin")
        page.get_by_role("button", name="Login").click()
        page.wait_for_selector("#vote-left", timeout=120_000)


@pytest.fixture
def dashboard_env(tmp_path):
    runs = tmp_path / "runs"
    ppo = runs / "ppo-20260101-000003"
    ppo.mkdir(parents=True)
    write_json(ppo / "config.json", {"stage": "ppo"})
    write_json(ppo / "status.json", {"state": "finished", "step": 2, "total": 2, "message": "adapter saved"})
    rows = [{"step": s, "objective/scores": 0.1 * s, "objective/kl": 0.2 * s} for s in (1, 2)]
    (ppo / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"RLHF_DB": str(tmp_path / "db.duckdb"), "RLHF_RUNS_DIR": str(runs)}


def test_the_runs_page_shows_the_curves_of_an_existing_run(chromium, dashboard_env, tmp_path):
    with serve(["-m", "streamlit", "run", "apps/dashboard.py", "--server.port", "PORT"], "/_stcore/health",
                {**dashboard_env, "RLHF_PASSWORD": "", "RLHF_VIEWER_PASSWORD": ""}, tmp_path) as (url, _), \
            page_of(chromium, tmp_path, "runs") as page:
        page.goto(f"{url}/runs", timeout=180_000)
        page.wait_for_selector(".js-plotly-plot", timeout=180_000)
        wait_until(lambda: page.get_by_text("Reward", exact=True).count(), what="the Reward panel")


def test_a_wrong_password_is_refused_by_the_dashboard(chromium, dashboard_env, tmp_path):
    with serve(["-m", "streamlit", "run", "apps/dashboard.py", "--server.port", "PORT"], "/_stcore/health",
                {**dashboard_env, "RLHF_PASSWORD": "s3cret-admin"}, tmp_path) as (url, _), \
            page_of(chromium, tmp_path, "dashboard-password") as page:
        page.goto(url, timeout=180_000)
        field = page.locator("input[type=password]")
        field.wait_for(timeout=180_000)
        field.fill("guess")
        field.press("Enter")
        page.get_by_text("Wrong password.").wait_for(timeout=60_000)
        assert page.get_by_text("No votes yet").count() == 0
        field.fill("s3cret-admin")
        field.press("Enter")
        page.get_by_text("No votes yet").wait_for(timeout=120_000)
