"""Votes in and out of the store as files.

Import (`python -m core import-votes FILE`): JSONL or Parquet rows of `prompt, response_a, response_b, choice`
with choice in a | b | tie | both_bad, and optional `annotator`, `created_at` (ISO 8601). Every row is checked
first; one bad row rejects the whole file with its line number and reason, so nothing is ever half-imported.

Export (`python -m core export-votes OUT`): TRL's explicit-prompt preference format, `prompt, chosen, rejected`,
which RewardTrainer and DPOTrainer take unchanged, plus `margin` when any vote carries a strength:
- a strength maps to a margin in reward units as in Llama 2's "small margin" variant (Touvron et al. 2023,
  Table 28): slightly better 1/3, clearly better 2/3, much better 1; a vote without a strength gets 0;
- ties and "both bad" say nothing about which list is better, so they are left out (and counted in the summary);
- retracted votes are left out.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from core.lists import parse_list
from core.records import Generation, InputError, Pair, Policy, Prompt, utc_now
from core.store.database import Store

IMPORT_CHOICES = {"a": "left", "b": "right", "tie": "tie", "both_bad": "both_bad"}
MARGINS = {1: 1 / 3, 2: 2 / 3, 3: 1.0}
IMPORTED_POLICY = Policy(base_model="imported")
_MAX_TEXT = 20_000


@dataclass
class ExportSummary:
    exported: int
    ties: int
    both_bad: int
    with_margin: bool
    path: Path

    def __str__(self) -> str:
        return (f"wrote {self.exported} preference pairs to {self.path} (left out: {self.ties} ties, "
                f"{self.both_bad} both-bad{'; margin column included' if self.with_margin else ''})")


def read_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) of a .jsonl (one object per line) or .parquet file; a line that is not JSON is refused."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist.")
    if path.suffix == ".parquet":
        records = pd.read_parquet(path).to_dict("records")
        # Parquet has typed nulls where JSONL simply omits a field: drop them so both read the same.
        return [(n, {k: v for k, v in row.items() if not _is_null(v)}) for n, row in enumerate(records, start=1)]
    if path.suffix not in (".jsonl", ".json", ".ndjson"):
        raise InputError(f"{path.name}: use a .jsonl or .parquet file.")
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"line {line_no}: not valid JSON ({err.msg}).") from None
            if not isinstance(row, dict):
                raise InputError(f"line {line_no}: expected a JSON object, got {type(row).__name__}.")
            rows.append((line_no, row))
    return rows


def vote_from_row(row: dict, line_no: int) -> tuple[Pair, str, str, datetime]:
    """One import row as a (pair, choice, annotator, created_at) vote, or InputError naming the line and field."""
    def text(field: str) -> str:
        value = row.get(field)
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"line {line_no}: '{field}' is missing or empty.")
        if len(value) > _MAX_TEXT:
            raise InputError(f"line {line_no}: '{field}' is over {_MAX_TEXT} characters.")
        return value.strip()

    unknown = set(row) - {"prompt", "response_a", "response_b", "choice", "annotator", "created_at"}
    if unknown:
        raise InputError(f"line {line_no}: unknown field(s) {sorted(unknown)}; allowed are prompt, response_a, "
                         "response_b, choice, annotator, created_at.")
    prompt = Prompt(text=text("prompt"), source="import")
    choice = row.get("choice")
    if choice not in IMPORT_CHOICES:
        raise InputError(f"line {line_no}: choice must be one of {', '.join(IMPORT_CHOICES)}, not {choice!r}.")
    annotator = row.get("annotator") or "import"
    if not isinstance(annotator, str):
        raise InputError(f"line {line_no}: 'annotator' must be text.")
    created_at = _timestamp(row.get("created_at"), line_no)
    left, right = (_imported_generation(prompt, text(f)) for f in ("response_a", "response_b"))
    return Pair(prompt=prompt, left=left, right=right, source="import"), IMPORT_CHOICES[choice], annotator, created_at


def import_votes(store: Store, path: Path) -> int:
    votes = [vote_from_row(row, line_no) for line_no, row in read_rows(path)]
    if not votes:
        raise InputError(f"{path} holds no rows.")
    return store.import_votes(votes)


def preference_pairs(votes: pd.DataFrame, with_ids: bool = False) -> tuple[pd.DataFrame, dict[str, int]]:
    """Standing left/right votes as TRL preference rows; counts of what was left out.

    `with_ids` keeps comparison_id, prompt_id and split, so a trained reward model's scores can be traced back.
    """
    decided = votes[votes.choice.isin(["left", "right"])]
    left_won = decided.choice == "left"
    ids = decided[["comparison_id", "prompt_id", "split"]] if with_ids else pd.DataFrame(index=decided.index)
    pairs = ids.assign(**{
        "prompt": decided.prompt,
        "chosen": decided.left_text.where(left_won, decided.right_text),
        "rejected": decided.right_text.where(left_won, decided.left_text),
    })
    if decided.strength.notna().any():
        pairs["margin"] = decided.strength.map(MARGINS).fillna(0.0).astype(float)
    left_out = {"ties": int((votes.choice == "tie").sum()), "both_bad": int((votes.choice == "both_bad").sum())}
    return pairs.reset_index(drop=True), left_out


def export_votes(store: Store, out: Path) -> ExportSummary:
    out = Path(out)
    if out.suffix not in (".jsonl", ".parquet"):
        raise InputError(f"{out.name}: export to a .jsonl or .parquet file.")
    pairs, left_out = preference_pairs(store.votes())
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        pairs.to_parquet(out, index=False)
    else:
        pairs.to_json(out, orient="records", lines=True, force_ascii=False)
    return ExportSummary(len(pairs), left_out["ties"], left_out["both_bad"], "margin" in pairs, out)


def _imported_generation(prompt: Prompt, text: str) -> Generation:
    parsed = parse_list(text)
    return Generation(prompt=prompt, text=text, policy=IMPORTED_POLICY, well_formed=parsed.well_formed,
                      n_items=len(parsed.items))


def _is_null(value: object) -> bool:
    return value is None or (not isinstance(value, (str, list, dict)) and bool(pd.isna(value)))


def _timestamp(value: object, line_no: int) -> datetime:
    """An ISO 8601 time (any zone; a Parquet timestamp too) as naive UTC; now when absent."""
    if value is None or value == "":
        return utc_now()
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            value = None
    if not isinstance(value, datetime):  # numbers are refused: seconds? milliseconds? nobody can tell
        raise InputError(f"line {line_no}: created_at must be an ISO 8601 time like 2026-11-21T10:30:00Z.")
    stamp = pd.Timestamp(value)
    return (stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo else stamp).to_pydatetime()
