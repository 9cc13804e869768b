"""Top-5 lists: parse a model's raw answer into items and judge its form.

A well-formed answer is exactly five items numbered 1. to 5. in order, one per line (an item may wrap onto
continuation lines), no two items the same, nothing before the first item and nothing after the last. The raw
text is always kept elsewhere; the parsed form is for display and metrics.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

LIST_LENGTH = 5
# "1. x", "1) x", "**1.** x", "#1: x" -- numbered markers the model actually produces. The closing "**" is eaten
# only after an opening one ("**1.**"), so "1. **Turkey**" keeps its bold; whitespace must follow the marker, as in
# Markdown, so a wrapped line starting "1.5 cups" continues its item.
_NUMBERED = re.compile(r"^\s*(\*\*)?#?\s*(\d{1,2})\s*[.):](?(1)\*\*)(?:\s+(.*\S))?\s*$")
_BULLET = re.compile(r"^\s*[-*\u2022]\s+(.*\S)\s*$")
# The head of an item ("Roast turkey" in "Roast turkey - the classic") decides whether two items are the same.
_HEAD_SPLIT = re.compile(r"\s+[-\u2013\u2014]\s+|:\s|\s\(")


@dataclass
class ParsedList:
    """What a response contains, and every way it departs from a well-formed top-5 list."""
    items: list[str]
    numbers: list[int]
    preamble: str = ""
    closing: str = ""
    duplicates: list[str] = field(default_factory=list)
    bulleted: bool = False

    @property
    def problems(self) -> list[str]:
        found = []
        if len(self.items) != LIST_LENGTH:
            found.append(f"has {len(self.items)} items, expected {LIST_LENGTH}")
        if self.bulleted:
            found.append("items are bullets, not numbered")
        elif self.items and self.numbers != list(range(1, len(self.items) + 1)):
            found.append("items are not numbered 1 to 5 in order")
        if any(not item for item in self.items):
            found.append("an item is empty")
        if self.preamble:
            found.append("text before the first item")
        if self.closing:
            found.append("text after the last item")
        found.extend(f"duplicate item: {d}" for d in self.duplicates)
        return found

    @property
    def well_formed(self) -> bool:
        return not self.problems


def item_key(item: str) -> str:
    """Normalised head of an item, used to spot duplicates ("Roast Turkey!" == "roast turkey - the best")."""
    head = _HEAD_SPLIT.split(item.strip(), maxsplit=1)[0]
    return re.sub(r"[^a-z0-9 ]+", "", head.lower().replace("*", "")).strip()


def parse_list(text: str) -> ParsedList:
    """Split `text` into preamble, items (numbered, else bulleted) and closing text."""
    lines = text.strip().splitlines()
    numbered = [(i, _NUMBERED.match(line)) for i, line in enumerate(lines)]
    marks = [(i, m) for i, m in numbered if m]
    bulleted = False
    if not marks:
        marks = [(i, m) for i, m in ((i, _BULLET.match(line)) for i, line in enumerate(lines)) if m]
        bulleted = bool(marks)
    if not marks:
        return ParsedList(items=[], numbers=[], preamble=text.strip())

    items, numbers = [], []
    last_item_line = marks[-1][0]
    for k, (i, m) in enumerate(marks):
        end = marks[k + 1][0] if k + 1 < len(marks) else _item_end(lines, i)
        body = [(m.group(1) if bulleted else m.group(3)) or ""] + [line.strip() for line in lines[i + 1:end]]
        items.append(" ".join(part for part in body if part).strip())
        numbers.append(0 if bulleted else int(m.group(2)))
        if k + 1 == len(marks):
            last_item_line = end
    preamble = "\n".join(lines[:marks[0][0]]).strip()
    closing = "\n".join(lines[last_item_line:]).strip()
    return ParsedList(items=items, numbers=numbers, preamble=preamble, closing=closing,
                      duplicates=_duplicates(items), bulleted=bulleted)


def format_list(items: list[str]) -> str:
    """The canonical text of a list: '1. item' lines."""
    return "\n".join(f"{n}. {item.strip()}" for n, item in enumerate(items, start=1))


def _item_end(lines: list[str], start: int) -> int:
    """The last item runs on through indented or unbroken lines, and stops at the first blank line."""
    end = start + 1
    while end < len(lines) and lines[end].strip():
        end += 1
    return end


def _duplicates(items: list[str]) -> list[str]:
    seen, dups = set(), []
    for item in items:
        key = item_key(item)
        if key and key in seen and key not in dups:
            dups.append(key)
        seen.add(key)
    return dups
