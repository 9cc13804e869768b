"""The prompt library and seed demonstrations shipped in data/ (format documented in data/README.md)."""
from __future__ import annotations

import json
import random
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from core.paths import DATA_DIR
from core.records import Prompt


@dataclass(frozen=True)
class Demonstration:
    prompt: Prompt
    response: str


def load_prompts(path: Path = DATA_DIR / "prompts.jsonl", split: str | None = None) -> list[Prompt]:
    """Library prompts, optionally one split only ("train" or "eval")."""
    prompts = [Prompt(text=row["prompt"], source="library", library_id=row["id"], category=row["category"],
                      split=row["split"]) for row in _read_jsonl(path)]
    return [p for p in prompts if split is None or p.split == split]


def text_key(text: str) -> str:
    """What two requests are compared by: format characters (zero-width spaces, BOM) dropped, whitespace collapsed,
    so "Top 5  fruits " typed in the arena is the library's "Top 5 fruits"."""
    return " ".join("".join(ch for ch in text if unicodedata.category(ch) != "Cf").split())


def by_text(prompts: list[Prompt]) -> dict[str, Prompt]:
    """Library prompts keyed by `text_key`: a request with one of these texts is that library prompt, split and all,
    however it arrives (typed, imported, served), so a held-out request never trains."""
    return {text_key(p.text): p for p in prompts}


def load_seed_demonstrations(path: Path = DATA_DIR / "demonstrations.jsonl",
                             prompts_path: Path = DATA_DIR / "prompts.jsonl") -> list[Demonstration]:
    by_id = {p.library_id: p for p in load_prompts(prompts_path)}
    return [Demonstration(prompt=by_id[row["prompt_id"]], response=row["response"]) for row in _read_jsonl(path)]


class PromptCycle:
    """Library prompts in a shuffled order, reshuffled after each full pass, so every prompt comes up evenly."""

    def __init__(self, prompts: list[Prompt], seed: int | None = None):
        if not prompts:
            raise ValueError("the prompt library is empty: check data/prompts.jsonl")
        self._prompts, self._rng, self._order = list(prompts), random.Random(seed), []

    def next(self) -> Prompt:
        if not self._order:
            self._order = self._rng.sample(self._prompts, len(self._prompts))
        return self._order.pop()


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
