"""The data a run trains on, copied out of the live database into the run folder when the run starts.

A run never holds the DuckDB file: the arena keeps writing while training reads its own frozen copy, and the copy
stays beside the adapter so the dashboard can say what a model was trained on (lineage.json).

Held-out split, by prompt (a prompt in both splits would leak): library prompts keep the split they ship with
(data/prompts.jsonl, so every stage holds out the same 72 requests), found by text (`library.text_key`) whatever
split, source or id was stored with it, so a held-out request typed in the arena or imported from a file stays held
out; any other custom or imported prompt is assigned by a hash of its text (as compared), `eval_fraction` of them
to eval.
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from core.collect.library import (
    by_text,
    load_prompts,
    load_seed_demonstrations,
    text_key,
)
from core.records import InputError, prompt_id_for
from core.runs import RunFolder, is_main_process, read_json, write_json
from core.store.database import Store
from core.store.preferences import preference_pairs, read_rows
from core.train.feedback import FeedbackSources, feedback_pairs

DEFAULT_EVAL_FRACTION = 0.2  # share of custom prompts held out, for every stage that does not say otherwise


def split_for(prompt_id: str, library_split, eval_fraction: float) -> str:
    if library_split in ("train", "eval"):
        return library_split
    bucket = int(hashlib.sha1(prompt_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "eval" if bucket < eval_fraction else "train"


def resolved_splits(frame: pd.DataFrame, eval_fraction: float) -> list[str]:
    """The split of each row (columns prompt, split): the library's for a library text, else `split_for`."""
    library = by_text(load_prompts())
    splits = []
    for text, stored in zip(frame.prompt, frame.split):
        known = library.get(text_key(text))
        # hashed by its text as compared (the stored id for any ordinary text): "Top 5  games" is "Top 5 games"
        splits.append(split_for(prompt_id_for(text_key(text)), known.split if known else stored, eval_fraction))
    return splits


def _lineage(run_dir: Path, store: Store | None, **counts) -> dict:
    """Add to data/lineage.json what was taken and from where (a stage may take several snapshots)."""
    path = RunFolder(run_dir).lineage
    lineage = read_json(path) | {"taken_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **counts}
    if store is not None:
        lineage["database"] = str(store.path)
    if is_main_process():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, lineage)
    return lineage


def _save(frame: pd.DataFrame, path: Path) -> None:
    """Write a snapshot file (rank 0 only: under `accelerate launch` every process takes the same snapshot)."""
    if not is_main_process():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True, force_ascii=False)


def take_preferences(store: Store, run_dir: Path, eval_fraction: float,
                     sources: FeedbackSources = FeedbackSources(), use_margin: bool = True
                     ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Standing votes -> data/votes.parquet (all of them, split resolved); with the arena's demonstrations
    (data/arena_demonstrations.parquet) and ratings (data/ratings.parquet), every switched-on source's pairs
    (core/train/feedback.py) -> data/pairs.parquet, what trains.

    Returns (votes, pairs, lineage); pairs: source, comparison_id, prompt_id, split, prompt, chosen, rejected, margin.
    """
    folder = RunFolder(run_dir)
    votes, demos, ratings = store.votes(), store.demonstrations(), store.ratings()
    for frame, name in ((votes, "votes.parquet"), (demos, "arena_demonstrations.parquet"), (ratings, "ratings.parquet")):
        frame["split"] = resolved_splits(frame, eval_fraction)
        _save(frame, folder.snapshot(name))
    pairs, from_each = feedback_pairs(votes, demos, ratings, sources, use_margin)
    _, left_out = preference_pairs(votes)
    _save(pairs, folder.snapshot("pairs.parquet"))
    newest = votes.created_at.max() if len(votes) else None
    lineage = _lineage(run_dir, store, votes=len(votes), pairs=len(pairs), **left_out, **from_each,
                       train_pairs=int((pairs.split == "train").sum()), eval_pairs=int((pairs.split == "eval").sum()),
                       newest_vote_at=None if newest is None else str(newest),
                       rounds={str(name): int(n) for name, n in votes["round"].fillna("(no round)").value_counts()
                               .items()})  # votes per round of collection (core/train/rounds.py)
    return votes, pairs, lineage


def save_pairs(run_dir: Path, pairs: pd.DataFrame, **counts) -> None:
    """Replace the snapshot's pairs.parquet with the pairs that train when they are not the votes' own
    (`dpo --pairs-from`: the reward model's on-policy pairs, beside the votes' held-out ones); `counts` go into
    data/lineage.json over the votes' own (train_pairs, where the pairs came from)."""
    _save(pairs, RunFolder(run_dir).snapshot("pairs.parquet"))
    _lineage(run_dir, None, **counts)


SEED_LISTS = ("keep", "fill", "off")


def take_demonstrations(store: Store | None, run_dir: Path, seed_lists: str = "fill",
                        own_weight: int = 1) -> tuple[pd.DataFrame, dict]:
    """The arena's demonstrations plus the seed lists (data/demonstrations.jsonl) -> data/demonstrations.jsonl.

    How the person's lists and the shipped ones combine (the seed lists have one style, "Name - explanation"; a
    person whose taste differs must be able to win): `seed_lists` keep: all seed lists; fill: a seed list only for
    a request the person wrote none for, so theirs replace the shipped one where the two disagree; off: theirs only.
    Each of the person's lists appears `own_weight` times. Columns: prompt, response, source, split. Only
    train-split prompts are kept, so eval stays held out.
    """
    arena = store.demonstrations() if store is not None else pd.DataFrame()
    if len(arena):
        arena["split"] = resolved_splits(arena, DEFAULT_EVAL_FRACTION)
    own = pd.DataFrame([{"prompt": r.prompt, "response": r.text, "source": r.source, "split": r.split}
                        for r in arena.itertuples()], columns=["prompt", "response", "source", "split"])
    own = own[own.split == "train"].drop_duplicates(["prompt", "response"])
    seeds = pd.DataFrame([{"prompt": d.prompt.text, "response": d.response, "source": "seed", "split": d.prompt.split}
                          for d in (load_seed_demonstrations() if seed_lists != "off" else [])],
                         columns=["prompt", "response", "source", "split"])
    seeds = seeds[seeds.split == "train"]
    written = {text_key(prompt) for prompt in own.prompt}
    copied = pd.Series(list(zip(seeds.prompt, seeds.response)), index=seeds.index, dtype=object).isin(
        set(zip(own.prompt, own.response)))  # a seed list the person saved unchanged counts as theirs
    replaced = (seeds.prompt.map(text_key).isin(written) if seed_lists == "fill" else copied) | copied
    demos = pd.concat([seeds[~replaced], *[own] * own_weight], ignore_index=True)
    _save(demos, RunFolder(run_dir).snapshot("demonstrations.jsonl"))
    newest = arena.created_at.max() if len(arena) else None
    lineage = _lineage(run_dir, store, demonstrations=len(demos), seed=int((demos.source == "seed").sum()),
                       from_arena=len(own), own_weight=own_weight, seed_replaced=int(replaced.sum()),
                       newest_demonstration_at=None if newest is None else str(newest))
    return demos, lineage


def note_reward_model(run_dir: Path, reward_model: str) -> dict:
    """data/lineage.json of a run that learns from a reward model (PPO, RLOO, rejection sampling): the reward run,
    and the votes per round of collection that trained it, copied from its own lineage (`rounds`; {} for a bare
    adapter folder, which has none): the rounds whose votes this policy learned from, at one remove."""
    theirs = read_json(RunFolder(reward_model).lineage)
    return _lineage(Path(run_dir), None, reward_model=str(reward_model), rounds=theirs.get("rounds", {}))


def take_prompts(run_dir: Path, split: str, path: str | None = None) -> tuple[list[str], dict]:
    """Library prompts of one split (or every prompt of the JSONL at `path`) -> data/prompts_<split>.jsonl:
    PPO's rollout prompts, the stages' eval prompts. Training prompts from a file never include a held-out library
    request (found by text, as everywhere here): the file may well be data/prompts.jsonl itself."""
    counts = {}
    if path:
        prompts = [row["prompt"] for _, row in read_rows(Path(path)) if isinstance(row.get("prompt"), str)]
        if split == "train":
            held_out = {text_key(p.text) for p in load_prompts(split="eval")}
            kept = [p for p in prompts if text_key(p) not in held_out]
            counts["held_out_prompts_dropped"] = len(prompts) - len(kept)
            prompts = kept
        if not prompts:
            raise InputError(f"{path} holds no rows with a \"prompt\" field outside the held-out requests.")
    else:
        prompts = [p.text for p in load_prompts(split=split)]
    _save(pd.DataFrame({"prompt": prompts}), RunFolder(run_dir).snapshot(f"prompts_{split}.jsonl"))
    return prompts, _lineage(Path(run_dir), None, **{f"{split}_prompts": len(prompts)}, **counts)
