"""Votes in and out of the store as files.

Import (`python -m core import-votes FILE`): JSONL or Parquet rows of `prompt, response_a, response_b, choice`
with choice in a | b | tie | both_bad, and optional `annotator`, `created_at` (ISO 8601, years 2000-2099). Every
row is checked first; one bad row rejects the whole file with its line number and reason, so nothing is ever
half-imported. The file is streamed twice (check, then store), a batch of rows at a time, never read whole; a
row identical to a stored vote is skipped, so importing a file twice adds nothing.

Export (`python -m core export-votes OUT`): TRL's explicit-prompt preference format, `prompt, chosen, rejected`,
which RewardTrainer and DPOTrainer take unchanged, plus `margin` when any vote carries a strength:
- a strength maps to a margin in reward units as in Llama 2's "small margin" variant (Touvron et al. 2023,
  Table 28): slightly better 1/3, clearly better 2/3, much better 1; a vote without a strength gets 0;
- ties and "both bad" say nothing about which list is better, so they are left out (and counted in the summary);
- retracted votes are left out, and so is the vote on a self-consistency repeat (the original vote counts once).
"""
from __future__ import annotations

import errno
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.lists import parse_list
from core.paths import write_whole
from core.records import Generation, InputError, Pair, Policy, Prompt
from core.store.database import Store, check_annotator

IMPORT_CHOICES = {"a": "left", "b": "right", "tie": "tie", "both_bad": "both_bad"}
MARGINS = {1: 1 / 3, 2: 2 / 3, 3: 1.0}
IMPORTED_POLICY = Policy(base_model="imported")
_MAX_TEXT = 20_000
_EARLIEST, _LATEST = datetime(2000, 1, 1), datetime(2100, 1, 1)  # created_at outside these is a mistake
_PARQUET_BATCH_ROWS = 10_000


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


def iter_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, row) of a .jsonl (one object per line) or .parquet file (row number), read a batch at a time;
    a line that is not UTF-8 or not JSON, or a file that is not Parquet, is refused with InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist." if not path.exists() else f"{path} is not a file: pass a file.")
    if path.suffix == ".parquet":
        return _parquet_rows(path)
    if path.suffix not in (".jsonl", ".json", ".ndjson"):
        raise InputError(f"{path.name}: use a .jsonl or .parquet file.")
    return _jsonl_rows(path)


def read_rows(path: Path) -> list[tuple[int, dict]]:
    """Every (line number, row) of the file at once, for small files (see iter_rows)."""
    return list(iter_rows(path))


def vote_from_row(row: dict, line_no: int) -> tuple[Pair, str, str, datetime | None]:
    """One import row as a (pair, choice, annotator, created_at) vote, or InputError naming the line and field;
    created_at is None when the row has none (the store then stamps it now)."""
    prompt_text, response_a, response_b, choice, annotator, created_at = checked_row(row, line_no)
    prompt = Prompt(text=prompt_text, source="import")
    left, right = (_imported_generation(prompt, text) for text in (response_a, response_b))
    return Pair(prompt=prompt, left=left, right=right, source="import", chosen_by="import"), choice, annotator, created_at


def checked_row(row: dict, line_no: int) -> tuple[str, str, str, str, str, datetime | None]:
    """(prompt, response_a, response_b, stored choice, annotator, created_at) of one import row, every field
    checked, or InputError naming the line and field: what vote_from_row checks, without building the vote."""
    def text(field: str) -> str:
        value = row.get(field)
        if value is not None and not isinstance(value, str):
            raise InputError(f"line {line_no}: '{field}' must be text, not {_kind(value)}.")
        if not value or not value.strip():
            raise InputError(f"line {line_no}: '{field}' is missing or empty.")
        if len(value) > _MAX_TEXT:
            raise InputError(f"line {line_no}: '{field}' is over {_MAX_TEXT} characters.")
        if not value.isascii() and _has_surrogate(value):
            raise InputError(f"line {line_no}: '{field}' holds a lone surrogate escape (like \\ud800), which is "
                             "not a character: fix the text's encoding.")
        return value.strip()

    unknown = set(row) - {"prompt", "response_a", "response_b", "choice", "annotator", "created_at"}
    if unknown:
        raise InputError(f"line {line_no}: unknown field(s) {sorted(unknown)}; allowed are prompt, response_a, "
                         "response_b, choice, annotator, created_at.")
    prompt = text("prompt")
    choice = row.get("choice")
    if not isinstance(choice, str) or choice not in IMPORT_CHOICES:
        raise InputError(f"line {line_no}: choice must be one of {', '.join(IMPORT_CHOICES)}, not {choice!r}.")
    annotator = row.get("annotator") or "import"
    if not isinstance(annotator, str):
        raise InputError(f"line {line_no}: 'annotator' must be text.")
    try:
        annotator = check_annotator(annotator)
    except InputError as err:
        raise InputError(f"line {line_no}: {err}.") from None
    created_at = _timestamp(row.get("created_at"), line_no)
    return prompt, text("response_a"), text("response_b"), IMPORT_CHOICES[choice], annotator, created_at


@dataclass
class ImportSummary:
    imported: int
    skipped: int  # identical to a vote already stored (a file imported twice)
    path: Path
    database: Path

    def __str__(self) -> str:
        skipped = f"; skipped {self.skipped} already stored (same prompt, lists, choice, annotator and created_at)"
        return f"imported {self.imported} votes from {self.path} into {self.database}{skipped if self.skipped else ''}"


def import_file(store: Store, path: Path) -> ImportSummary:
    """Every row checked first, then stored in one transaction; both passes stream the file. Rows identical to
    stored votes are skipped (see Store.import_votes)."""
    # 1. check: the whole file, a row at a time, keeping nothing; a bad row stops here with nothing written
    rows = 0
    for line_no, row in iter_rows(path):
        checked_row(row, line_no)
        rows += 1
    if not rows:
        raise InputError(f"{path} holds no rows.")
    # 2. store: read again, all or nothing in one transaction (should the file change in between, a bad row
    # still rolls everything back)
    imported, skipped = store.import_votes(vote_from_row(row, line_no) for line_no, row in iter_rows(path))
    return ImportSummary(imported, skipped, Path(path), store.path)


def import_votes(store: Store, path: Path) -> int:
    """How many votes of the file were stored (see import_file)."""
    return import_file(store, path).imported


def preference_pairs(votes: pd.DataFrame, with_ids: bool = False) -> tuple[pd.DataFrame, dict[str, int]]:
    """Standing left/right votes as TRL preference rows; counts of what was left out.

    `with_ids` keeps comparison_id, prompt_id and split, so a trained reward model's scores can be traced back.
    """
    repeat = is_repeat(votes)
    decided = votes[votes.choice.isin(["left", "right"]) & ~repeat]
    left_won = decided.choice == "left"
    ids = decided[["comparison_id", "prompt_id", "split"]] if with_ids else pd.DataFrame(index=decided.index)
    pairs = ids.assign(**{
        "prompt": decided.prompt,
        "chosen": decided.left_text.where(left_won, decided.right_text),
        "rejected": decided.right_text.where(left_won, decided.left_text),
    })
    if decided.strength.notna().any():
        pairs["margin"] = decided.strength.map(MARGINS).fillna(0.0).astype(float)
    originals = votes.choice[~repeat]  # a repeat's vote is counted once, as a repeat, whatever it chose
    left_out = {"ties": int((originals == "tie").sum()), "both_bad": int((originals == "both_bad").sum()),
                "repeats": int(repeat.sum())}
    return pairs.reset_index(drop=True), left_out


def is_repeat(votes: pd.DataFrame) -> pd.Series:
    """Which votes are on a self-consistency repeat of a pair (their original vote is the one that counts)."""
    if "repeat_of" not in votes:
        return pd.Series(False, index=votes.index)
    return votes.repeat_of.notna()


def export_votes(store: Store, out: Path) -> ExportSummary:
    out = Path(out)
    if out.suffix not in (".jsonl", ".parquet"):
        raise InputError(f"{out.name}: export to a .jsonl or .parquet file.")
    pairs, left_out = preference_pairs(store.votes())

    def write(tmp: Path) -> None:
        if out.suffix == ".parquet":
            pairs.to_parquet(tmp, index=False)
        else:
            pairs.to_json(tmp, orient="records", lines=True, force_ascii=False)

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_whole(out, write)  # a failed write leaves no half file
    except OSError as err:
        hint = "free some space or export to another disk" if err.errno == errno.ENOSPC else \
            "export to a folder you can write to"
        raise InputError(f"cannot write {out}: {err.strerror or err}; {hint}.") from err
    return ExportSummary(len(pairs), left_out["ties"], left_out["both_bad"], "margin" in pairs, out)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict]]:
    try:
        with open(path, "rb") as f:  # bytes, so that a line that is not UTF-8 is named by its number
            for line_no, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
                except UnicodeDecodeError as err:
                    raise InputError(f"line {line_no}: not UTF-8 text (byte 0x{raw[err.start]:02x} at byte "
                                     f"{err.start + 1} of the line); save the file as UTF-8.") from None
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise InputError(f"line {line_no}: not valid JSON ({err.msg}).") from None
                except RecursionError:
                    raise InputError(f"line {line_no}: nested too deeply to be a vote row.") from None
                if not isinstance(row, dict):
                    raise InputError(f"line {line_no}: expected a JSON object, got {type(row).__name__}.")
                yield line_no, row
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror or err}.") from None


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """Rows a batch at a time. Parquet has typed nulls where JSONL simply omits a field: they are dropped so that
    both read the same, and so are the columns pandas writes for an index."""
    line_no = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=_PARQUET_BATCH_ROWS):
            for row in batch.to_pylist():
                line_no += 1
                yield line_no, {k: v for k, v in row.items() if not _is_null(v) and not k.startswith("__index_level_")}
    except (pa.ArrowException, OSError) as err:
        raise InputError(f"{path.name}: not a readable Parquet file ({err}); write it again, e.g. with pandas' "
                         "to_parquet.") from None


def _imported_generation(prompt: Prompt, text: str) -> Generation:
    parsed = parse_list(text)
    return Generation(prompt=prompt, text=text, policy=IMPORTED_POLICY, well_formed=parsed.well_formed,
                      n_items=len(parsed.items))


def _is_null(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _kind(value: object) -> str:
    kinds = {list: "a list", dict: "an object", bool: "true/false", int: "a number", float: "a number"}
    return kinds.get(type(value), type(value).__name__)


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _timestamp(value: object, line_no: int) -> datetime | None:
    """An ISO 8601 time (any zone; a Parquet timestamp too) as naive UTC, in years 2000-2099; None when absent."""
    if value is None or value == "":
        return None
    shown = value if isinstance(value, str) else str(value)
    out_of_range = InputError(f"line {line_no}: created_at {shown!r} is out of range; use a time in the years "
                              f"{_EARLIEST.year} to {_LATEST.year - 1}, like 2026-11-21T10:30:00Z.")
    if isinstance(value, str):
        year = re.match(r"[+-]?(\d+)-", value)  # before parsing: year 0 and 10000 are not even datetimes
        if year and not _EARLIEST.year <= int(year[1]) < _LATEST.year:
            raise out_of_range
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            value = None
    if not isinstance(value, datetime):  # numbers are refused: seconds? milliseconds? nobody can tell
        raise InputError(f"line {line_no}: created_at must be an ISO 8601 time like 2026-11-21T10:30:00Z.")
    if not _EARLIEST.year <= value.year < _LATEST.year:  # checked before the zone shift, which could overflow
        raise out_of_range
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if value.tzinfo:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    if not _EARLIEST <= value < _LATEST:
        raise out_of_range
    return value
