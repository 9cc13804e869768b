"""Demo mode: the base model and a tuned policy answer one request side by side, for showing the result to others.

Both lists come from one batched, seeded `generate` (PEFT routes each row through its own adapter), so they differ
only by the policy. Each list gets its well-formed check and, when a reward model is chosen, its score. In blind
mode the sides are shuffled and the labels hidden until the viewer votes; the pair and the vote are stored like any
arena comparison (pair source "demo"), so they count towards the human win rate of tuned vs base shown on the page.
This is the one place the dashboard loads a model: to generate for a live audience, never to train.
"""
from __future__ import annotations

import random
import threading
from dataclasses import dataclass

import pandas as pd

from core.collect.arena import MAX_REQUEST_CHARS, clean_text, parse_choice
from core.collect.generate import Generator
from core.collect.library import by_text, load_prompts, text_key
from core.model import load, resolve_base_model
from core.records import Pair, Policy, Prompt, SamplingSettings
from core.runs import adapter_config, adapter_dir
from core.store.database import Store
from core.win_rate import WinRate, win_rate


@dataclass
class DemoPair:
    pair: Pair
    tuned_side: str  # "left" or "right"
    scores: tuple[float, float] | None  # reward-model scores (left, right), None without a reward model

    def label(self, side: str) -> str:
        return "tuned" if side == self.tuned_side else "base"


class Demo:
    def __init__(self, store: Store, generator: Generator, tuned_adapter: str, scorer=None,
                 sampling: SamplingSettings = SamplingSettings(), seed: int | None = None):
        self.store, self.generator, self.scorer, self.sampling = store, generator, scorer, sampling
        self.base: Policy = generator.base_policy
        self.tuned: Policy = generator.add_adapter(tuned_adapter)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()  # one model, shared by every browser tab showing the demo

    @classmethod
    def from_runs(cls, store: Store, tuned_run: str, reward_run: str | None = None, engine: str = "auto") -> "Demo":
        """The demo of a finished policy run on the base it was trained from (llama.cpp on a CPU with `auto`),
        its lists scored by a finished reward run when one is given."""
        from core.train.reward_model import (
            RewardScorer,  # lazy: TRL takes seconds; the page's win rate needs none
        )

        adapter = str(adapter_dir(tuned_run))
        scorer = RewardScorer.from_folder(reward_run) if reward_run else None
        return cls(store, Generator(load(adapter_base(adapter), engine=engine)), adapter, scorer)

    def compare(self, request: object) -> DemoPair:
        """Base and tuned answer `request` in one batch; sides shuffled; the pair is stored for a blind vote."""
        text = clean_text(request, "request", MAX_REQUEST_CHARS)
        prompt = by_text(load_prompts()).get(text_key(text)) or Prompt(text)  # a library request keeps its split
        with self._lock:
            tuned_side = self._rng.choice(["left", "right"])
            policies = [self.tuned, self.base] if tuned_side == "left" else [self.base, self.tuned]
            left, right = self.generator.generate(prompt, policies, self.sampling, self._rng.randrange(2**31))
            scores = None
            if self.scorer is not None:
                scores = tuple(self.scorer.score([prompt.text] * 2, [left.text, right.text]))
        pair = Pair(prompt=prompt, left=left, right=right, source="demo", chosen_by="demo")
        self.store.record_pair(pair)
        return DemoPair(pair, tuned_side, scores)


def record_blind_vote(store: Store, shown: DemoPair, choice: object, annotator: str) -> str:
    """Store a blind vote on a shown pair (no model needed); returns the reveal."""
    choice, _ = parse_choice(choice)
    store.record_vote(shown.pair.pair_id, choice, annotator)
    return f"Left was {shown.label('left')}, right was {shown.label('right')}."


def adapter_base(adapter: str) -> str:
    """The base model an adapter was trained on (its adapter_config.json), else the default base."""
    return adapter_config(adapter).get("base_model_name_or_path") or resolve_base_model()


def policy_names(tuned_adapter: str) -> tuple[str, str]:
    """The names (as stored with each generation) of the tuned policy and of its base, without loading either."""
    base = adapter_base(tuned_adapter)
    return Policy(base, tuned_adapter).name, Policy(base).name


def human_win_rate(votes: pd.DataFrame, tuned: str, base: str) -> WinRate:
    """The human win rate of policy `tuned` over `base` (policy names as stored), from every standing vote on a
    pair of exactly those two (demo or arena: both hide the sources until the vote). Ties and "both bad" count
    half: neither says one list is better."""
    sides = votes[((votes.left_policy == tuned) & (votes.right_policy == base))
                  | ((votes.left_policy == base) & (votes.right_policy == tuned))]
    tuned_won = ((sides.choice == "left") & (sides.left_policy == tuned)) | \
        ((sides.choice == "right") & (sides.right_policy == tuned))
    base_won = sides.choice.isin(["left", "right"]) & ~tuned_won
    return win_rate(["win" if w else "loss" if b else "tie" for w, b in zip(tuned_won, base_won)])
