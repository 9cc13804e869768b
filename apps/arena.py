"""The arena: vote on pairs of top-5 lists in the browser. Every event goes to DuckDB through core.

    python -m apps.arena [--base-model M] [--pairing A,B | --challenger RUN] [--round NAME] [--db PATH]
                         [--host 127.0.0.1] [--port 7860] [--sampling random|uncertain] [--repeat-rate 0.05]
                         [--candidates 4] [--reward-model RUN] [--engine auto|llamacpp|int8|plain] [--focus even|weak]

--pairing, --round, --sampling, --repeat-rate and --focus, when given, are written to the database at start; the
dashboard's Arena page changes them later and the arena follows, so the latest change wins (core/collect/chooser.py,
focus.py). A new pairing's adapters load in the background; the pairs it had ready for the old one are dropped.

Named API endpoints for gradio_client (README lists them): new_pair, next_pair, vote, vote_and_next, undo, rate,
demonstrate, status. The page's own events are private; each handler below is a few lines over core.collect.arena.Arena.
Requests and lists are shown in read-only text boxes: what a person or a model wrote is text, never Markdown or HTML.
"""
from __future__ import annotations

import argparse
import functools
import getpass
import html
import logging
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr

from core.access import arena_login, bind_warning
from core.collect.arena import Arena, ShownPair, parse_stars
from core.collect.chooser import (
    BASE,
    SAMPLINGS,
    RewardWatcher,
    save_pairing,
    save_settings,
)
from core.collect.focus import FOCUSES, save_focus
from core.engine import ENGINES
from core.records import STRENGTHS, USER_ERRORS, InputError, ModelLoadError
from core.runs import adapter_dir, newest_finished_run, read_adapter_config
from core.stages import REWARD_MADE_BY
from core.train.best import check_policy

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
# Keyboard shortcuts: click the matching button unless the user is typing in a field (the read-only request and
# lists are disabled textareas: keys pressed after clicking one still vote).
SHORTCUTS_JS = """
<script>
document.addEventListener("keydown", (e) => {
  const t = e.target, field = t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA");
  if (t && ((field && !t.disabled && !t.readOnly) || t.isContentEditable)) return;
  if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;  // a held key votes once, not on the next pair too
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


def _api(fn):
    """Bad input raises gr.Error, which gradio_client turns into an exception carrying the message; nothing changes."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as err:
            raise gr.Error(str(err), print_exception=False) from None
    return wrapped


def _page(status_box: gr.Textbox):
    """Bad input on the page: one warning and the message in the status line; every other output is left as it was
    (raising would mark every output with an error badge)."""
    def decorate(fn):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except USER_ERRORS as err:
                gr.Warning(html.escape(str(err)))  # a toast renders HTML, and a message may quote what was typed
                return {status_box: str(err)}
        return wrapped
    return decorate


def build_app(arena: Arena, default_annotator: str) -> gr.Blocks:
    # ---- API endpoints (stateless: ids in, ids out) ---------------------------------------------------------------
    @_api
    def new_pair(request: str) -> tuple[str, str, str, str, str]:
        """A fresh pair for your request: (pair_id, left list, right list, left_generation_id, right_generation_id)."""
        shown = arena.custom_pair(request)
        return shown.pair_id, shown.left, shown.right, shown.left_generation_id, shown.right_generation_id

    @_api
    def next_pair(annotator: str = "") -> tuple[str, str, str, str, str, str]:
        """The next ready library pair: (pair_id, request, left, right, left_generation_id, right_generation_id).
        annotator (optional): who will vote on it."""
        return _pair_fields(arena.next_pair(annotator or None))

    @_api
    def vote(pair_id: str, choice: str, strength: int | None = None, annotator: str = "") -> tuple[str, str]:
        """choice: left | right | tie | both_bad; strength 1-3 or None. Returns (confirmation naming the sources,
        vote_id for /undo)."""
        receipt = arena.vote(pair_id, choice, annotator or default_annotator, strength)
        return receipt.message, receipt.comparison_id

    @_api
    def vote_and_next(pair_id: str, choice: str, strength: int | None = None,
                      annotator: str = "") -> tuple[str, str, str, str, str, str, str, str]:
        """What a vote button does: vote, then the next library pair. Returns (confirmation with the vote counter,
        vote_id, then the next pair as /next_pair returns it)."""
        receipt, shown = arena.vote_and_next(pair_id, choice, annotator or default_annotator, strength)
        return f"{receipt.message} {_counter(arena)}", receipt.comparison_id, *_pair_fields(shown)

    @_api
    def undo(vote_id: str, annotator: str = "") -> str:
        return f"Vote undone; pair {arena.undo(vote_id, annotator or default_annotator)} is open again."

    @_api
    def rate(generation_id: str, stars: int, annotator: str = "") -> str:
        """stars: a whole number 1-5."""
        stars = parse_stars(stars)
        arena.rate(generation_id, stars, annotator or default_annotator)
        return f"Rated {stars}/5."

    @_api
    def demonstrate(pair_id: str, side: str, text: str, annotator: str = "") -> str:
        """Save a corrected list for a pair's request; side (left | right | empty) is the list it was edited from."""
        arena.save_demonstration(pair_id, side or None, text, annotator or default_annotator)
        return "Demonstration saved."

    def status() -> dict:
        return {**arena.counts(), "ready_pairs": arena.queue.ready_count(), "queue_error": arena.queue.last_error}

    # ---- page handlers (bad input raises InputError; _page turns it into a warning) ----------------------------------
    def show(view: View, shown: ShownPair, message: str):  # stars, strength and the edit start afresh
        return (replace(view, pair=shown), shown.prompt, shown.left, shown.right,
                None, None, None, None, "", message + _counter(arena))

    def seen(view: View, left: str, right: str) -> ShownPair:
        """The pair the person saw when they clicked: a click queued behind a vote reaches the server after the
        next pair replaced it in the session, so the lists the page sent must still be the session's."""
        if view.pair is None:
            raise InputError("No pair is shown yet: press 'Next pair'.")
        if (left, right) != (view.pair.left, view.pair.right):
            raise InputError("The pair changed before this click arrived, so nothing was saved: look at the pair "
                             "shown now and choose again.")
        return view.pair

    def on_next(view: View):  # a skip, not a vote: never a repeat (those follow votes, in on_vote)
        return show(view, arena.next_pair(), "")

    def on_request(view: View, request: str, progress=gr.Progress()):
        shown = arena.custom_pair(request, on_step=lambda s, n: progress(s / n, desc=f"Generating: {s}/{n} tokens"))
        return show(view, shown, "")

    def on_vote(choice: str):
        def handler(view: View, left: str, right: str, strength_label: str | None, annotator: str):
            pair = seen(view, left, right)
            receipt = arena.vote(pair.pair_id, choice, annotator or default_annotator,
                                 STRENGTH_LABELS.get(strength_label))
            voted = View(previous=pair, last_vote=receipt.comparison_id)
            try:
                shown = arena.next_pair(annotator or default_annotator)
            except Exception as err:  # the vote is stored: say so, and keep undo working
                log.exception("no next pair after a vote")
                return {view_state: voted, status_box: f"{receipt.message} No next pair yet ({err}): press 'Next "
                                                       "pair'."}
            return show(voted, shown, receipt.message + " ")
        handler.__name__ = f"on_vote_{choice}"
        return handler

    def on_undo(view: View, annotator: str):
        if not view.last_vote or view.previous is None:
            raise InputError("Nothing to undo: no vote in this session since the last undo.")
        arena.undo(view.last_vote, annotator or default_annotator)
        return show(View(), view.previous, "Last vote undone: vote again. ")

    def on_rate(side: str):
        def handler(view: View, left: str, right: str, stars: int | None, annotator: str):
            if stars is None:
                return gr.skip()
            arena.rate(getattr(seen(view, left, right), f"{side}_generation_id"), stars, annotator or default_annotator)
            return f"Rated the {side} list {stars}/5. " + _counter(arena)
        handler.__name__ = f"on_rate_{side}"
        return handler

    def on_demonstrate(view: View, left: str, right: str, side: str | None, text: str, annotator: str):
        arena.save_demonstration(seen(view, left, right).pair_id, side, text, annotator or default_annotator)
        return "Demonstration saved. " + _counter(arena)

    def on_pick_side(view: View, side: str | None):
        return getattr(view.pair, side) if view.pair and side else ""

    # ---- layout: what a person or a model wrote sits in read-only text boxes, never Markdown ------------------------
    shown_text = {"interactive": False, "autoscroll": False, "buttons": ["copy"]}
    with gr.Blocks(title="RLHF arena: top-5 lists") as app:
        view = view_state = gr.State(View())
        gr.Markdown("## Which top-5 list is better?")
        with gr.Row():
            request = gr.Textbox(label="Your own request", placeholder="Top 5 ideas for a Thanksgiving meal",
                                 scale=4, max_lines=2, elem_id="request")
            ask = gr.Button("Generate for my request", scale=1, elem_id="ask")
            nxt = gr.Button("Next pair from the library [n]", elem_id="next", scale=1)
        prompt_box = gr.Textbox(label="Request", max_lines=3, key="shown_request", elem_id="shown-request",
                                **shown_text)
        with gr.Row(equal_height=True):
            with gr.Column():
                left_box = gr.Textbox(label="Left", lines=8, max_lines=20, key="left_list", elem_id="left-list",
                                      **shown_text)
                left_stars = gr.Radio([1, 2, 3, 4, 5], label="Rate the left list", value=None)
            with gr.Column():
                right_box = gr.Textbox(label="Right", lines=8, max_lines=20, key="right_list", elem_id="right-list",
                                       **shown_text)
                right_stars = gr.Radio([1, 2, 3, 4, 5], label="Rate the right list", value=None)
        with gr.Row():
            vote_buttons = {c: gr.Button(label, elem_id=f"vote-{c}", variant="primary" if c in ("left", "right")
                                         else "secondary") for c, label in VOTE_BUTTONS.items()}
        with gr.Row():
            strength = gr.Radio(list(STRENGTH_LABELS), label="How much better? (optional)", value=None, scale=3)
            undo_button = gr.Button("Undo last vote [u]", elem_id="undo", scale=1)
        status_box = gr.Textbox(show_label=False, container=False, max_lines=3, key="status", interactive=False,
                                elem_id="status")
        with gr.Accordion("Edit a list into a good one (saved as a demonstration)", open=False):
            edit_side = gr.Radio(["left", "right"], label="Start from", value=None, elem_id="edit-side")
            edit_text = gr.Textbox(label="Your list", lines=7, placeholder="1. ...\n2. ...\n3. ...\n4. ...\n5. ...",
                                   elem_id="edit-text")
            save_demo = gr.Button("Save demonstration", elem_id="save-demo")
        with gr.Accordion("Guidelines", open=False):
            gr.Markdown(GUIDELINES)
            annotator = gr.Textbox(label="Annotator name", value=default_annotator, max_lines=1)

        page = _page(status_box)
        pair_outputs = [view, prompt_box, left_box, right_box, left_stars, right_stars, strength, edit_side, edit_text,
                        status_box]
        private = {"api_visibility": "private"}
        app.load(page(on_next), [view], pair_outputs, **private)
        nxt.click(page(on_next), [view], pair_outputs, **private)
        ask.click(page(on_request), [view, request], pair_outputs, **private)
        request.submit(page(on_request), [view, request], pair_outputs, **private)
        for choice, button in vote_buttons.items():
            button.click(page(on_vote(choice)), [view, left_box, right_box, strength, annotator], pair_outputs,
                         **private)
        undo_button.click(page(on_undo), [view, annotator], pair_outputs, **private)
        left_stars.input(page(on_rate("left")), [view, left_box, right_box, left_stars, annotator], [status_box],
                         **private)
        right_stars.input(page(on_rate("right")), [view, left_box, right_box, right_stars, annotator], [status_box],
                          **private)
        edit_side.input(on_pick_side, [view, edit_side], [edit_text], **private)
        save_demo.click(page(on_demonstrate), [view, left_box, right_box, edit_side, edit_text, annotator],
                        [status_box], **private)
        for fn in (new_pair, next_pair, vote, vote_and_next, undo, rate, demonstrate, status):
            gr.api(fn, api_name=fn.__name__)
    return app


def _pair_fields(shown: ShownPair) -> tuple[str, str, str, str, str, str]:
    return (shown.pair_id, shown.prompt, shown.left, shown.right, shown.left_generation_id,
            shown.right_generation_id)


def _counter(arena: Arena) -> str:
    counts = arena.counts()
    return f"Votes: {counts['votes']} · ratings: {counts['ratings']} · demonstrations: {counts['demonstrations']}"


def build_arena(args) -> Arena:
    from core.collect.generate import Generator
    from core.collect.library import load_prompts
    from core.model import load
    from core.store.database import Store

    def load_scorer(path: Path):
        # lazy: TRL and PEFT take seconds to import, and only uncertain choice needs them
        from core.train.reward_model import RewardScorer

        return RewardScorer.from_folder(path, args.device)

    store = Store(args.db)
    save_settings(store, args.sampling, args.repeat_rate)  # checked before the model loads
    save_focus(store, args.focus)
    pairing = flag_pairing(args)  # run folders or adapter folders; checked before the model loads
    save_pairing(store, pairing, args.round)
    find_reward = reward_run_finder(args.reward_model)  # checked before the model loads
    generator = Generator(load(args.base_model, args.device, args.engine))

    def load_policy(side: str):  # a stored pairing's side, checked again: the run may have gone since it was stored
        return generator.base_policy if side == BASE else generator.add_adapter(str(adapter_dir(check_policy(side))))

    arena = Arena(store, generator, load_prompts(split="train"), queue_size=args.queue_size,
                  reward=RewardWatcher(find_reward, load_scorer, store), candidates=args.candidates,
                  load_policy=load_policy)  # loads the stored pairing now, before the first pair
    arena.reward.say()  # nothing loaded yet: a previous arena's reward model is not shown as this one's
    if pairing and arena.pairing.error:  # the pairing typed at start would not load: say so instead of serving base
        raise ModelLoadError(f"could not load --pairing {','.join(pairing)}: {arena.pairing.error}")
    return arena.start()


def reward_run_finder(reward_model: str | None):
    """Where uncertain choice finds its reward model: the run --reward-model names (checked now), else the newest
    finished reward run, looked up again before each pair so a newer one is picked up live."""
    if not reward_model:
        return functools.partial(newest_finished_run, "reward")
    read_adapter_config(reward_model, "SEQ_CLS", REWARD_MADE_BY)  # ModelLoadError: one line
    fixed = Path(reward_model).expanduser().absolute()
    return lambda: fixed


def flag_pairing(args) -> tuple[str, str] | None:
    """The pairing the flags ask for (--challenger X is --pairing base,X), checked; None: as stored."""
    if args.pairing and args.challenger:
        raise InputError("pass --pairing A,B or --challenger RUN, not both (--challenger RUN is --pairing base,RUN).")
    if args.challenger:
        sides = [BASE, args.challenger]
    elif args.pairing:
        sides = args.pairing.split(",")
    else:
        return None
    sides = [side.strip() for side in sides]  # "base, models/runs/x": the space is not part of the folder
    if len(sides) != 2 or not all(sides):
        raise InputError(f"--pairing takes two policies, each base or a run folder: A,B, not {args.pairing!r}.")
    return check_policy(sides[0]), check_policy(sides[1])


def arena_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m apps.arena", description="Vote on pairs of top-5 lists.")
    parser.add_argument("--base-model", help="HF model id or folder (default $RLHF_BASE_MODEL or the embedded model)")
    parser.add_argument("--pairing", help="the two policies to pair, A,B: each base or a finished SFT, PPO, DPO or "
                        "RLOO run folder (default: as stored; the dashboard's Arena page switches it live)")
    parser.add_argument("--challenger", help="a run or LoRA adapter folder: the same as --pairing base,CHALLENGER")
    parser.add_argument("--round", help="the name of the round of collection every pair records (default: as stored)")
    parser.add_argument("--db", help="DuckDB file (default $RLHF_DB or data/rlhf.duckdb)")
    parser.add_argument("--device", help="auto (default), cpu or cuda")
    parser.add_argument("--engine", choices=ENGINES, default="auto", help="sampling engine: auto (default: llama.cpp, "
                        "else int8, on a CPU; plain on a GPU), llamacpp, int8, or plain (fp32: core/engine.py)")
    parser.add_argument("--host", default=os.environ.get("ARENA_HOST", "127.0.0.1"))
    # a string default goes through type=int too: a bad ARENA_PORT gets argparse's one line, not a traceback
    parser.add_argument("--port", type=int, default=os.environ.get("ARENA_PORT", "7860"))
    parser.add_argument("--annotator", default=os.environ.get("RLHF_ANNOTATOR") or getpass.getuser())
    parser.add_argument("--queue-size", type=int, default=2, help="pairs kept ready in the background (0: none, "
                        "and no upkeep: the pairing stays as started, uncertain choice and focus weak stay off)")
    parser.add_argument("--sampling", choices=SAMPLINGS, help="how library pairs are chosen: random, or the newest "
                        "finished reward model's most uncertain of --candidates samples (default: as stored, random)")
    parser.add_argument("--repeat-rate", type=float, help="share of the pairs after a vote that show the voter one of "
                        "their own voted pairs again, sides swapped, unannounced (default: as stored, 0.05)")
    parser.add_argument("--focus", choices=FOCUSES, help="which library requests come next: even, or weak: more where "
                        "the challenger loses (core/collect/focus.py) (default: as stored, even)")
    parser.add_argument("--candidates", type=int, default=4, help="samples per library request in uncertain choice")
    parser.add_argument("--reward-model", help="the reward run uncertain choice scores with, kept for the arena's "
                        "life (default: the newest finished one, followed as new ones finish)")
    return parser


def parse_args(argv=None):
    return arena_parser().parse_args(argv)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        arena = build_arena(args)
    except USER_ERRORS as err:  # a model that will not load, a bad setting: one line saying what to change
        raise SystemExit(f"error: {err}") from None
    if warning := bind_warning(args.host, "arena"):
        print(warning, file=sys.stderr)
    build_app(arena, args.annotator).queue(default_concurrency_limit=1).launch(
        server_name=args.host, server_port=args.port, head=SHORTCUTS_JS, show_error=True, auth=arena_login(),
        auth_message="This arena is protected by RLHF_PASSWORD: any name, and that password.")


if __name__ == "__main__":
    main()
