"""The Gradio arena through its real client: named endpoints, votes, undo, ratings, demonstrations, bad input."""
import json
import socket

import pytest
from gradio_client import Client

from apps.arena import SHORTCUTS_JS, build_app
from core.collect.arena import Arena
from core.collect.generate import Generator
from core.model import load
from core.records import Prompt, SamplingSettings

GOOD_LIST = "1. Apples - crisp\n2. Pears - sweet\n3. Plums - juicy\n4. Figs - rich\n5. Kiwis - tart"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory):
    from core.store.database import Store

    store = Store(tmp_path_factory.mktemp("arena") / "arena.duckdb")
    library = [Prompt(f"Top 5 things #{i}", source="library", split="train") for i in range(4)]
    arena = Arena(store, Generator(load(tiny_model_dir, device="cpu")), library,
                  sampling=SamplingSettings(max_new_tokens=8), queue_size=1, seed=0).start()
    app = build_app(arena, default_annotator="tester")
    port = free_port()
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                       head=SHORTCUTS_JS)
    yield Client(f"http://127.0.0.1:{port}/", verbose=False), store, port
    app.close()
    arena.stop()


def test_named_endpoints_are_published(served):
    client, _, _ = served
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/new_pair", "/next_pair", "/vote", "/undo", "/rate", "/demonstrate", "/status"} <= set(endpoints)


def test_new_pair_then_vote_is_stored(served):
    client, store, _ = served
    pair_id, left, right = client.predict("Top 5 fruits for a picnic", api_name="/new_pair")
    message = client.predict(pair_id, "left", 3, "", api_name="/vote")
    assert message.startswith("Saved: left is better.")
    row = store.votes().set_index("pair_id").loc[pair_id]
    assert (row.prompt, row.choice, row.strength, row.annotator) == ("Top 5 fruits for a picnic", "left", 3, "tester")
    assert (row.left_text, row.right_text) == (left, right)


def test_library_pair_undo_revote_rate_and_demonstrate(served):
    client, store, _ = served
    pair_id, prompt, _, _ = client.predict(api_name="/next_pair")
    assert prompt.startswith("Top 5 things #")
    client.predict(pair_id, "tie", None, "bot", api_name="/vote")
    vote_id = store.votes().set_index("pair_id").loc[pair_id].comparison_id
    assert "open again" in client.predict(vote_id, "bot", api_name="/undo")
    client.predict(pair_id, "both_bad", None, "bot", api_name="/vote")
    left_generation = store.table("pairs").set_index("pair_id").loc[pair_id].left_generation_id
    assert client.predict(left_generation, 5, "bot", api_name="/rate") == "Rated 5/5."
    assert client.predict(pair_id, "left", GOOD_LIST, "bot", api_name="/demonstrate") == "Demonstration saved."
    status = client.predict(api_name="/status")
    assert status["ratings"] >= 1 and status["demonstrations"] >= 1


@pytest.mark.parametrize("endpoint, args, message", [
    ("/new_pair", ("   ",), "empty"),
    ("/new_pair", ("x" * 1000,), "characters long"),
    ("/new_pair", ("Top 5\x07 fruits",), "control characters"),
    ("/vote", ("nope", "left", None, ""), "unknown pair"),
    ("/vote", ("nope", "sideways", None, ""), "one of left, right, tie, both_bad"),
    ("/rate", ("nope", 9, ""), "1 to 5"),
])
def test_bad_input_gets_a_clear_message_and_changes_nothing(served, endpoint, args, message):
    client, store, _ = served
    before = {t: len(store.table(t)) for t in ("prompts", "pairs", "comparisons", "ratings")}
    with pytest.raises(Exception, match=message):
        client.predict(*args, api_name=endpoint)
    assert {t: len(store.table(t)) for t in before} == before


def test_vote_and_next_returns_the_counter_and_a_new_pair(served):
    client, store, _ = served
    pair_id, *_ = client.predict(api_name="/next_pair")
    message, next_id, prompt, left, right = client.predict(pair_id, "right", None, "", api_name="/vote_and_next")
    assert message.startswith("Saved: right is better.") and "Votes: **" in message
    assert next_id != pair_id and prompt.startswith("Top 5 things #")
    assert next_id in set(store.table("pairs").pair_id)


def test_second_vote_on_a_pair_is_refused(served):
    client, _, _ = served
    pair_id, _, _ = client.predict("Top 5 rivers", api_name="/new_pair")
    client.predict(pair_id, "right", None, "", api_name="/vote")
    with pytest.raises(Exception, match="already has a vote"):
        client.predict(pair_id, "left", None, "", api_name="/vote")


def test_page_has_vote_buttons_and_keyboard_shortcuts(served):
    import urllib.request

    _, _, port = served
    config = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=10).read())
    assert 'addEventListener("keydown"' in config["head"]  # Gradio 6 injects `head` from the config
    config = json.dumps(config)
    assert all(f'"vote-{choice}"' in config for choice in ("left", "right", "tie", "both_bad"))


def test_the_scripted_annotator_votes_through_the_client(served):
    from bench.annotator import annotate

    _, store, port = served
    before = store.counts("scripted")["votes"]
    result = annotate(f"http://127.0.0.1:{port}/", votes=3, demonstrations=0, seed=0)
    assert result["votes"] == 3 and sum(result[c] for c in ("left", "right", "tie", "both_bad")) == 3
    assert store.counts("scripted")["votes"] == before + 3
