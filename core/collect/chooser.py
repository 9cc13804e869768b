"""Which pair the arena shows next: random, the reward model's most uncertain, or an unannounced repeat.

Uncertainty sampling (Lewis & Gale 1994) asks for the label the current model is least sure of. For preferences the
model is a Bradley–Terry reward model, whose P(left ≻ right) = σ(r_left − r_right); the most uncertain pair is the
one whose P is closest to 0.5, i.e. whose reward gap |r_i − r_j| is smallest (σ is monotone and σ(−d) = 1 − σ(d)).
This is the simplest member of active preference learning (Mehta et al. 2023, "Sample Efficient Reinforcement
Learning from Human Feedback via Active Exploration"; BAL-PM, Melo et al. 2024; Prodigy's `prefer_uncertain`).

    arena pair, "uncertain":  1. sample K candidates for one library request in one batched generate
                              2. score all K with the newest finished reward model
                              3. show the pair (of K choose 2) with the smallest reward gap, sides shuffled

Where this departs from the papers:
1. One reward model's σ(Δr), not a posterior or an ensemble's disagreement (Dwaracherla et al. 2024; BAL-PM adds an
   entropy term over prompts for diversity): cheaper, and a weaker signal of what the model does not know. The
   posterior variance of a linear head, choosing the request too (design.py), saved no votes either (bench/README.md).
2. Prompts are not chosen: the library cycle still serves every train-split request evenly; only the two lists
   shown for it are chosen. Typed requests (/new_pair) and held-out prompts stay random pairs of two samples, so
   held-out statistics stay unbiased.
3. Two identical texts are never a pair (their gap is 0, they would always win), and with a challenger only
   base-vs-challenger pairs are eligible, as in random mode.
4. Until a reward run has finished, "uncertain" serves random pairs (stored as chosen_by="random").

Self-consistency repeats: at `repeat_rate` (default 0.05), the pair that follows an annotator's vote (or a /next_pair
call that names them) is, unannounced and with sides swapped, a pair they voted on before: a standing vote, not one
of their few latest, neither a repeat nor repeated yet, and a pair the queue could serve now (a request of its
library, the policies it serves), so nothing gives it away. A skip (the page's Next button) is never a repeat. It is
a new pair of the same two generations (chosen_by="repeat", repeat_of=<original>), so its vote is an ordinary
comparison; agreement between the two votes measures the annotator's own consistency.

Settings live in the database (`meta` table), read by the arena whenever it builds a pair (sampling) or serves one
(repeat rate), so a change applies without a restart. The last writer wins: a flag given on the arena's command
line is written at start, the dashboard's Arena page writes it when an admin saves; a flag left out keeps what the
database holds (defaults below).

Which two policies the arena pairs (`arena.pairing`: two sides, each "base" or a run folder) and the round it
collects for (`arena.round`) are settings too, followed by `PairingWatcher` in the queue's background thread:
adapters load there, never on a request thread. A new pairing drops the pairs the queue had ready for the old one
(never shown, so no vote is lost), and the next pair comes from the new two; a pair already being generated for a
request is finished and shown. The watcher writes back what the arena serves now (`arena.serving`).
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import random
from pathlib import Path
from typing import Callable, Protocol, Sequence

from core.collect.library import text_key
from core.lists import parse_list
from core.records import Generation, InputError, Pair, Policy, Prompt, utc_now

log = logging.getLogger(__name__)

SAMPLINGS = ("random", "uncertain")
DEFAULT_SAMPLING = "random"
DEFAULT_REPEAT_RATE = 0.05
SAMPLING_KEY, REPEAT_RATE_KEY = "arena.sampling", "arena.repeat_rate"  # keys of the store's meta table
PAIRING_KEY, ROUND_KEY, SERVING_KEY = "arena.pairing", "arena.round", "arena.serving"
REWARD_SERVING_KEY = "arena.reward_model"  # the reward run the arena chooses with, as it last said
BASE = "base"  # a pairing's side that is the base model itself, without an adapter
MAX_ROUND_CHARS = 120


class Scorer(Protocol):
    """What the chooser needs of a reward model (core.train.reward_model.RewardScorer is one)."""

    def score(self, prompts: list[str], responses: list[str]) -> list[float]: ...


# ---- the pure choice ------------------------------------------------------------------------------------------------
def preference(r_left: float, r_right: float) -> float:
    """Bradley–Terry P(left ≻ right) = σ(r_left − r_right)."""
    gap = r_left - r_right
    return 1.0 / (1.0 + math.exp(-gap)) if gap >= 0 else math.exp(gap) / (1.0 + math.exp(gap))  # never overflows


def most_uncertain_pair(scores: Sequence[float],
                        allowed: Callable[[int, int], bool] | None = None) -> tuple[int, int, float]:
    """(i, j, P(i ≻ j)) for the pair i < j with P closest to 0.5 (smallest |scores[i] − scores[j]|) among those
    `allowed(i, j)` accepts. Ties go to the first pair in (i, j) order. ValueError when no pair is allowed."""
    pairs = [(i, j) for i, j in itertools.combinations(range(len(scores)), 2) if allowed is None or allowed(i, j)]
    if not pairs:
        raise ValueError(f"no eligible pair among {len(scores)} candidates")
    i, j = min(pairs, key=lambda ij: abs(scores[ij[0]] - scores[ij[1]]))  # min keeps the first of equal gaps
    return i, j, preference(scores[i], scores[j])


def repeat_due(rng: random.Random, rate: float) -> bool:
    """Whether this pair is a repeat: true with probability `rate` (0 never, 1 always)."""
    return rng.random() < rate


def repeatable(votes, prompts: dict[str, Prompt], policies: dict[str, Policy]):
    """The votes (rows of Store.repeat_candidates) on pairs the queue could serve now: a request among `prompts`
    (keyed by text_key) between two of `policies` (keyed by name). An old challenger's lists would give it away."""
    served = votes.prompt.map(lambda text: text_key(text) in prompts)
    return votes[served & votes.left_policy.isin(list(policies)) & votes.right_policy.isin(list(policies))]


def swapped_repeat(vote, prompt: Prompt, policies: dict[str, Policy]) -> Pair:
    """The pair a vote was cast on (a row of `repeatable`), shown again with sides swapped as a new pair of the same
    two generations. Their rows are stored already and stay as they are, so only what the arena shows, reveals and
    links to is rebuilt here: ids, texts and policies."""
    def generation(side: str) -> Generation:
        parsed = parse_list(vote[f"{side}_text"])  # what generate() derived from the text when it sampled it
        return Generation(prompt, vote[f"{side}_text"], policies[vote[f"{side}_policy"]], parsed.well_formed,
                          len(parsed.items), generation_id=vote[f"{side}_generation_id"])

    return Pair(prompt, left=generation("right"), right=generation("left"), chosen_by="repeat",
                repeat_of=vote["pair_id"])


# ---- settings (in the store, so the dashboard can change them while the arena runs) --------------------------------
def check_sampling(value: object) -> str:
    if value not in SAMPLINGS:
        raise InputError(f"sampling is one of {', '.join(SAMPLINGS)}, not {value!r}")
    return value


def check_repeat_rate(value: object) -> float:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        rate = math.nan
    if isinstance(value, bool) or not 0.0 <= rate <= 1.0:
        raise InputError(f"the repeat rate is a share between 0 and 1 (0.05: one pair in twenty), not {value!r}")
    return rate


def save_settings(store, sampling: str | None = None, repeat_rate: float | None = None) -> None:
    """Write the settings given (None: leave as stored), checked first: nothing is written if either is bad."""
    checked = {SAMPLING_KEY: None if sampling is None else check_sampling(sampling),
               REPEAT_RATE_KEY: None if repeat_rate is None else check_repeat_rate(repeat_rate)}
    for key, value in checked.items():
        if value is not None:
            store.set_setting(key, value)


def check_pairing(value: object) -> tuple[str, str]:
    """Two sides, each "base" or a folder path: a pair of strings, or its JSON as stored. Whether a folder holds a
    policy's adapter is the caller's check (core/train/best.py check_policy); this is only the shape."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            pass
    if not (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(side, str) and side.strip() for side in value)):
        raise InputError(f"a pairing is two policies, each {BASE!r} or a run folder, not {value!r}")
    return value[0].strip(), value[1].strip()


def check_round(value: object) -> str | None:
    """A round's name, stripped (None or empty: no round), at most MAX_ROUND_CHARS, without control characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"a round's name is text, not {type(value).__name__}")
    value = value.strip()
    if len(value) > MAX_ROUND_CHARS:
        raise InputError(f"the round's name is {len(value)} characters long; keep it under {MAX_ROUND_CHARS}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise InputError("the round's name contains control characters (a newline, a tab…); write it on one line")
    return value or None


def save_pairing(store, pairing: tuple[str, str] | None = None, round_name: str | None = None,
                 keep_round: bool = True) -> None:
    """Write the pairing and the round given (pairing None: leave as stored; round None: leave it if `keep_round`,
    else end it), both checked first: nothing is written if either is bad."""
    checked_pairing = None if pairing is None else check_pairing(pairing)
    checked_round = check_round(round_name)
    if checked_pairing is not None:
        store.set_setting(PAIRING_KEY, json.dumps(list(checked_pairing)))
    if checked_round is not None or not keep_round:
        store.set_setting(ROUND_KEY, checked_round or "")


def stored_pairing(store) -> tuple[str, str] | None:
    """The stored pairing, or None when none (or a bad one) is stored."""
    return read_setting(store, PAIRING_KEY, check_pairing, None)


def read_pairing(store) -> tuple[str, str]:
    """The stored pairing; base vs base when none (or a bad one) is stored."""
    return stored_pairing(store) or (BASE, BASE)


def read_round(store) -> str | None:
    return read_setting(store, ROUND_KEY, check_round, None)


def read_serving(store) -> dict:
    """What the arena last said it serves: pairing (its two sides as stored), policies (their names), round, since,
    error (a pairing it could not load, else None). {} before an arena has said anything."""
    try:
        serving = json.loads(store.setting(SERVING_KEY) or "{}")
    except ValueError:
        return {}
    return serving if isinstance(serving, dict) else {}


def read_reward_serving(store) -> dict:
    """The reward run the arena last said it chooses with (run) and one that would not load (failed); {} before an
    arena has said anything."""
    try:
        said = json.loads(store.setting(REWARD_SERVING_KEY) or "{}")
    except ValueError:
        return {}
    return said if isinstance(said, dict) else {}


def read_sampling(store) -> str:
    """The stored sampling, or the default when none (or a bad one) is stored."""
    return read_setting(store, SAMPLING_KEY, check_sampling, DEFAULT_SAMPLING)


def read_repeat_rate(store) -> float:
    return read_setting(store, REPEAT_RATE_KEY, check_repeat_rate, DEFAULT_REPEAT_RATE)


def read_setting(store, key: str, check, default):
    """The stored value of `key` as `check` returns it; `default` when none (or a bad one, with a warning) is stored."""
    stored = store.setting(key)
    try:
        return default if stored is None else check(stored)
    except InputError as err:  # someone wrote the table by hand: keep serving, and say so
        log.warning("ignoring the stored %s (%s); using %r", key, err, default)
        return default


# ---- the reward model, reloaded when a newer one finishes ----------------------------------------------------------
class RewardWatcher:
    """The newest finished reward model. `find_run()` names its folder (None: none yet) and `load(path)` loads it;
    both come from the app (core.collect knows nothing of training). Call `refresh()` from the background thread
    only: loading takes seconds. `scorer` is whatever was loaded last, or None."""

    def __init__(self, find_run: Callable[[], Path | None], load: Callable[[Path], Scorer], store=None):
        self._find_run, self._load, self.store = find_run, load, store
        self.run: Path | None = None  # the folder `scorer` came from
        self.scorer: Scorer | None = None
        self._failed: Path | None = None  # a folder that would not load: not retried at every refill
        self._said: dict | None = None  # what REWARD_SERVING_KEY holds, as last written

    def refresh(self) -> None:
        """Load the newest finished run if it is not the one loaded (cheap when nothing changed: one folder scan),
        then say which one is in use, for the dashboard's Arena page (with `store`)."""
        newest = self._find_run()
        if newest is not None and newest not in (self.run, self._failed):
            try:
                scorer = self._load(newest)
            except Exception:  # a broken run must not stop the arena: keep the model we have (or random pairs)
                log.exception("could not load the reward model in %s; the arena keeps %s", newest,
                              self.run or "random")
                self._failed = newest
            else:
                log.info("the arena now chooses pairs with the reward model in %s", newest)
                self.run, self.scorer = newest, scorer
                self._failed = None  # older than the run now loaded: never the newest again, nothing to warn of
        self.say()

    def say(self) -> None:
        """Write the run in use and the one that would not load, when that changed (or the last write failed). The
        arena calls it once at start too, so the page never shows a previous arena's word."""
        said = {"run": str(self.run) if self.run else None, "failed": str(self._failed) if self._failed else None}
        if self.store is None or said == self._said:
            return
        self.store.set_setting(REWARD_SERVING_KEY, json.dumps(said))
        self._said = said


# ---- the two policies, switched when the stored pairing changes ----------------------------------------------------
class PairingWatcher:
    """The two policies the arena serves and the round it collects for, as stored. `load(side)` turns a side ("base"
    or a run folder) into a Policy, loading its adapter; it comes from the app (core.collect knows nothing of run
    folders). Without `load`, or while no pairing is stored, the policies stay `fixed`; the round is followed anyway.
    Call `refresh()` from the background thread only (an adapter takes seconds to load), or once before serving."""

    def __init__(self, store, load: Callable[[str], Policy] | None, fixed: tuple[Policy, Policy]):
        self.store, self._load = store, load
        self.policies = fixed  # what the arena serves; `fixed` until a stored pairing loads
        self.pairing: tuple[str, str] | None = None  # the stored sides `policies` came from (None: `fixed`)
        self.round: str | None = None
        self.error: str | None = None  # why the stored pairing could not be loaded (the old one is kept)
        self._failed: tuple[str, str] | None = None  # not retried at every refill
        self._said: dict | None = None  # what `arena.serving` holds, as last written

    def refresh(self, before_switch: Callable[[], object] | None = None) -> bool:
        """Follow the stored pairing and round; True when the policies changed. `before_switch()` runs after the new
        policies loaded and just before they replace the old ones (the arena drops its ready pairs there)."""
        pairing, round_name = stored_pairing(self.store), read_round(self.store)
        switched = False
        if self._load is not None and pairing is not None and pairing not in (self.pairing, self._failed):
            try:
                policies = (self._load(pairing[0]), self._load(pairing[1]))
            except Exception as err:  # a broken or deleted run must not stop the arena: keep serving the old two
                log.exception("could not load the pairing %s; the arena keeps %s", pairing,
                              " vs ".join(policy.name for policy in self.policies))
                self._failed, self.error = pairing, f"{type(err).__name__}: {err}"
            else:
                if before_switch:
                    before_switch()
                self.policies, self.pairing, self._failed, self.error, switched = policies, pairing, None, None, True
                log.info("the arena now pairs %s and %s", *(policy.name for policy in policies))
        self.round = round_name
        self._say(switched)
        return switched

    def _say(self, switched: bool) -> None:
        """Write what is served now to `arena.serving`, when it changed (or the last write failed)."""
        said = {"pairing": list(self.pairing) if self.pairing else None,
                "policies": [policy.name for policy in self.policies], "round": self.round, "error": self.error}
        if not switched and self._said is not None and {k: self._said.get(k) for k in said} == said:
            return
        said["since"] = utc_now().isoformat(timespec="seconds") if switched or not self._said \
            else self._said.get("since")
        self.store.set_setting(SERVING_KEY, json.dumps(said))
        self._said = said
