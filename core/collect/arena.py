"""The arena's logic: serve pairs of top-5 lists, take votes, ratings and edits, reveal sources after a vote.

apps/arena.py is only a face on this class; everything here is testable without a browser. Which library pair comes
next (random, the reward model's most uncertain, or an unannounced repeat) is core/collect/chooser.py's, and so is
which two policies it pairs (the stored pairing, switched live by `PairingWatcher`) and the round each pair records;
which library request comes next (every category evenly, or more where the challenger is weak) is
core/collect/focus.py's.
"""
from __future__ import annotations

import logging
import random
import time
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Callable

from core.collect.chooser import (
    PairingWatcher,
    RewardWatcher,
    Scorer,
    most_uncertain_pair,
    read_repeat_rate,
    read_sampling,
    repeat_due,
    repeatable,
    swapped_repeat,
)
from core.collect.focus import CategoryCycle, focus_weights, read_focus, weak_spots
from core.collect.generate import Generator
from core.collect.library import by_text, load_prompts, text_key
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
REPEAT_GAP = 3  # a repeat is never of one of the annotator's 3 latest votes: it must not come straight back
FOCUS_REFRESH_S = 20.0  # focus "weak" reads the challenger's votes again at most this often (a query over every vote)

log = logging.getLogger(__name__)


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
    """Pairs of two policies, sides shuffled on every pair: base and `challenger` (the base again by default), or,
    given `load_policy`, whichever two the stored pairing names, switched without a restart by `self.pairing` in the
    queue's thread (before each background pair and while the queue is full; the old pairing's ready pairs are
    dropped). Each pair records the stored round it is shown in.

    `library` is what the queue serves; `known` is every library prompt of any split (default data/prompts.jsonl):
    a typed request with one of their texts becomes that prompt, so a held-out request stays held out.
    `reward` is the reward model that "uncertain" choice scores `candidates` samples with (chooser.py); without one,
    library pairs are random whatever the setting says. `load_policy(side)` turns a stored pairing's side ("base" or a
    run folder) into a loaded Policy (the app's, see apps/arena.py); without it the two policies stay fixed.
    """

    def __init__(self, store: Store, generator: Generator, library: list[Prompt], challenger: Policy | None = None,
                 sampling: SamplingSettings = SamplingSettings(), queue_size: int = 2, seed: int | None = None,
                 known: list[Prompt] | None = None, reward: RewardWatcher | None = None, candidates: int = 4,
                 repeat_gap: int = REPEAT_GAP, load_policy: Callable[[str], Policy] | None = None):
        if candidates < 2:
            raise InputError(f"uncertain choice picks two of `candidates` samples: pass 2 or more, not {candidates}")
        self.store, self.generator, self.sampling = store, generator, sampling
        self.reward, self.candidates, self.repeat_gap = reward, candidates, repeat_gap
        self._known = by_text([*(load_prompts() if known is None else known), *library])
        self.pairing = PairingWatcher(store, load_policy, (generator.base_policy, challenger or generator.base_policy))
        self._rng = random.Random(seed)
        self._cycle, self._served = CategoryCycle(library, seed), by_text(library)
        self._focus: dict[str, float] | None = None  # each category's share of the next requests; None: even
        self._focus_read: tuple[str, float] = ("", -FOCUS_REFRESH_S)  # (challenger, monotonic time) it was read for
        self._shown: OrderedDict[str, tuple[Pair, float]] = OrderedDict()
        self.queue = PairQueue(self._library_pair, size=queue_size, prepare=self._prepare_background)
        self.pairing.refresh()  # the stored pairing and round, loaded before the first pair (the caller's thread)

    @property
    def policies(self) -> tuple[Policy, Policy]:
        return self.pairing.policies

    def start(self) -> "Arena":
        self.queue.start()
        return self

    def stop(self) -> None:
        self.queue.stop()

    # ---- pairs --------------------------------------------------------------------------------------------------
    def next_pair(self, annotator: str | None = None) -> ShownPair:
        """The next library pair: from the ready queue, or generated now if the queue is empty. For a named
        annotator it is now and then (the repeat rate) one of their own voted pairs again, sides swapped."""
        pair = self._repeat_for(annotator) if annotator else None
        return self._show(pair or self.queue.take_ready() or self.queue.run_foreground(self._library_pair))

    def custom_pair(self, request: object, on_step=None) -> ShownPair:
        """A pair for the user's own request, generated now (`on_step(step, max_steps)` reports progress)."""
        text = clean_text(request, "request", MAX_REQUEST_CHARS)
        prompt = self._known.get(text_key(text)) or Prompt(text)
        return self._show(self.queue.run_foreground(lambda: self._make_pair(prompt, on_step=on_step)))

    def _prepare_background(self) -> None:
        """Before each background pair and while the queue is full (outside the generation lock): follow the stored
        pairing (its adapters load here; the ready pairs of the old one are dropped) and round, and pick up a newer
        finished reward model."""
        self.pairing.refresh(before_switch=self._drop_ready)
        if self.reward and read_sampling(self.store) == "uncertain":
            self.reward.refresh()
        self._refresh_focus()

    def _refresh_focus(self) -> None:
        """Focus "weak": each category's share of the next library requests from the challenger's votes, read
        again after FOCUS_REFRESH_S or when the challenger changes; "even": none."""
        if read_focus(self.store) != "weak":
            self._focus = None
            return
        challenger, now = self.policies[1].name, time.monotonic()
        if self._focus is not None and self._focus_read[0] == challenger and \
                now - self._focus_read[1] < FOCUS_REFRESH_S:
            return
        spots = weak_spots(self.store.votes_with(challenger), challenger, self._cycle.categories)
        self._focus, self._focus_read = focus_weights(spots), (challenger, now)

    def _drop_ready(self) -> None:
        if dropped := self.queue.drop_ready():
            log.info("dropped %d ready pair(s) of the old pairing", dropped)

    def _library_pair(self, should_stop=None) -> Pair:
        """A pair for the next library request, chosen as the stored setting says. A foreground pair (empty queue)
        uses the reward model already loaded, never loads one."""
        prompt = self._cycle.next(self._focus)
        scorer = self.reward.scorer if self.reward and read_sampling(self.store) == "uncertain" else None
        if scorer is None:  # random, or no reward model has finished yet
            return self._make_pair(prompt, should_stop=should_stop)
        return self._uncertain_pair(prompt, scorer, should_stop)

    def _uncertain_pair(self, prompt: Prompt, scorer: Scorer, should_stop=None) -> Pair:
        """The closest call among `candidates` samples, by the reward model (chooser.py, steps 1-3)."""
        # 1. sample the candidates in one batch, the two policies taking turns
        served = self.policies  # read once: a switch in the background thread must not mix two pairings
        policies = [served[k % 2] for k in range(self.candidates)]
        samples = self.generator.generate(prompt, policies, self.sampling, self._rng.randrange(2**31),
                                          should_stop=should_stop)
        # 2. score them
        try:
            scores = scorer.score([prompt.text] * len(samples), [g.text for g in samples])
        except Exception:  # a reward model that cannot score must not stop the arena: this pair is random
            log.exception("the reward model could not score the candidates; serving a random pair")
            return Pair(prompt, *self._rng.sample(samples[:2], 2))
        # 3. the pair with P(left) closest to 0.5: two different texts, base vs challenger when there is one
        mixed = served[0] != served[1]

        def allowed(i: int, j: int) -> bool:
            return (policies[i] != policies[j] or not mixed) and samples[i].text != samples[j].text

        try:
            i, j, p_left = most_uncertain_pair(scores, allowed)
        except ValueError:  # every candidate alike: nothing to choose between
            return Pair(prompt, *self._rng.sample(samples[:2], 2))
        if self._rng.random() < 0.5:  # which one lands on the left is random, as in every pair
            i, j, p_left = j, i, 1.0 - p_left
        return Pair(prompt, samples[i], samples[j], chosen_by="uncertain", predicted_p_left=p_left)

    def _repeat_for(self, annotator: str) -> Pair | None:
        """At the stored repeat rate, one of the annotator's voted pairs again with sides swapped (chooser.py), but
        never one of their `repeat_gap` latest; None when it is not time or there is none."""
        if not repeat_due(self._rng, read_repeat_rate(self.store)):
            return None
        policies = {policy.name: policy for policy in self.policies}
        votes = repeatable(self.store.repeat_candidates(annotator), self._served, policies).iloc[self.repeat_gap:]
        if votes.empty:
            return None
        vote = votes.iloc[self._rng.randrange(len(votes))]
        return swapped_repeat(vote, self._served[text_key(vote.prompt)], policies)

    def _make_pair(self, prompt: Prompt, should_stop=None, on_step=None) -> Pair:
        policies = list(self.policies)
        self._rng.shuffle(policies)  # which policy lands on the left is random, and hidden until the vote
        seed = self._rng.randrange(2**31)
        left, right = self.generator.generate(prompt, policies, self.sampling, seed, on_step=on_step,
                                              should_stop=should_stop)
        return Pair(prompt=prompt, left=left, right=right)

    def _show(self, pair: Pair) -> ShownPair:
        pair = replace(pair, round=self.pairing.round)  # the round it is shown in, whenever it was generated
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
        """What a vote button does: store the vote, then show the annotator's next library pair."""
        return self.vote(pair_id, choice, annotator, strength), self.next_pair(annotator)

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
