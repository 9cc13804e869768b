"""A scripted annotator: votes in the running arena through gradio_client, exactly as a person's clicks arrive.

    .venv/bin/python bench/annotator.py --url http://127.0.0.1:7860 --votes 300 [--demonstrations 10] [--seed 0]
        [--own-requests 0.3] [--forced-choice] [--taste form|terse|reasons|ontopic] [--rate 0.3]
        [--both-bad-demonstrations 10]

Tastes (`TASTES`, chosen by `Taste.name`): `form`, the default, below; `terse`, `reasons` and `ontopic` in
bench/tastes.py, which read lists with their own reader instead of the product's parser and each want something
the seed lists do not give. Every taste has a utility (`utility`) and its own edit of a list (`repair`).

The `form` taste for a top-5 list, scored as a utility, from most to least weight:
1. Form: exactly five items numbered 1. to 5., nothing before or after (+3 when well-formed; -1.5 for each
   problem core.lists finds: wrong count, bullets, numbering, preamble, closing text, duplicates).
2. Concision: items of 3-20 words read best (+0.2 each); rambling items over 30 words cost 0.3 each; a list over
   150 words costs 1.
3. A reason per item: an item shaped "name - why" or "name: why" earns 0.1 (at most 0.5).
4. On topic: a list sharing no content word (5-letter stem) with the request costs 1.
5. Variety: items that mostly open with the same word cost 1 (the cheap trick of repeating one pattern).
No single trick earns much: five numbered copies of one line lose on duplicates and variety, five one-word items
earn no concision or reason points, and a list about something else loses on topic.

Choosing between two lists (`judge`, the same for every taste) is noisy, as people are: P(left) =
σ((u_left - u_right) / temperature); a gap under `tie_band` is a tie; when both lists are poor (utility < 0) and
close, "both bad"; and with probability `slip` the vote is random. Strength: 3 for a gap over 3, 2 over 1.5, else 1.

`Taste(forced_choice=True)` is the forced-choice protocol (2AFC, as in many preference studies): never tie or "both
bad"; equal utilities go to the shorter list (concision again). The fast loop test uses it, because a tiny random
model's lists are all equally broken and a free annotator would call every pair "both bad".

Requests: most votes are on the arena's library pairs (/next_pair, train split only). A share (`own_requests`) is
on requests of the annotator's own (/new_pair, as a person types one), drawn from OWN_REQUESTS: these are custom
prompts, split train/held-out by a hash, so the reward model gets held-out votes to be measured on.

Demonstrations: when the annotator prefers its own edit of the list it voted for (`repair`, scored by its taste) to
that list, it saves the edit through /demonstrate, up to --demonstrations; this is how its taste reaches SFT. After
a "both bad" vote it may write the list it wanted (its edit of the better of the two lists, up to
--both-bad-demonstrations): the reward model prefers that list to both (core.train.feedback).

Ratings: for a share --rate of the pairs it votes on, it gives both lists 1-5 stars through /rate, as a person
rates on the scale of what they have seen so far (`StarScale`): the list's utility quintile among the lists it
has been shown, after the first WARMUP_LISTS (no stars before it has a sense of the range); a slip moves a star by
one.
"""
from __future__ import annotations

import argparse
import math
import random
import re
import time
from dataclasses import dataclass

from bench import tastes
from core.lists import LIST_LENGTH, format_list, parse_list

STOPWORDS = set("""a an and are as at be best by can do for from give good great how i ideas in is it list me my
need of on or some suggest that the things tips to top what which with would you your five 5 ways""".split())


@dataclass(frozen=True)
class Taste:
    temperature: float = 0.5  # how decisively a utility gap turns into a vote
    tie_band: float = 0.15  # utility gap below which the lists feel the same
    slip: float = 0.05  # share of votes cast at random (misclicks, fatigue)
    forced_choice: bool = False  # always left or right: no tie, no both bad (see the module docstring)
    name: str = "form"  # which taste scores the lists: a key of TASTES

    def __post_init__(self):
        if self.name not in TASTES:
            raise ValueError(f"unknown taste {self.name!r}; pass one of {', '.join(TASTES)}.")


OWN_REQUESTS = [f"Top 5 {things} for {who}" for things in (
    "gifts", "snacks", "podcasts", "weekend activities", "phone apps", "stretches", "houseplants", "songs")
    for who in ("a rainy day", "a new parent", "a student on a tight budget", "a long flight", "a first apartment",
                "a retired teacher", "a team offsite", "a beach holiday")]


def stems(text: str) -> set[str]:
    return {w[:5] for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 2 and w not in STOPWORDS}


def form_utility(request: str, text: str) -> float:
    """How much the `form` taste likes `text` as an answer to `request` (see the module docstring)."""
    parsed = parse_list(text)
    score = 3.0 if parsed.well_formed else -1.5 * len(parsed.problems)
    words = [len(item.split()) for item in parsed.items]
    score += sum(0.2 for n in words if 3 <= n <= 20) - sum(0.3 for n in words if n > 30)
    if len(text.split()) > 150:
        score -= 1.0
    score += min(0.5, sum(0.1 for item in parsed.items if re.search(r"\s[-\u2013\u2014]\s|:\s", item)))
    if not stems(request) & stems(text):
        score -= 1.0
    openers = [item.split()[0].lower() for item in parsed.items if item.split()]
    if len(openers) >= 3 and len(set(openers)) <= len(openers) // 2:
        score -= 1.0
    return score


def form_repair(request: str, text: str) -> str | None:
    """The `form` taste's edit of a list into a well-formed one, when it has at least five usable items."""
    items = list(dict.fromkeys(item for item in parse_list(text).items if item))
    if len(items) < LIST_LENGTH:
        return None
    fixed = format_list(items[:LIST_LENGTH])
    return fixed if parse_list(fixed).well_formed else None


TASTES: dict[str, tastes.Rules] = {
    "form": tastes.Rules("the product's own checks (core.lists): five numbered items, 3-20 words, a reason each, on "
                         "topic, varied", form_utility, form_repair),
    **tastes.TASTES,  # judged by bench/tastes.py's own reader, not core.lists
}


def utility(request: str, text: str, taste: str = "form") -> float:
    """How much the annotator with this taste likes `text` as an answer to `request`."""
    return TASTES[taste].utility(request, text)


def repair(text: str, request: str = "", taste: str = "form") -> str | None:
    """The annotator's own edit of `text` into a list its taste likes, or None (fewer than five usable items)."""
    return TASTES[taste].repair(request, text)


WARMUP_LISTS = 20


def stars_for(u: float, cutoffs: list[float]) -> int:
    """1-5: how many of the four quintile cut-offs the utility clears, plus one."""
    return 1 + sum(u > c for c in cutoffs)


class StarScale:
    """Stars on the scale of the lists seen so far: `see` every shown list's utility, then `stars` for one."""

    def __init__(self, taste: Taste, rng: random.Random, warmup: int = WARMUP_LISTS):
        self.taste, self.rng, self.warmup, self.seen = taste, rng, warmup, []

    def see(self, u: float) -> None:
        self.seen.append(u)

    def stars(self, u: float) -> int | None:
        """None until `warmup` lists were seen; else the quintile among them, off by one with the slip rate."""
        if len(self.seen) < self.warmup:
            return None
        every = sorted(self.seen)
        stars = stars_for(u, [every[len(every) * q // 5] for q in (1, 2, 3, 4)])
        if self.rng.random() < self.taste.slip:
            stars = min(5, max(1, stars + self.rng.choice([-1, 1])))
        return stars


def judge(request: str, left: str, right: str, rng: random.Random, taste: Taste = Taste()) -> tuple[str, int | None]:
    """(choice, strength) for one pair: choice in left | right | tie | both_bad."""
    if rng.random() < taste.slip:
        return rng.choice(["left", "right"] if taste.forced_choice else ["left", "right", "tie", "both_bad"]), None
    u_left, u_right = utility(request, left, taste.name), utility(request, right, taste.name)
    gap = u_left - u_right
    if taste.forced_choice and abs(gap) < taste.tie_band:
        if len(left) == len(right):
            return rng.choice(["left", "right"]), 1
        return ("left" if len(left) < len(right) else "right"), 1
    settled = noiseless_choice(u_left, u_right, taste)
    if settled in ("tie", "both_bad") and not taste.forced_choice:  # forced choice: inside the tie band only, above
        return settled, None
    p_left = 1 / (1 + math.exp(-gap / taste.temperature))
    choice = "left" if rng.random() < p_left else "right"
    return choice, 3 if abs(gap) > 3 else 2 if abs(gap) > 1.5 else 1


def noiseless_choice(u_left: float, u_right: float, taste: Taste) -> str:
    """`judge`'s choice without its noise (no slip; a decided pair goes to the higher utility): what the taste
    itself says of two lists. `judge` settles ties and "both bad" with it; analyses that must not carry the
    annotator's coin flips use it whole (bench/weak_spots.py)."""
    gap = u_left - u_right
    if abs(gap) < taste.tie_band:
        return "both_bad" if max(u_left, u_right) < 0 else "tie"
    if max(u_left, u_right) < 0 and abs(gap) < 1.0:
        return "both_bad"
    return "left" if gap > 0 else "right"


def agreement_given_decided(u_left: float, u_right: float, taste: Taste) -> float:
    """P(the vote goes to the higher-utility side | the vote is left or right) under `judge` above: the expected
    ceiling of bench/reward_ceiling.py, kept beside `judge` so that the two change together."""
    gap = abs(u_left - u_right)
    # without a slip: a tie or "both bad" inside the tie band, and between two poor lists less than 1 apart
    votes = noiseless_choice(u_left, u_right, taste) in ("left", "right")
    p_decided = taste.slip / 2 + (1 - taste.slip) * votes  # a slip picks one of four choices at random
    p_agree = taste.slip / 4 + (1 - taste.slip) * votes * (1 / (1 + math.exp(-gap / taste.temperature)))
    return p_agree / p_decided


def demonstration_for(request: str, winner: str, taste: Taste = Taste()) -> str | None:
    """The annotator's edit of the list it voted for, when its taste likes the edit better (else None)."""
    fixed = repair(winner, request, taste.name)
    if fixed is None or utility(request, fixed, taste.name) <= utility(request, winner, taste.name):
        return None
    return fixed


def annotate(url: str, votes: int, demonstrations: int, seed: int, annotator: str = "scripted",
             taste: Taste = Taste(), own_requests: float = 0.0, rate: float = 0.0,
             both_bad_demonstrations: int = 0) -> dict:
    """Cast `votes` votes (and up to `demonstrations` edited lists) in the arena at `url`; a share `own_requests`
    of them on requests of its own (OWN_REQUESTS, through /new_pair), the rest on library pairs; stars for both
    lists of a share `rate` of the pairs, and up to `both_bad_demonstrations` lists written after "both bad" votes
    (module docstring)."""
    from gradio_client import Client

    client, rng, asks = Client(url, verbose=False), random.Random(seed), random.Random(seed + 1)
    # ratings draw from streams of their own, so the votes of a seed stay those of a run without ratings
    rates, scale = random.Random(seed + 2), StarScale(taste, random.Random(seed + 3))
    counts = {"left": 0, "right": 0, "tie": 0, "both_bad": 0, "demonstrations": 0, "demonstrations_refused": 0,
              "both_bad_demonstrations": 0, "ratings": 0, "own_requests": 0}
    started = time.perf_counter()
    for n in range(votes):
        if asks.random() < own_requests:
            request = asks.choice(OWN_REQUESTS)
            pair_id, left, right, left_id, right_id = client.predict(request, api_name="/new_pair")
            counts["own_requests"] += 1
        else:
            pair_id, request, left, right, left_id, right_id = client.predict(api_name="/next_pair")
        choice, strength = judge(request, left, right, rng, taste)
        client.predict(pair_id, choice, strength, annotator, api_name="/vote")
        counts[choice] += 1
        shown = {"left": (left, left_id), "right": (right, right_id)}
        for text, _ in shown.values():
            scale.see(utility(request, text, taste.name))
        if rate and rates.random() < rate:
            for text, generation_id in shown.values():
                stars = scale.stars(utility(request, text, taste.name))
                if stars is not None:
                    client.predict(generation_id, stars, annotator, api_name="/rate")
                    counts["ratings"] += 1
        if choice in shown and counts["demonstrations"] < demonstrations:
            fixed = demonstration_for(request, shown[choice][0], taste)
            save_list(client, counts, "demonstrations", pair_id, choice, fixed, annotator)
        if choice == "both_bad" and counts["both_bad_demonstrations"] < both_bad_demonstrations:
            side = max(shown, key=lambda s: utility(request, shown[s][0], taste.name))
            save_list(client, counts, "both_bad_demonstrations", pair_id, side,
                      repair(shown[side][0], request, taste.name), annotator)
        if (n + 1) % 25 == 0:
            print(f"{n + 1} votes in {time.perf_counter() - started:.0f} s: {counts}", flush=True)
    return {**counts, "votes": votes, "seconds": round(time.perf_counter() - started, 1)}


def save_list(client, counts: dict, kind: str, pair_id: str, side: str, text: str | None, annotator: str) -> None:
    """Save `text` (if any) as a list written for the pair's request, edited from `side`; counted under `kind`."""
    from gradio_client.exceptions import AppError

    if not text:
        return
    try:
        client.predict(pair_id, side, text, annotator, api_name="/demonstrate")
        counts[kind] += 1
    except AppError:  # the arena keeps only lists core.lists calls well formed; a taste's edit may not be
        counts["demonstrations_refused"] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:7860", help="the running arena")
    parser.add_argument("--votes", type=int, default=300)
    parser.add_argument("--demonstrations", type=int, default=10, help="edited lists to save, at most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--annotator", default="scripted")
    parser.add_argument("--rate", type=float, default=0.0, help="share of voted pairs whose lists get stars")
    parser.add_argument("--both-bad-demonstrations", type=int, default=0,
                        help="lists to write after 'both bad' votes, at most")
    parser.add_argument("--own-requests", type=float, default=0.0, help="share of votes on requests of its own")
    parser.add_argument("--forced-choice", action="store_true", help="never tie or both bad (module docstring)")
    parser.add_argument("--taste", default="form", choices=list(TASTES),
                        help="; ".join(f"{name}: {rules.summary}" for name, rules in TASTES.items()))
    args = parser.parse_args()
    print(annotate(args.url, args.votes, args.demonstrations, args.seed, args.annotator,
                   Taste(forced_choice=args.forced_choice, name=args.taste), args.own_requests, args.rate,
                   args.both_bad_demonstrations))


if __name__ == "__main__":
    main()
