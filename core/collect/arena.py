"""The arena's logic: serve pairs of top-5 lists, take votes, ratings and edits, reveal sources after a vote.

apps/arena.py is only a face on this class; everything here is testable without a browser.
"""
from __future__ import annotations

import random
import time
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass

from core.collect.generate import Generator
from core.collect.library import PromptCycle, by_text, load_prompts, text_key
from core.collect.pair_queue import PairQueue
from core.lists import format_list, parse_list
from core.records import (
    CHOICES,
    STRENGTHS,
    InputError,
    Pair,
    Policy,
    Prompt,
    SamplingSettings,
)
from core.store.database import Store

MAX_REQUEST_CHARS = 300
MAX_LIST_CHARS = 3000
_REMEMBERED_PAIRS = 1000  # shown pairs kept in memory for decision time and the reveal


@dataclass(frozen=True)
class ShownPair:
    pair_id: str
    prompt: str
    left: str
    right: str
    left_generation_id: str
    right_generation_id: str


@dataclass(frozen=True)
class VoteReceipt:
    comparison_id: str
    pair_id: str
    choice: str
    left_policy: str
    right_policy: str

    @property
    def message(self) -> str:
        said = {"left": "left is better", "right": "right is better", "tie": "a tie", "both_bad": "both bad"}
        return f"Saved: {said[self.choice]}. Left was {self.left_policy}, right was {self.right_policy}."


def clean_text(text: object, what: str, max_chars: int) -> str:
    """Stripped text without format characters (zero-width spaces, BOM: category Cf), or InputError saying why it
    is refused: not text, empty, too long, or holding control characters."""
    if not isinstance(text, str):
        raise InputError(f"The {what} must be text, not {type(text).__name__}.")
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf").strip()
    if not text:
        raise InputError(f"The {what} is empty: type something first.")
    if len(text) > max_chars:
        raise InputError(f"The {what} is {len(text)} characters long; keep it under {max_chars}.")
    if any(unicodedata.category(ch) == "Cc" and ch not in "\n\t" for ch in text):
        raise InputError(f"The {what} contains control characters; remove them and try again.")
    return text


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True is an int to Python, not to a voter


def parse_choice(choice: object, strength: object = None) -> tuple[str, int | None]:
    """(choice, strength) as stored; strength is 1, 2, 3 or None, never coerced (0, 2.7, True and "2" are refused)."""
    if choice not in CHOICES:
        raise InputError(f"A vote is one of {', '.join(CHOICES)}, not {choice!r}.")
    if strength is None:
        return choice, None
    if not _is_int(strength) or strength not in STRENGTHS:
        levels = ", ".join(f"{level} ({label})" for level, label in STRENGTHS.items())
        raise InputError(f"Strength is one of {levels} or None for no strength, not {strength!r}.")
    if choice in ("tie", "both_bad"):
        raise InputError("Strength only applies when one list is better; leave it empty for a tie or both bad.")
    return choice, strength


def parse_stars(stars: object) -> int:
    """A rating as stored: a whole number of stars 1 to 5 (digits in a string are fine; 3.7 and True are not)."""
    if isinstance(stars, str) and stars.strip().isdecimal():
        stars = int(stars)
    if not _is_int(stars) or not 1 <= stars <= 5:
        raise InputError(f"A rating is 1 to 5 whole stars, not {stars!r}.")
    return stars


class Arena:
    """Pairs from `base` and `challenger` (the base again by default), sides shuffled on every pair.

    `library` is what the queue serves; `known` is every library prompt of any split (default data/prompts.jsonl):
    a typed request with one of their texts becomes that prompt, so a held-out request stays held out.
    """

    def __init__(self, store: Store, generator: Generator, library: list[Prompt], challenger: Policy | None = None,
                 sampling: SamplingSettings = SamplingSettings(), queue_size: int = 2, seed: int | None = None,
                 known: list[Prompt] | None = None):
        self.store, self.generator, self.sampling = store, generator, sampling
        self._known = by_text([*(load_prompts() if known is None else known), *library])
        self.policies = (generator.base_policy, challenger or generator.base_policy)
        self._rng = random.Random(seed)
        self._cycle = PromptCycle(library, seed)
        self._shown: OrderedDict[str, tuple[Pair, float]] = OrderedDict()
        self.queue = PairQueue(lambda should_stop: self._make_pair(self._cycle.next(), should_stop=should_stop),
                               size=queue_size)

    def start(self) -> "Arena":
        self.queue.start()
        return self

    def stop(self) -> None:
        self.queue.stop()

    # ---- pairs --------------------------------------------------------------------------------------------------
    def next_pair(self) -> ShownPair:
        """The next library pair: from the ready queue, or generated now if the queue is empty."""
        pair = self.queue.take_ready() or self.queue.run_foreground(lambda: self._make_pair(self._cycle.next()))
        return self._show(pair)

    def custom_pair(self, request: object, on_step=None) -> ShownPair:
        """A pair for the user's own request, generated now (`on_step(step, max_steps)` reports progress)."""
        text = clean_text(request, "request", MAX_REQUEST_CHARS)
        prompt = self._known.get(text_key(text)) or Prompt(text)
        return self._show(self.queue.run_foreground(lambda: self._make_pair(prompt, on_step=on_step)))

    def _make_pair(self, prompt: Prompt, should_stop=None, on_step=None) -> Pair:
        policies = list(self.policies)
        self._rng.shuffle(policies)  # which policy lands on the left is random, and hidden until the vote
        seed = self._rng.randrange(2**31)
        left, right = self.generator.generate(prompt, policies, self.sampling, seed, on_step=on_step,
                                              should_stop=should_stop)
        return Pair(prompt=prompt, left=left, right=right)

    def _show(self, pair: Pair) -> ShownPair:
        self.store.record_pair(pair)
        self._shown[pair.pair_id] = (pair, time.monotonic())
        while len(self._shown) > _REMEMBERED_PAIRS:
            self._shown.popitem(last=False)
        return ShownPair(pair.pair_id, pair.prompt.text, pair.left.text, pair.right.text,
                         pair.left.generation_id, pair.right.generation_id)

    # ---- feedback -----------------------------------------------------------------------------------------------
    def vote(self, pair_id: object, choice: object, annotator: str, strength: object = None) -> VoteReceipt:
        choice, strength = parse_choice(choice, strength)
        pair_id = clean_text(pair_id, "pair id", 64)
        shown = self._shown.get(pair_id)
        decision_ms = int((time.monotonic() - shown[1]) * 1000) if shown else None
        comparison_id = self.store.record_vote(pair_id, choice, annotator, strength, decision_ms)
        if shown:
            left_policy, right_policy = shown[0].left.policy.name, shown[0].right.policy.name
        else:
            left_policy, right_policy = self.store.pair_policies(pair_id)
        return VoteReceipt(comparison_id, pair_id, choice, left_policy, right_policy)

    def vote_and_next(self, pair_id: object, choice: object, annotator: str,
                      strength: object = None) -> tuple[VoteReceipt, ShownPair]:
        """What a vote button does: store the vote, then show the next library pair."""
        return self.vote(pair_id, choice, annotator, strength), self.next_pair()

    def undo(self, comparison_id: object, annotator: str) -> str:
        """Retract a vote; returns the pair id, which can be voted on again."""
        return self.store.retract_vote(clean_text(comparison_id, "vote id", 64), annotator)

    def rate(self, generation_id: object, stars: object, annotator: str) -> str:
        stars = parse_stars(stars)
        return self.store.record_rating(clean_text(generation_id, "generation id", 64), stars, annotator)

    def save_demonstration(self, pair_id: object, side: str | None, text: object, annotator: str) -> str:
        """Save a list the user wrote or corrected for this pair's prompt, linked to the side it was edited from."""
        pair_id = clean_text(pair_id, "pair id", 64)
        text = clean_text(text, "list", MAX_LIST_CHARS)
        shown = self._shown.get(pair_id)
        if not shown:
            raise InputError("That pair is no longer open here: ask for a new pair, then edit one of its lists.")
        pair = shown[0]
        if side not in (None, "left", "right"):
            raise InputError(f"side is left, right or empty, not {side!r}")
        parsed = parse_list(text)
        if not parsed.well_formed:  # SFT imitates demonstrations, so only good lists are kept
            raise InputError(f"A demonstration must be a good top-5 list: it {'; '.join(parsed.problems)}. "
                             "Write five items numbered 1. to 5., one per line, and save again.")
        text = format_list(parsed.items)
        edited_from = None if side is None else getattr(pair, side).generation_id
        return self.store.record_demonstration(pair.prompt, text, annotator, edited_from_generation_id=edited_from)

    def counts(self, annotator: str | None = None) -> dict[str, int]:
        return self.store.counts(annotator)
