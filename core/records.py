"""Plain records passed between generation, the arena and the store (no torch, no SQL: the dashboard imports them)."""
from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

CHOICES = ("left", "right", "tie", "both_bad")
STRENGTHS = {1: "slightly better", 2: "clearly better", 3: "much better"}


class ModelLoadError(RuntimeError):
    """A base model or adapter could not be loaded; the message says what to run or pass instead."""


class StoreBusy(RuntimeError):
    """The database stayed locked by another process for longer than the store waits."""


class InputError(ValueError):
    """Bad input from a user or a file; the message says what to change. Nothing was written."""


# What a command or page reports as one line (never a traceback): each message says what to change.
USER_ERRORS = (InputError, ModelLoadError, StoreBusy)


def new_id() -> str:
    return uuid.uuid4().hex[:16]


def prompt_id_for(text: str) -> str:
    """Prompts are identified by their text, so the same request typed twice is one prompt."""
    return "p-" + hashlib.sha1(text.strip().encode()).hexdigest()[:12]


def utc_now() -> datetime:
    """Timestamps are stored as naive UTC."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


@dataclass(frozen=True)
class Prompt:
    text: str
    source: str = "custom"  # library | custom | import
    library_id: str | None = None
    category: str | None = None
    split: str | None = None  # train | eval, for library prompts

    @property
    def prompt_id(self) -> str:
        return prompt_id_for(self.text)


@dataclass(frozen=True)
class Policy:
    """Where a candidate comes from: a base model, optionally with a LoRA adapter on top."""
    base_model: str
    adapter: str | None = None

    @property
    def name(self) -> str:
        base = self.base_model.rstrip("/").split("/")[-1]
        if not self.adapter:
            return base
        parts = self.adapter.rstrip("/").split("/")
        # a run's adapter lives in <run>/adapter: name it by the run (ppo-20261121-101500), which tells runs apart
        return f"{base}+{parts[-2] if parts[-1] == 'adapter' and len(parts) > 1 else parts[-1]}"


def short_policy_names(names) -> list[str]:
    """Policy names (Policy.name) as a chart or a headline shows them: when every one is the same base model or an
    adapter on it, the adapters by their run's name and the base as "base"; otherwise the names as they are (two
    base models: the base is what tells them apart)."""
    names = [str(n) for n in names]
    bases = {n.split("+", 1)[0] for n in names}
    if len(bases) != 1:
        return names
    return [n.split("+", 1)[1] if "+" in n else "base" for n in names]


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 0
    max_new_tokens: int = 160


@dataclass
class Generation:
    """One candidate list with everything needed to reproduce and judge it."""
    prompt: Prompt
    text: str
    policy: Policy
    well_formed: bool
    n_items: int
    # How it was made; None for lists imported from a file.
    system_prompt: str | None = None
    sampling: SamplingSettings | None = None
    seed: int | None = None
    num_tokens: int | None = None
    finished: bool | None = None  # ended with EOS rather than at max_new_tokens
    latency_ms: float | None = None  # wall time of the generate call that produced it (shared by a batched pair)
    generation_id: str = field(default_factory=new_id)
    created_at: datetime = field(default_factory=utc_now)


@dataclass
class Pair:
    """Two candidates for one prompt, in the order they are shown (left, right)."""
    prompt: Prompt
    left: Generation
    right: Generation
    pair_id: str = field(default_factory=new_id)
    source: str = "arena"  # arena | import | demo
    created_at: datetime = field(default_factory=utc_now)
    chosen_by: str = "random"  # random | uncertain | repeat (how the arena picked it; see core/store/schema.py)
    predicted_p_left: float | None = None  # the reward model's P(left preferred) when it chose the pair
    repeat_of: str | None = None  # the pair this one repeats with sides swapped (a self-consistency check)
    round: str | None = None  # the round of collection it was shown in (core/train/rounds.py); None outside any
