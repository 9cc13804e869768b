"""Annotator tastes that judge a top-5 list with their own eyes, not the product's (bench/annotator.py --taste NAME).

The `form` taste in bench/annotator.py reads lists with core.lists.parse_list, the same parser that scores the
policy's well-formedness, so a loop run with it partly measures the product against itself. The tastes here read a
list with `read_list` below (its own regexes: "1." / "1)" numbers, "-" / "*" / "•" bullets) and never import core.
Each wants something the shipped seed lists (data/demonstrations.jsonl: "1. Name - a few clauses of explanation")
do not give, so SFT on the seeds alone does not satisfy it; the annotator's demonstrations (`repair`) and votes must.

Shared by all three (`shape`): +2 for exactly five items, -1 per item missing or extra (at most -5), -0.5 when the
items are not numbered 1 to 5 in order, a cost per line outside the items (chatter), -0.5 per repeated item.

1. terse: items of 1-6 words with no explanation. An item of at most 6 words earns 0.5; each word past 6 costs
   0.04 (at most 0.6 an item); an explanation (" - ", ":", ",", "(", a second sentence, "because") costs 0.1; an
   item with no real word (3+ letters) costs 0.5; chatter costs 1 a line. Repair: each item's name only (a long
   name also loses its "by ..." tail). Seed lists score about -0.3 on average, their repairs about 4.4.
2. reasons: each item "Name: one reason that says why". No reason costs 0.6; a one-sentence, one-clause reason
   earns 0.4, less 0.15 per extra clause (a comma list of qualities, as the seeds often give) and 0.4 per extra
   sentence; a causal word (because, since, so, thanks to, which ...) earns 0.3; a reason under 3 or over 20 words
   costs 0.2; a reason repeated from an earlier item costs 0.4; chatter costs 0.5 a line. Repair: "Name: its
   clause that says why (else its first clause)."; "because it suits <what the request is for>" when missing.
3. ontopic: on topic, varied, no filler or hype. +1.5 times the share of the request's content words the list
   uses (none at all: -1); each filler or hype word the request did not use ("great", "amazing", "various", "etc",
   "very", "classic", "famous" ...) costs 0.3 (at most 2); an item opening with the same word as an earlier one
   (articles aside) costs 0.4; a word not from the request in 3+ items costs 0.3 (one pattern repeated); chatter
   costs 0.5 a line. Repair: drop the filler. The closest to the seeds: it parts from them on hype words (about
   four seed lists in ten use one) and on echoing the request.
Every utility is negative for an empty or prose answer (no items), so the annotator's "both bad" still means bad.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable

FIVE = 5
_NUMBERED = re.compile(r"^\s*(?:\*\*)?(\d{1,2})[.)](?:\*\*)?\s+(\S.*?)\s*$")  # "1. x", "2) x", "**3.** x"
_BULLETED = re.compile(r"^\s*[-*\u2022]\s+(\S.*?)\s*$")  # "- x", "* x", "• x"
_NAME_END = re.compile(r"\s+[-\u2013\u2014]\s+|:\s+|\s+\(")  # where "Name - why", "Name: why", "Name (why)" split
_EXPLAINS = re.compile(r"\s[-\u2013\u2014]\s|[:;,(]|[.!?]\s+\S|\bbecause\b", re.IGNORECASE)
_NAME_TAIL = re.compile(r"\s+(?:by|with|in|at|for|from|on|near)\s+", re.IGNORECASE)  # "Cosmos by Carl Sagan"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")
_CLAUSE_END = re.compile(r"[,;]\s*")
_CAUSAL = re.compile(r"\b(because|since|so|thanks to|as it|as they|which|lets|means|helps)\b", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z0-9']+")
STOPWORDS = frozenset("""a an and are as at be best by can do for from get give good how i ideas in into is it its
list me my need of on or our some suggest that the their them these they things this tips to top up what which
when where who why with would you your five 5 ways because since so was were has have will""".split())
# filler and hype: words that praise or pad instead of saying what the thing is
FILLER = frozenset("""great amazing awesome various etc many really very perfect nice lots stuff just truly
incredible fantastic wonderful ultimate definitely basically literally super totally absolutely classic stunning
spectacular iconic famous popular fun delicious ideal excellent fabulous lovely cool""".split())
ARTICLES = frozenset({"a", "an", "the"})
_FILLER_PHRASE = re.compile(r",?\s*\b(?:a lot of|lots of|tons of|and (?:so on|more)|etc)\b\.?", re.IGNORECASE)


@dataclass(frozen=True)
class Reading:
    """A list as this module reads it: the items' text (markers stripped), their numbers (0 for a bullet), and the
    lines that belong to no item (a preamble, a closing remark, an aside between items)."""
    items: list[str]
    numbers: list[int]
    outside: list[str]

    @property
    def in_order(self) -> bool:
        return self.numbers == list(range(1, len(self.items) + 1))


@dataclass(frozen=True)
class Rules:
    """One taste: `utility(request, text)` (higher is better) and `repair(request, text)`, the annotator's own
    edit of a list into one it likes (None when the list has fewer than five usable items)."""
    summary: str
    utility: Callable[[str, str], float]
    repair: Callable[[str, str], str | None]


def read_list(text: str) -> Reading:
    """Items are marked lines; an indented unmarked line right under an item continues it, any other line is
    outside ("Enjoy!" under the last item is a closing remark: a model's newlines are its own, not a wrap). Numbered
    markers win when both kinds appear (a bullet inside a numbered list is an aside)."""
    lines = text.strip().splitlines()
    pattern = _NUMBERED if any(_NUMBERED.match(line) for line in lines) else _BULLETED
    items, numbers, outside, continuing = [], [], [], False
    for line in lines:
        marked = pattern.match(line)
        if marked:
            items.append(marked.group(marked.lastindex))
            numbers.append(int(marked.group(1)) if pattern is _NUMBERED else 0)
            continuing = True
        elif not line.strip():
            continuing = False
        elif continuing and line[:1].isspace():
            items[-1] += " " + line.strip()
        else:
            outside.append(line.strip())
    return Reading(items, numbers, outside)


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def content_stems(text: str) -> set[str]:
    """Words that carry meaning, cut to 5 letters so "snack" meets "snacks"."""
    return {w[:5] for w in (w.lower() for w in words(text)) if len(w) > 2 and w not in STOPWORDS}


def split_item(item: str) -> tuple[str, str]:
    """(name, reason) of "Name - why" / "Name: why" / "Name (why)"; the reason is "" when there is none."""
    name, *rest = _NAME_END.split(item, maxsplit=1)
    reason = rest[0].strip().rstrip(")").strip() if rest else ""
    return name.strip().strip("*").rstrip(".,;:!?").strip(), reason


def item_key(item: str) -> str:
    return " ".join(w.lower() for w in words(split_item(item)[0]))


def repeats(items: list[str]) -> int:
    """How many items repeat an earlier item's name."""
    keys = [item_key(item) for item in items]
    return len(keys) - len(set(keys))


def shape(reading: Reading, chatter_cost: float) -> float:
    """The part every taste shares: five items, numbered in order, nothing around them, none repeated."""
    n = len(reading.items)
    score = 2.0 if n == FIVE else -1.0 * min(FIVE, abs(n - FIVE))
    if n and not reading.in_order:
        score -= 0.5
    return score - chatter_cost * min(2, len(reading.outside)) - 0.5 * repeats(reading.items)


def numbered(items: list[str]) -> str:
    return "\n".join(f"{n}. {item}" for n, item in enumerate(items, start=1))


def first_five_distinct(items: list[str]) -> list[str] | None:
    """The first five items with different names, or None when there are fewer."""
    seen, kept = set(), []
    for item in items:
        if (key := item_key(item)) and key not in seen:
            seen.add(key)
            kept.append(item)
    return kept[:FIVE] if len(kept) >= FIVE else None


# ---- terse ----------------------------------------------------------------------------------------------------------
def terse_utility(request: str, text: str) -> float:
    """Short names, no explanations (module docstring, 1.); the request plays no part."""
    reading = read_list(text)
    score = shape(reading, chatter_cost=1.0)
    for item in reading.items:
        n = len(words(item))
        score += 0.5 if n <= 6 else -min(0.6, 0.04 * (n - 6))
        if _EXPLAINS.search(item):
            score -= 0.1
        if not any(sum(c.isalpha() for c in w) >= 3 for w in words(item)):
            score -= 0.5
    return score


def terse_name(item: str) -> str:
    """An item cut to its name: before any explanation, and a long name before its "by ..." / "with ..." tail. A
    title still longer than 6 words is kept whole: a person would not cut "Do Not Go Gentle into That Good Night"."""
    name = split_item(_EXPLAINS.split(item, maxsplit=1)[0])[0].replace("*", "").strip().rstrip(".,;:!?")
    cuts = [m.start() for m in _NAME_TAIL.finditer(name) if m.start() > 0]
    if len(name.split()) > 6 and cuts:  # the longest head of at most 6 words, else the shortest head there is
        short = [cut for cut in cuts if len(name[:cut].split()) <= 6]
        name = name[:short[-1] if short else cuts[0]]
    return name


def terse_repair(request: str, text: str) -> str | None:
    kept = first_five_distinct([name for item in read_list(text).items if words(name := terse_name(item))])
    return numbered(kept) if kept else None


# ---- reasons --------------------------------------------------------------------------------------------------------
def reason_score(reason: str) -> float:
    """One item's reason: one concrete clause that says why; nothing at all is worst."""
    if not reason:
        return -0.6
    sentences = [s for s in _SENTENCE_END.split(reason) if words(s)]
    clauses = [c for c in _CLAUSE_END.split(sentences[0] if sentences else reason) if words(c)]
    score = 0.4 - 0.15 * max(0, len(clauses) - 1) - 0.4 * max(0, len(sentences) - 1)
    if _CAUSAL.search(reason):
        score += 0.3
    if not 3 <= len(words(reason)) <= 20:
        score -= 0.2
    return score


def reasons_utility(request: str, text: str) -> float:
    """One reason per item, each its own (module docstring, 2.)."""
    reading = read_list(text)
    reasons = [split_item(item)[1] for item in reading.items]
    said = [" ".join(words(r.lower())) for r in reasons if r]
    return shape(reading, chatter_cost=0.5) + sum(map(reason_score, reasons)) - 0.4 * (len(said) - len(set(said)))


def topic_of(request: str) -> str:
    """What a request is for, for a reason the annotator adds: "Top 5 gifts for a new parent" -> "a new parent";
    without a "for", its content words ("What are 5 ways to use up leftover rice?" -> "use leftover rice")."""
    *asked, tail = re.split(r"\bfor\b", request, flags=re.IGNORECASE)
    kept = words(tail) if asked else [w for w in words(request) if w.lower() not in STOPWORDS and not w.isdigit()]
    return " ".join(kept) or "the request"


def one_reason(reason: str, request: str) -> str:
    """An item's reason cut to one clause: the first that says why, else the first of 3+ words, else any."""
    first_sentence = _SENTENCE_END.split(reason)[0] if reason else ""
    clauses = [c.strip().rstrip(".!?") for c in _CLAUSE_END.split(first_sentence) if words(c)]
    long_enough = [c for c in clauses if len(words(c)) >= 3]
    chosen = next((c for c in long_enough if _CAUSAL.search(c)), long_enough[0] if long_enough else
                  clauses[0] if clauses else "")
    return chosen or f"because it suits {topic_of(request)}"


def reasons_repair(request: str, text: str) -> str | None:
    named = [split_item(item) for item in read_list(text).items]
    kept = first_five_distinct([f"{name}: {one_reason(reason, request)}." for name, reason in named if words(name)])
    return numbered(kept) if kept else None


# ---- ontopic --------------------------------------------------------------------------------------------------------
def ontopic_utility(request: str, text: str) -> float:
    """The request's words, no filler, no repeated pattern (module docstring, 3.)."""
    reading = read_list(text)
    score = shape(reading, chatter_cost=0.5)
    asked, said = content_stems(request), content_stems(" ".join(reading.items))
    score += (1.5 * len(asked & said) / len(asked)) if asked else 0.0
    if asked and not asked & said:
        score -= 1.0
    allowed = {w.lower() for w in words(request)}
    filler = sum(w.lower() in FILLER and w.lower() not in allowed for item in reading.items for w in words(item))
    score -= min(2.0, 0.3 * filler)
    openers = [next(w for w in words(item) if w.lower() not in ARTICLES).lower() for item in reading.items
               if any(w.lower() not in ARTICLES for w in words(item))]  # "The Gene", "The Road": not a pattern
    score -= 0.4 * (len(openers) - len(set(openers)))
    spread = Counter(stem for item in reading.items for stem in content_stems(item) - asked)
    return score - 0.3 * sum(1 for count in spread.values() if count >= 3)


def without_filler(item: str, allowed: set[str]) -> str:
    """The item without its filler words and phrases (those in `allowed`, the request's own words, stay)."""
    kept = _FILLER_PHRASE.sub("", item)
    kept = re.sub(r"[A-Za-z']+", lambda m: "" if m[0].lower() in FILLER and m[0].lower() not in allowed else m[0],
                  kept)
    kept = re.sub(r"\s+([,.;:!?)])", r"\1", re.sub(r"\s{2,}", " ", kept)).strip(" ,;")
    kept = re.sub(r"^[-:,]\s*|\s+[-\u2013\u2014]\s*$", "", kept).strip()
    # "Great pie" -> "Pie": a capital the filler word carried moves to the new first word
    return kept[:1].upper() + kept[1:] if item[:1].isupper() else kept


def ontopic_repair(request: str, text: str) -> str | None:
    allowed = {w.lower() for w in words(request)}
    cleaned = [kept for item in read_list(text).items if (kept := without_filler(item, allowed))]
    # "Pie: because it is amazing" -> "Pie: because it is" says nothing: keep the name alone
    kept = first_five_distinct([item if content_stems(split_item(item)[1]) else split_item(item)[0]
                                for item in cleaned])
    return numbered(kept) if kept else None


TASTES = {
    "terse": Rules("items of 1-6 words, no explanations; long items and chatter cost", terse_utility, terse_repair),
    "reasons": Rules("exactly one reason per item ('Name: because ...'); none or several cost", reasons_utility,
                     reasons_repair),
    "ontopic": Rules("on topic and varied: request words used, no filler ('great', 'very', 'etc'), no repeated "
                     "openers", ontopic_utility, ontopic_repair),
}
