"""The Gradio arena through its real client: named endpoints, votes, undo, ratings, demonstrations, bad input."""
import asyncio
import json

import gradio as gr
import pytest
from gradio.state_holder import SessionState
from gradio_client import Client

from apps.arena import SHORTCUTS_JS, build_app
from core.collect.arena import Arena, ShownPair
from core.collect.generate import Generator
from core.model import load
from core.records import Prompt, SamplingSettings
from tests.helpers import free_port

GOOD_LIST = "1. Apples - crisp\n2. Pears - sweet\n3. Plums - juicy\n4. Figs - rich\n5. Kiwis - tart"
HOSTILE = "Top 5 C++ headers like #include <iostream> for **bold** coders <img src=x onerror=alert(1)>"
SKIPPED = {"__type__": "update"}  # what Gradio sends for an output a handler left as it was


@pytest.fixture(scope="module")
def built(tiny_model_dir, tmp_path_factory):
    from core.store.database import Store

    store = Store(tmp_path_factory.mktemp("arena") / "arena.duckdb")
    library = [Prompt(f"Top 5 things #{i}", source="library", split="train") for i in range(4)]
    arena = Arena(store, Generator(load(tiny_model_dir, device="cpu")), library,
                  sampling=SamplingSettings(max_new_tokens=8), queue_size=1, seed=0).start()
    yield arena, build_app(arena, default_annotator="tester"), store
    arena.stop()


@pytest.fixture(scope="module")
def served(built):
    _, app, store = built
    port = free_port()
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                       head=SHORTCUTS_JS)
    yield Client(f"http://127.0.0.1:{port}/", verbose=False), store, port
    app.close()


def on_page(app, handler: str, *inputs, state: SessionState | None = None) -> tuple[dict, SessionState]:
    """Run one of the page's own (private) handlers as the browser does: preprocess, handler, postprocess.
    Returns what each output receives, by key (or by its component's type for unkeyed ones), and the session."""
    state = state or SessionState(app)
    fn = next(f for f in app.fns.values() if f.name == handler)
    result = asyncio.run(app.process_api(fn, list(inputs), state=state))
    return {block.key or f"{type(block).__name__}-{block._id}": value
            for block, value in zip(fn.outputs, result["data"])}, state


def component(app, key: str):
    return next(block for block in app.blocks.values() if getattr(block, "key", None) == key)


def test_named_endpoints_are_published(served):
    client, _, _ = served
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/new_pair", "/next_pair", "/vote", "/undo", "/rate", "/demonstrate", "/status"} <= set(endpoints)


def test_new_pair_then_vote_is_stored(served):
    client, store, _ = served
    pair_id, left, right, left_generation, right_generation = client.predict("Top 5 fruits for a picnic",
                                                                            api_name="/new_pair")
    message, vote_id = client.predict(pair_id, "left", 3, "", api_name="/vote")
    assert message.startswith("Saved: left is better.")
    row = store.votes().set_index("pair_id").loc[pair_id]
    assert (row.prompt, row.choice, row.strength, row.annotator) == ("Top 5 fruits for a picnic", "left", 3, "tester")
    assert (row.left_text, row.right_text, row.comparison_id) == (left, right, vote_id)
    stored = store.table("pairs").set_index("pair_id").loc[pair_id]
    assert (stored.left_generation_id, stored.right_generation_id) == (left_generation, right_generation)


def test_an_api_client_can_rate_and_undo_with_the_ids_it_was_given(served):
    client, store, _ = served
    pair_id, _, _, left_generation, right_generation = client.predict("Top 5 lakes", api_name="/new_pair")
    _, vote_id = client.predict(pair_id, "right", None, "bot", api_name="/vote")
    assert client.predict(vote_id, "bot", api_name="/undo") == f"Vote undone; pair {pair_id} is open again."
    assert client.predict(right_generation, 4, "bot", api_name="/rate") == "Rated 4/5."
    ratings = store.table("ratings").set_index("generation_id")
    assert ratings.loc[right_generation].stars == 4 and left_generation not in ratings.index
    next_id, _, _, _, next_left, next_right = client.predict(api_name="/next_pair")
    assert store.table("pairs").set_index("pair_id").loc[next_id].left_generation_id == next_left
    message, vote_id, following, *_ = client.predict(next_id, "left", None, "bot", api_name="/vote_and_next")
    assert store.votes().set_index("comparison_id").loc[vote_id].pair_id == next_id and following != next_id


@pytest.mark.parametrize("stars", [3.7, True, 0])
def test_rate_refuses_anything_but_whole_stars(served, stars):
    client, store, _ = served
    _, _, _, left_generation, _ = client.predict("Top 5 seas", api_name="/new_pair")
    before = len(store.table("ratings"))
    with pytest.raises(Exception, match="1 to 5 whole stars"):
        client.predict(left_generation, stars, "bot", api_name="/rate")
    assert len(store.table("ratings")) == before


def test_library_pair_undo_revote_rate_and_demonstrate(served):
    client, store, _ = served
    pair_id, prompt, *_ = client.predict(api_name="/next_pair")
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
    ("/new_pair", ("\u200b\u200b\u200b",), "empty"),
    ("/new_pair", ("\ufeff",), "empty"),
    ("/new_pair", (None,), "must be text"),
    ("/vote", ("nope", "left", 0, ""), "Strength is one of 1"),
    ("/vote", ("nope", "left", 2.7, ""), "Strength is one of 1"),
    ("/vote", ("nope", "left", True, ""), "Strength is one of 1"),
    ("/rate", ("nope", 9, ""), "1 to 5"),
    ("/rate", ("nope", 3.7, ""), "1 to 5 whole stars"),
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
    message, vote_id, next_id, prompt, left, right, *_ = client.predict(pair_id, "right", None, "",
                                                                        api_name="/vote_and_next")
    assert message.startswith("Saved: right is better.") and "Votes: " in message and vote_id
    assert next_id != pair_id and prompt.startswith("Top 5 things #")
    assert next_id in set(store.table("pairs").pair_id)


def test_second_vote_on_a_pair_is_refused(served):
    client, _, _ = served
    pair_id, *_ = client.predict("Top 5 rivers", api_name="/new_pair")
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


# ---- the page's own handlers -----------------------------------------------------------------------------------------
def test_requests_lists_and_status_are_read_only_text_never_markdown(built):
    _, app, _ = built
    for key in ("shown_request", "left_list", "right_list", "status"):
        box = component(app, key)
        assert isinstance(box, gr.Textbox) and box.interactive is False, key
    for fn in app.fns.values():  # nothing a handler writes is rendered as Markdown or HTML
        assert not [block for block in fn.outputs if isinstance(block, (gr.Markdown, gr.HTML))], fn.name


def test_a_typed_request_comes_back_exactly_as_typed(built):
    _, app, store = built
    shown, _ = on_page(app, "on_request", None, HOSTILE)
    assert shown["shown_request"] == HOSTILE
    assert HOSTILE in set(store.table("prompts").text)


def test_lists_come_back_exactly_as_the_model_wrote_them(built, monkeypatch):
    arena, app, _ = built
    left = "1. ![beacon](https://tracker.example/pixel.gif)\n2. <b>bold</b>\n3. #include <iostream>\n4. **x**\n5. `y`"
    right = "1. <img src=x onerror=alert(1)>\n2. a\n3. b\n4. c\n5. d"
    monkeypatch.setattr(arena, "next_pair", lambda: ShownPair("p-0", HOSTILE, left, right, "g-left", "g-right"))
    shown, _ = on_page(app, "on_next", None)
    assert (shown["shown_request"], shown["left_list"], shown["right_list"]) == (HOSTILE, left, right)


@pytest.mark.parametrize("handler, inputs, message", [
    ("on_request", ("   ",), "The request is empty: type something first."),
    ("on_request", ("\u200b\ufeff",), "The request is empty: type something first."),
    ("on_undo", ("tester",), "Nothing to undo: no vote in this session since the last undo."),
])
def test_a_refused_input_shows_one_message_and_leaves_the_page_as_it_was(built, handler, inputs, message):
    _, app, store = built
    shown, state = on_page(app, "on_next", None)
    view_id = next(block._id for block in app.blocks.values() if isinstance(block, gr.State))
    view_before, pairs_before = state[view_id], len(store.table("pairs"))
    with pytest.warns(UserWarning, match=message.split(":")[0]):  # the toast (a warning outside a live page)
        refused, state = on_page(app, handler, None, *inputs, state=state)
    assert refused.pop("status") == message
    assert all(value in (SKIPPED, None) for value in refused.values())  # None: a State output, never sent
    assert [v for k, v in refused.items() if not k.startswith("State-")] == [SKIPPED] * (len(refused) - 1)
    assert state[view_id] == view_before and len(store.table("pairs")) == pairs_before


def test_rlhf_password_protects_the_arena_through_the_real_server(built, monkeypatch):
    """With RLHF_PASSWORD set, the arena's server refuses clients without it or with a wrong one."""
    from core.access import arena_login

    monkeypatch.setenv("RLHF_PASSWORD", "s3cret-admin")
    arena, _, store = built
    app = build_app(arena, default_annotator="tester")  # its own server beside the module's open one
    port = free_port()
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                       auth=arena_login())
    try:
        url = f"http://127.0.0.1:{port}/"
        for auth in (None, ("alice", "guess")):
            with pytest.raises(Exception):
                Client(url, auth=auth, verbose=False).predict(api_name="/status")
        counts = Client(url, auth=("alice", "s3cret-admin"), verbose=False).predict(api_name="/status")
        assert counts["votes"] == store.counts()["votes"]
    finally:
        app.close()


def test_a_click_that_arrives_after_the_pair_changed_saves_nothing(built):
    """A second click queued behind a vote reaches the server once the session shows the next pair: the lists the
    page sent tell it apart, so it lands on no pair the person did not see."""
    _, app, store = built
    shown, state = on_page(app, "on_next", None)
    votes_before = len(store.votes())
    with pytest.warns(UserWarning, match="The pair changed"):
        stale, state = on_page(app, "on_vote_right", None, "an older left", shown["right_list"], None, "tester",
                               state=state)
    assert stale["status"].startswith("The pair changed") and len(store.votes()) == votes_before
    voted, state = on_page(app, "on_vote_left", None, shown["left_list"], shown["right_list"], None, "tester",
                           state=state)
    assert len(store.votes()) == votes_before + 1 and voted["status"].startswith("Saved")
    assert voted["left_list"] != shown["left_list"] or voted["shown_request"] != shown["shown_request"]
    edit_side = next(block for block in app.blocks.values() if getattr(block, "elem_id", None) == "edit-side")
    assert voted[f"Radio-{edit_side._id}"] is None  # "Start from" is cleared with the new pair


def test_a_stored_vote_is_kept_and_undoable_when_no_next_pair_comes(built, monkeypatch):
    arena, app, store = built
    shown, state = on_page(app, "on_next", None)

    def failing(annotator=None):
        raise RuntimeError("generation failed")
    monkeypatch.setattr(arena, "next_pair", failing)
    voted, state = on_page(app, "on_vote_tie", None, shown["left_list"], shown["right_list"], None, "tester",
                           state=state)
    assert "No next pair yet (generation failed)" in voted["status"] and voted["status"].startswith("Saved")
    monkeypatch.undo()
    undone, state = on_page(app, "on_undo", None, "tester", state=state)
    assert undone["status"].startswith("Last vote undone") and undone["left_list"] == shown["left_list"]
