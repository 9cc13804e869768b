"""The preference and demonstration snapshots a run takes of the store (core/train/snapshot.py): which votes train,
the split by request however it arrives, and whole-or-nothing parquet writes."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from core.collect.arena import Arena
from core.collect.generate import Generator
from core.collect.library import load_prompts
from core.model import load
from core.paths import DATA_DIR
from core.records import (
    Generation,
    InputError,
    Pair,
    Policy,
    Prompt,
    SamplingSettings,
)
from core.runs import (
    read_json,
    write_parquet,
)
from core.store.preferences import vote_from_row
from core.train.snapshot import (
    split_for,
    take_demonstrations,
    take_preferences,
    take_prompts,
)


# ---- the preference snapshot ---------------------------------------------------------------------------------------
def vote_on(store, prompt: Prompt, choice: str, strength: int | None = None, left="1. a", right="1. b") -> str:
    policy = Policy(base_model="models/tiny")
    pair = Pair(prompt=prompt, left=Generation(prompt=prompt, text=left, policy=policy, well_formed=False, n_items=1),
                right=Generation(prompt=prompt, text=right, policy=policy, well_formed=False, n_items=1))
    return store.record_vote(store.record_pair(pair), choice, "alice", strength=strength)


def test_split_for_keeps_library_splits_and_hashes_the_rest():
    assert split_for("p-anything", "eval", 0.0) == "eval" and split_for("p-anything", "train", 1.0) == "train"
    assert split_for("p-custom", None, 0.0) == "train" and split_for("p-custom", None, 1.0) == "eval"
    ids = [f"p-{n}" for n in range(2000)]
    assert [split_for(i, None, 0.2) for i in ids] == [split_for(i, None, 0.2) for i in ids]  # stable
    assert 0.16 < sum(split_for(i, None, 0.2) == "eval" for i in ids) / len(ids) < 0.24


def test_take_preferences_snapshots_standing_decided_votes_with_their_split(store, tmp_path):
    train_prompt = load_prompts(split="train")[0]
    eval_prompt = load_prompts(split="eval")[0]
    vote_on(store, train_prompt, "left", strength=3, left="1. won", right="1. lost")
    vote_on(store, eval_prompt, "right", left="1. lost too", right="1. won too")
    vote_on(store, Prompt(text="Top 5 custom things"), "tie")
    store.retract_vote(vote_on(store, Prompt(text="Top 5 retracted things"), "left"), "alice")

    _, pairs, lineage = take_preferences(store, tmp_path, eval_fraction=0.0)

    by_prompt = pairs.set_index("prompt")
    assert list(by_prompt.index) == [train_prompt.text, eval_prompt.text]
    assert tuple(by_prompt.loc[train_prompt.text, ["chosen", "rejected", "split", "margin"]]) == \
        ("1. won", "1. lost", "train", 1.0)
    assert tuple(by_prompt.loc[eval_prompt.text, ["chosen", "rejected", "split", "margin"]]) == \
        ("1. won too", "1. lost too", "eval", 0.0)
    assert {"comparison_id", "prompt_id"} <= set(pairs.columns)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "data" / "pairs.parquet"), pairs)
    assert len(pd.read_parquet(tmp_path / "data" / "votes.parquet")) == 3  # standing votes, tie included

    assert read_json(tmp_path / "data" / "lineage.json") == lineage
    assert {k: lineage[k] for k in ("votes", "pairs", "ties", "both_bad", "train_pairs", "eval_pairs")} == \
        {"votes": 3, "pairs": 2, "ties": 1, "both_bad": 0, "train_pairs": 1, "eval_pairs": 1}
    assert lineage["database"] == str(store.path) and lineage["newest_vote_at"]


def imported(text: str, line_no: int = 1):
    return vote_from_row({"prompt": text, "response_a": "1. a", "response_b": "1. b", "choice": "a"}, line_no)


def test_a_held_out_request_stays_held_out_however_it_arrives(store, tmp_path, tiny_model_dir):
    """Typed in the arena, imported from a file, stored earlier as a custom prompt, or served from the library: a
    library request keeps its library split (with eval_fraction 0 every other prompt goes to train)."""
    held_out = load_prompts(split="eval")[:6]
    arena = Arena(store, Generator(load(tiny_model_dir, device="cpu")), load_prompts(split="train")[:2],
                  sampling=SamplingSettings(max_new_tokens=2), queue_size=0, seed=0)
    typed = arena.custom_pair(" " + held_out[0].text.replace(" ", "  \u200b", 1))
    arena.vote(typed.pair_id, "left", "alice")
    store.import_votes([imported(held_out[1].text), imported(held_out[2].text.replace(" ", "\t ") + "\ufeff", 2)])
    vote_on(store, Prompt(text=held_out[3].text), "right")  # a custom row from before the arena looked texts up...
    vote_on(store, held_out[3], "left")  # ...which a later library pair for the same text does not overwrite
    vote_on(store, Prompt(text="  ".join(held_out[4].text.split()), source="custom"), "left")
    vote_on(store, held_out[5], "left")  # served from the library

    votes, pairs, lineage = take_preferences(store, tmp_path, eval_fraction=0.0)

    assert len(votes) == 7 and set(votes.split) == {"eval"}
    assert set(pairs.split) == {"eval"} and lineage["train_pairs"] == 0
    assert set(pd.read_parquet(tmp_path / "data" / "votes.parquet").split) == {"eval"}


def test_a_custom_request_still_gets_the_hashed_split(store, tmp_path):
    vote_on(store, Prompt(text="Top 5 things no library holds"), "left")
    votes, _, _ = take_preferences(store, tmp_path, eval_fraction=0.0)
    assert list(votes.split) == ["train"]
    votes, _, _ = take_preferences(store, tmp_path, eval_fraction=1.0)
    assert list(votes.split) == ["eval"]


def test_demonstrations_for_held_out_requests_never_train(store, tmp_path):
    good = "1. a - x\n2. b - x\n3. c - x\n4. d - x\n5. e - x"
    for prompt in load_prompts(split="eval")[:10]:  # stored as custom, as before the arena looked texts up
        store.record_demonstration(Prompt(text=prompt.text), good, "alice")
        store.record_demonstration(Prompt(text=prompt.text + "\u200b "), good, "alice")
    train_prompt = load_prompts(split="train")[0]
    store.record_demonstration(Prompt(text=train_prompt.text), good, "alice")

    demos, _ = take_demonstrations(store, tmp_path, seed_lists="off")

    assert list(demos.prompt) == [train_prompt.text] and list(demos.split) == ["train"]


def test_training_prompts_from_a_file_leave_the_held_out_requests_out(tmp_path):
    """--prompts-file data/prompts.jsonl would otherwise put the 72 held-out requests into PPO's rollouts."""
    prompts, lineage = take_prompts(tmp_path, "train", str(DATA_DIR / "prompts.jsonl"))
    train, held_out = load_prompts(split="train"), load_prompts(split="eval")
    assert prompts == [p.text for p in train]
    assert lineage["held_out_prompts_dropped"] == len(held_out) and lineage["train_prompts"] == len(train)
    only_held_out = tmp_path / "eval.jsonl"
    only_held_out.write_text("".join(json.dumps({"prompt": " " + p.text + "\u200b"}) + "\n" for p in held_out))
    with pytest.raises(InputError, match="outside the held-out requests"):
        take_prompts(tmp_path, "train", str(only_held_out))

def test_a_parquet_write_that_dies_midway_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "scores.parquet"
    write_parquet(path, pd.DataFrame({"score": [1.0]}))

    def torn(self, target, **kwargs):
        target.write_bytes(b"PAR1 half a file")
        raise OSError("disk full")
    monkeypatch.setattr(pd.DataFrame, "to_parquet", torn)
    with pytest.raises(OSError):
        write_parquet(path, pd.DataFrame({"score": [2.0]}))
    monkeypatch.undo()
    assert pd.read_parquet(path).score.tolist() == [1.0]
