"""The arena: vote on pairs of top-5 lists in the browser. Every event goes to DuckDB through core.

    python -m apps.arena [--base-model M] [--challenger ADAPTER_DIR] [--db PATH] [--host 127.0.0.1] [--port 7860]

Named API endpoints for gradio_client (README lists them): new_pair, next_pair, vote, vote_and_next, undo, rate,
demonstrate, status. The page's own events are private; each handler below is a few lines over core.collect.arena.Arena.
"""
from __future__ import annotations

import argparse
import functools
import getpass
import logging
import os
from dataclasses import dataclass, replace

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr

from core.collect.arena import Arena, ShownPair
from core.records import STRENGTHS, InputError

log = logging.getLogger(__name__)

GUIDELINES = """
**Which list is better?** Judge the list as an answer to the request:
1. Exactly five items, numbered, no introduction or closing chatter.
2. Every item on topic, specific and useful; no repeats.
3. Items are concise: a name and a short reason.

Use **tie** when both are equally good, **both bad** when neither is acceptable. Strength is optional.
Rate a list 1-5 if you like, or fix one under *Edit a list*: a corrected list is saved as a demonstration.

Keys: **1** left better, **2** right better, **3** tie, **4** both bad, **u** undo, **n** next pair.
"""
VOTE_BUTTONS = {"left": "⬅ Left is better [1]", "right": "Right is better ➡ [2]", "tie": "Tie [3]",
                "both_bad": "Both bad [4]"}
STRENGTH_LABELS = {label: level for level, label in STRENGTHS.items()}
# Keyboard shortcuts: click the matching button unless the user is typing in a field.
SHORTCUTS_JS = """
<script>
document.addEventListener("keydown", (e) => {
  const t = e.target; if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.isContentEditable)) return;
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const ids = {"1": "vote-left", "2": "vote-right", "3": "vote-tie", "4": "vote-both_bad", "u": "undo", "n": "next"};
  const button = ids[e.key] && document.getElementById(ids[e.key]);
  if (button) { e.preventDefault(); button.click(); }
});
</script>
"""


@dataclass(frozen=True)
class View:
    """What one browser tab is looking at."""
    pair: ShownPair | None = None
    previous: ShownPair | None = None  # restored by undo
    last_vote: str | None = None


def _failing(fn):
    """Bad input becomes a message in the UI (or an error for API clients); nothing changes."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as err:
            raise gr.Error(str(err), print_exception=False) from None
    return wrapped


def build_app(arena: Arena, default_annotator: str) -> gr.Blocks:
    # ---- API endpoints (stateless: ids in, ids out) ---------------------------------------------------------------
    @_failing
    def new_pair(request: str) -> tuple[str, str, str]:
        """A fresh pair for your request: (pair_id, left list, right list)."""
        shown = arena.custom_pair(request)
        return shown.pair_id, shown.left, shown.right

    @_failing
    def next_pair() -> tuple[str, str, str, str]:
        """The next ready pair from the prompt library: (pair_id, request, left list, right list)."""
        shown = arena.next_pair()
        return shown.pair_id, shown.prompt, shown.left, shown.right

    @_failing
    def vote(pair_id: str, choice: str, strength: int | None = None, annotator: str = "") -> str:
        """choice: left | right | tie | both_bad; strength 1-3 optional. Returns a confirmation with the sources."""
        return arena.vote(pair_id, choice, annotator or default_annotator, strength).message

    @_failing
    def vote_and_next(pair_id: str, choice: str, strength: int | None = None,
                      annotator: str = "") -> tuple[str, str, str, str, str]:
        """What a vote button does: vote, then the next library pair.
        Returns (confirmation with the vote counter, pair_id, request, left, right)."""
        receipt, shown = arena.vote_and_next(pair_id, choice, annotator or default_annotator, strength)
        return f"{receipt.message} {_counter(arena)}", shown.pair_id, shown.prompt, shown.left, shown.right

    @_failing
    def undo(vote_id: str, annotator: str = "") -> str:
        return f"Vote undone; pair {arena.undo(vote_id, annotator or default_annotator)} is open again."

    @_failing
    def rate(generation_id: str, stars: int, annotator: str = "") -> str:
        arena.rate(generation_id, stars, annotator or default_annotator)
        return f"Rated {stars}/5."

    @_failing
    def demonstrate(pair_id: str, side: str, text: str, annotator: str = "") -> str:
        """Save a corrected list for a pair's request; side (left | right | empty) is the list it was edited from."""
        arena.save_demonstration(pair_id, side or None, text, annotator or default_annotator)
        return "Demonstration saved."

    def status() -> dict:
        return {**arena.counts(), "ready_pairs": arena.queue.ready_count(), "queue_error": arena.queue.last_error}

    # ---- page handlers ----------------------------------------------------------------------------------------------
    def show(view: View, shown: ShownPair, message: str):
        return (replace(view, pair=shown), f"**Request:** {shown.prompt}", shown.left, shown.right,
                None, None, None, "", message + _counter(arena))

    @_failing
    def on_next(view: View):
        return show(view, arena.next_pair(), "")

    @_failing
    def on_request(view: View, request: str, progress=gr.Progress()):
        shown = arena.custom_pair(request, on_step=lambda s, n: progress(s / n, desc=f"Generating: {s}/{n} tokens"))
        return show(view, shown, "")

    def on_vote(choice: str):
        @_failing
        def handler(view: View, strength_label: str | None, annotator: str):
            if view.pair is None:
                raise InputError("No pair is shown yet: press 'Next pair'.")
            receipt, shown = arena.vote_and_next(view.pair.pair_id, choice, annotator or default_annotator,
                                                 STRENGTH_LABELS.get(strength_label))
            return show(View(previous=view.pair, last_vote=receipt.comparison_id), shown, receipt.message + " ")
        return handler

    @_failing
    def on_undo(view: View, annotator: str):
        if not view.last_vote or view.previous is None:
            raise InputError("Nothing to undo: no vote in this session since the last undo.")
        arena.undo(view.last_vote, annotator or default_annotator)
        return show(View(), view.previous, "Last vote undone: vote again. ")

    def on_rate(side: str):
        @_failing
        def handler(view: View, stars: int | None, annotator: str):
            if view.pair is None or stars is None:
                return gr.skip()
            arena.rate(getattr(view.pair, f"{side}_generation_id"), stars, annotator or default_annotator)
            return f"Rated the {side} list {stars}/5. " + _counter(arena)
        return handler

    @_failing
    def on_demonstrate(view: View, side: str | None, text: str, annotator: str):
        if view.pair is None:
            raise InputError("No pair is shown yet: press 'Next pair'.")
        arena.save_demonstration(view.pair.pair_id, side, text, annotator or default_annotator)
        return "Demonstration saved. " + _counter(arena)

    def on_pick_side(view: View, side: str | None):
        return getattr(view.pair, side) if view.pair and side else ""

    # ---- layout -------------------------------------------------------------------------------------------------
    with gr.Blocks(title="RLHF arena: top-5 lists") as app:
        view = gr.State(View())
        gr.Markdown("## Which top-5 list is better?")
        with gr.Row():
            request = gr.Textbox(label="Your own request", placeholder="Top 5 ideas for a Thanksgiving meal",
                                 scale=4, max_lines=2)
            ask = gr.Button("Generate for my request", scale=1)
            nxt = gr.Button("Next pair from the library [n]", elem_id="next", scale=1)
        prompt_md = gr.Markdown()
        with gr.Row(equal_height=True):
            with gr.Column():
                left_md = gr.Markdown(label="Left", container=True, min_height=220)
                left_stars = gr.Radio([1, 2, 3, 4, 5], label="Rate the left list", value=None)
            with gr.Column():
                right_md = gr.Markdown(label="Right", container=True, min_height=220)
                right_stars = gr.Radio([1, 2, 3, 4, 5], label="Rate the right list", value=None)
        with gr.Row():
            vote_buttons = {c: gr.Button(label, elem_id=f"vote-{c}", variant="primary" if c in ("left", "right")
                                         else "secondary") for c, label in VOTE_BUTTONS.items()}
        with gr.Row():
            strength = gr.Radio(list(STRENGTH_LABELS), label="How much better? (optional)", value=None, scale=3)
            undo_button = gr.Button("Undo last vote [u]", elem_id="undo", scale=1)
        status_md = gr.Markdown()
        with gr.Accordion("Edit a list into a good one (saved as a demonstration)", open=False):
            edit_side = gr.Radio(["left", "right"], label="Start from", value=None)
            edit_text = gr.Textbox(label="Your list", lines=7, placeholder="1. ...\n2. ...\n3. ...\n4. ...\n5. ...")
            save_demo = gr.Button("Save demonstration")
        with gr.Accordion("Guidelines", open=False):
            gr.Markdown(GUIDELINES)
            annotator = gr.Textbox(label="Annotator name", value=default_annotator, max_lines=1)

        pair_outputs = [view, prompt_md, left_md, right_md, left_stars, right_stars, strength, edit_text, status_md]
        private = {"api_visibility": "private"}
        app.load(on_next, [view], pair_outputs, **private)
        nxt.click(on_next, [view], pair_outputs, **private)
        ask.click(on_request, [view, request], pair_outputs, **private)
        request.submit(on_request, [view, request], pair_outputs, **private)
        for choice, button in vote_buttons.items():
            button.click(on_vote(choice), [view, strength, annotator], pair_outputs, **private)
        undo_button.click(on_undo, [view, annotator], pair_outputs, **private)
        left_stars.input(on_rate("left"), [view, left_stars, annotator], [status_md], **private)
        right_stars.input(on_rate("right"), [view, right_stars, annotator], [status_md], **private)
        edit_side.input(on_pick_side, [view, edit_side], [edit_text], **private)
        save_demo.click(on_demonstrate, [view, edit_side, edit_text, annotator], [status_md], **private)
        for fn in (new_pair, next_pair, vote, vote_and_next, undo, rate, demonstrate, status):
            gr.api(fn, api_name=fn.__name__)
    return app


def _counter(arena: Arena) -> str:
    counts = arena.counts()
    return (f"Votes: **{counts['votes']}** · ratings: {counts['ratings']} · "
            f"demonstrations: {counts['demonstrations']}")


def build_arena(args) -> Arena:
    from core.collect.generate import Generator
    from core.collect.library import load_prompts
    from core.model import load
    from core.store.database import Store

    generator = Generator(load(args.base_model, args.device))
    challenger = generator.add_adapter(args.challenger) if args.challenger else None
    return Arena(Store(args.db), generator, load_prompts(split="train"), challenger=challenger,
                 queue_size=args.queue_size).start()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m apps.arena", description="Vote on pairs of top-5 lists.")
    parser.add_argument("--base-model", help="HF model id or folder (default $RLHF_BASE_MODEL or the embedded model)")
    parser.add_argument("--challenger", help="a LoRA adapter folder: pairs become base vs this adapter")
    parser.add_argument("--db", help="DuckDB file (default $RLHF_DB or data/rlhf.duckdb)")
    parser.add_argument("--device", help="auto (default), cpu or cuda")
    parser.add_argument("--host", default=os.environ.get("ARENA_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("ARENA_PORT", 7860)))
    parser.add_argument("--annotator", default=os.environ.get("RLHF_ANNOTATOR") or getpass.getuser())
    parser.add_argument("--queue-size", type=int, default=2, help="pairs kept ready in the background")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    from core.records import ModelLoadError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        arena = build_arena(args)
    except ModelLoadError as err:
        raise SystemExit(f"error: {err}") from None
    build_app(arena, args.annotator).queue(default_concurrency_limit=1).launch(
        server_name=args.host, server_port=args.port, head=SHORTCUTS_JS, show_error=True)


if __name__ == "__main__":
    main()
