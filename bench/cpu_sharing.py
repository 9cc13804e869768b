"""Two torch processes on the same cores: what OpenMP's idle spinning costs the one that samples.

    .venv/bin/python -m bench.cpu_sharing [--tokens 10] [--spins default,10000,1000]

The arena samples while a training run (or a benchmark) computes on the same 2 cores. For each GOMP_SPINCOUNT
setting, a "trainer" process (the embedded model sampling at batch 16 in a loop) starts with that setting, and a
"sampler" process with the same setting times --tokens cached decoding steps of the embedded model at batch 2
(one token of a pair), first alone and then beside the trainer. core/__init__.py sets GOMP_SPINCOUNT=10000 for
every process of the project unless the user set it. Prints a table and, last, one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SAMPLER = """
import time, torch
from core.collect.generate import chat_text
from core.model import load
loaded = load(None, "cpu", "plain")
model, tok = loaded.model, loaded.tokenizer
batch = tok([chat_text(tok, "Top 5 fruits")] * 2, return_tensors="pt", add_special_tokens=False)
with torch.inference_mode():
    cache = model(**batch, use_cache=True).past_key_values
    token = batch.input_ids[:, -1:]
    model(input_ids=token, past_key_values=cache, use_cache=True)
    started = time.perf_counter()
    for _ in range({tokens}):
        cache = model(input_ids=token, past_key_values=cache, use_cache=True).past_key_values
print((time.perf_counter() - started) / {tokens} * 1000)
"""
# another process of the project at work: the same model sampling at batch 16 (a PPO rollout, an evaluation), many
# short parallel regions a step, as training and sampling both are on a model this size
TRAINER = """
import torch
from core.collect.generate import chat_text
from core.model import load
loaded = load(None, "cpu", "plain")
batch = loaded.tokenizer([chat_text(loaded.tokenizer, "Top 5 rivers")] * 16, return_tensors="pt",
                         add_special_tokens=False)
with torch.inference_mode():
    while True:
        loaded.model.generate(**batch, do_sample=True, max_new_tokens=64, min_new_tokens=64)
"""


def env_with(spins: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    return env if spins == "default" else {**env, "GOMP_SPINCOUNT": spins}


def ms_per_token(spins: str, tokens: int) -> float:
    """The sampler's milliseconds per decoding step under that setting."""
    code = SAMPLER.format(tokens=tokens)
    if spins == "default":  # core sets 10000 on import unless told otherwise: say libgomp's own default
        code = "import os; os.environ['GOMP_SPINCOUNT'] = '300000'\n" + code
    done = subprocess.run([sys.executable, "-c", code], env=env_with(spins), capture_output=True, text=True,
                          check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=10)
    parser.add_argument("--spins", default="default,10000,1000")
    args = parser.parse_args()
    rows = []
    for spins in args.spins.split(","):
        alone = ms_per_token(spins, args.tokens)
        code = TRAINER if spins != "default" else "import os; os.environ['GOMP_SPINCOUNT'] = '300000'\n" + TRAINER
        trainer = subprocess.Popen([sys.executable, "-c", code], env=env_with(spins))
        try:
            time.sleep(8)  # loaded and sampling
            shared = ms_per_token(spins, args.tokens)
        finally:
            trainer.kill()
            trainer.wait()
        rows.append({"spins": spins, "alone_ms": round(alone, 1), "beside_trainer_ms": round(shared, 1)})
        print(f"GOMP_SPINCOUNT={spins:>8}: {alone:7.1f} ms/token alone, {shared:8.1f} ms/token beside a trainer",
              flush=True)
    print(json.dumps({"bench": "cpu_sharing", "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
                      "rows": rows}))


if __name__ == "__main__":
    main()
