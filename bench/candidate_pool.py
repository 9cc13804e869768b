"""Where bench/label_efficiency.py's candidate lists come from, and the features its informative choice reads.

Sampled once from the base model with the arena's Generator (cached in JSONL, a line a request, so a stopped run
resumes and a rerun samples nothing), or read from one policy's saved lists (a rejection run's samples and a
bench/rejudge.py report), as the arena shows a tuned policy's lists in a later round.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from core.collect.library import text_key
from core.lists import parse_list
from core.model import resolve_base_model
from core.records import Generation, Policy, SamplingSettings
from core.runs import read_json
from core.train.reward_model import RewardScorer


def sample_candidates(load_generator, prompts, k: int, sampling: SamplingSettings, seed: int, cache: Path,
                      made_with: dict) -> dict:
    """{prompt_id: k generations}, one batched generate per request. Requests already in `cache` (a JSONL file,
    one line a request) that were `made_with` the same settings are read back; the rest are sampled (the model
    loads only then) and appended as they come."""
    by_id = {p.prompt_id: p for p in prompts}
    rows = [json.loads(line) for line in cache.read_text().splitlines() if line.strip()] if cache.exists() else []
    pool = {r["prompt_id"]: [from_row(by_id[r["prompt_id"]], g) for g in r["lists"]]
            for r in rows if r["prompt_id"] in by_id and len(r["lists"]) == k and r.get("made_with") == made_with}
    todo, generator = [(n, p) for n, p in enumerate(prompts) if p.prompt_id not in pool], None
    for done, (n, prompt) in enumerate(todo, 1):
        generator = generator or load_generator()
        pool[prompt.prompt_id] = generator.generate(prompt, [generator.base_policy] * k, sampling, seed + n)
        with cache.open("a") as f:
            f.write(json.dumps({"prompt_id": prompt.prompt_id, "made_with": made_with,
                                "lists": [to_row(g) for g in pool[prompt.prompt_id]]}) + "\n")
        if done % 24 == 0 or done == len(todo):
            print(f"sampled {k} lists for {done}/{len(todo)} requests", flush=True)
    return pool


def to_row(g: Generation) -> dict:
    """What a cached candidate keeps: how it was made, not its ids (each showing gets fresh ones)."""
    return {"text": g.text, "policy": vars(g.policy), "well_formed": g.well_formed, "n_items": g.n_items,
            "system_prompt": g.system_prompt, "sampling": vars(g.sampling) if g.sampling else None, "seed": g.seed,
            "num_tokens": g.num_tokens, "finished": g.finished, "latency_ms": g.latency_ms}


def from_row(prompt, row: dict) -> Generation:
    return Generation(prompt=prompt, **{**row, "policy": Policy(**row["policy"]),
                                        "sampling": SamplingSettings(**row["sampling"]) if row["sampling"] else None})


def imported_candidates(candidates_from: str, held_out_from: str, k: int, train_set, eval_set) -> dict:
    """{prompt_id: lists} from one policy's saved lists: a rejection run's first k draws of each train request, and
    a rejudge report's reference policy's first two draws of each held-out request."""
    run = Path(candidates_from)
    if not (run / "samples.jsonl").is_file() or not (run / "config.json").is_file():
        raise SystemExit(f"{run} holds no samples.jsonl and config.json: pass a rejection run's folder "
                         "(python -m core train rejection)")
    if not Path(held_out_from).is_file():
        raise SystemExit(f"{held_out_from} is no file: pass a bench/rejudge.py report (its rejudge.json)")
    made = read_json(run / "config.json")
    policy = Policy(made.get("base_model_resolved") or made.get("base_model") or "base",
                    made.get("sft_adapter") or None)
    draws: dict[str, dict[int, str]] = {}
    for line in (run / "samples.jsonl").read_text().splitlines():
        row = json.loads(line)
        draws.setdefault(text_key(row["prompt"]), {}).setdefault(row["draw"], row["text"])  # a draw's first list
    report = json.loads(Path(held_out_from).read_text())
    ref = report["reference"]
    held_out = {text_key(s["prompt"]): [s[f"{ref}@0"], s[f"{ref}@1"]] for s in report["samples"]}
    pool = {}
    for prompts, lists_of, n, source, pol in (
            (train_set, {p: [t for _, t in sorted(d.items())] for p, d in draws.items()}, k, run / "samples.jsonl",
             policy),
            (eval_set, held_out, 2, held_out_from, Policy(policy.base_model, report["runs"].get(ref)))):
        for prompt in prompts:
            lists = lists_of.get(text_key(prompt.text), [])[:n]
            if len(lists) < n:
                raise SystemExit(f"{source} holds {len(lists)} lists for {prompt.text!r}, not {n}: pass fewer "
                                 "--candidates or requests, or another run")
            parsed = [parse_list(t) for t in lists]
            pool[prompt.prompt_id] = [Generation(prompt, t, pol, p.well_formed, len(p.items))
                                      for t, p in zip(lists, parsed)]
    return pool


def base_features(base_model: str, device: str, prompts, pool: dict, out: Path) -> dict:
    """{prompt_id: (k, H)} the frozen base model's pooled features of each request's candidates (what a reward
    model's score head reads before training), computed once and kept in `out` by a hash of the texts."""
    texts = [(p.text, g.text) for p in prompts for g in pool[p.prompt_id]]
    cache = out / f"features-{hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:12]}.npz"
    if not cache.exists():
        started, parts = time.monotonic(), []
        scorer = RewardScorer.untrained(resolve_base_model(base_model or None), device)
        for start in range(0, len(texts), 192):
            chunk = texts[start:start + 192]
            parts.append(scorer.features([p for p, _ in chunk], [t for _, t in chunk]))
            print(f"base-model features of {start + len(chunk)}/{len(texts)} candidates", flush=True)
        ends = np.cumsum([len(pool[p.prompt_id]) for p in prompts])[:-1]
        rows = np.split(np.concatenate(parts), ends)  # back to one (k, H) block a request
        np.savez(cache, **{p.prompt_id: r for p, r in zip(prompts, rows)})
        print(f"features took {time.monotonic() - started:.0f} s", flush=True)
    saved = np.load(cache)
    return {p.prompt_id: saved[p.prompt_id] for p in prompts}
