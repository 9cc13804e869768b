"""Judge a policy against another on held-out requests: reward-model win rate and well-formed top-5 rate.

    python -m core eval --policy models/runs/ppo-... --against base --reward-model models/runs/reward-...
    python -m core eval --policy models/runs/ppo-... --against models/runs/sft-... --prompts 72 --out report.json

Both policies answer the same held-out library requests (the eval split no stage trains on), sampled with the same
seed. The reward model scores every answer; a request is a win for `--policy` when its list scores higher (ties,
exact equality, count half). Win rate and well-formed rates come with their counts and 95 % Wilson intervals
(core/win_rate.py). A reward model judges only as well as it agrees with the person who voted: read the win rate
beside the reward model's held-out accuracy.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from core.collect.generate import Generator
from core.collect.library import load_prompts
from core.config import check, knob
from core.engine import ENGINES
from core.lists import parse_list
from core.model import load
from core.records import SamplingSettings
from core.runs import adapter_dir, read_adapter_config
from core.stages import POLICY_MADE_BY, REWARD_MADE_BY
from core.train.reward_model import RewardScorer
from core.win_rate import WinRate, wilson_interval, win_rate


@dataclass
class EvalConfig:
    policy: str = knob("", "the policy to judge: a run or adapter folder, or 'base'")
    against: str = knob("base", "what it is compared with: a run or adapter folder, or 'base'")
    reward_model: str = knob("", "reward-model run folder that judges each pair (empty: well-formed rates only)")
    base_model: str = knob("", "base model under both policies; empty: $RLHF_BASE_MODEL or the embedded one")
    prompts: int = knob(72, "held-out requests to answer (at most the 72 of the eval split)")
    max_new_tokens: int = knob(160, "token budget per list")
    temperature: float = knob(0.8, "sampling temperature for both policies")
    seed: int = knob(0, "sampling seed (the same for both policies)")
    device: str = knob("auto", "auto (GPU if present), cpu or cuda", choices=("auto", "cpu", "cuda"))
    engine: str = knob("auto", "sampling engine: auto (llama.cpp, else int8, on a CPU), llamacpp, int8 or plain "
                       "(fp32, the fallback; core/engine.py)",
                       choices=ENGINES)
    out: str = knob("", "write the report (figures and every sample) to this JSON file")

    def __post_init__(self):
        check(bool(self.policy), "name the policy to judge: --policy models/runs/ppo-<time> (or base).")
        check(self.prompts > 0 and self.max_new_tokens > 0, "prompts and max-new-tokens must be positive.")
        check(self.temperature > 0, "temperature must be positive, e.g. 0.8.")


def outcome(score: float, other: float) -> str:
    return "win" if score > other else "loss" if score < other else "tie"


def proportion(hits: int, n: int) -> dict:
    low, high = wilson_interval(hits, n)
    return {"hits": hits, "n": n, "rate": hits / n if n else None, "low": low, "high": high}


def sample(loaded, policies: dict[str, str], requests: list[str], cfg: EvalConfig,
           seeds: dict[str, int] | None = None) -> dict[str, list]:
    """Each policy's answers to `requests`: {label: [Completion]}; adapters share the one loaded base. Every label
    samples with cfg.seed unless `seeds` gives it its own (several draws of one policy: labels naming the same run)."""
    generator = Generator(loaded)
    adapters = {}
    for label, spec in policies.items():  # every adapter loaded (and checked) before the first list is sampled
        if spec != "base":
            read_adapter_config(spec, "CAUSAL_LM", POLICY_MADE_BY)
            adapters[label] = str(adapter_dir(spec))
            generator.add_adapter(adapters[label])
    sampling = SamplingSettings(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens)
    return {label: generator.answer_all(requests, adapters.get(label), sampling, (seeds or {}).get(label, cfg.seed))
            for label in policies}


def evaluate(cfg: EvalConfig) -> dict:
    requests = [p.text for p in load_prompts(split="eval")][:cfg.prompts]
    if cfg.reward_model:  # checked before minutes of sampling, not after
        read_adapter_config(cfg.reward_model, "SEQ_CLS", REWARD_MADE_BY)
    loaded = load(cfg.base_model or None, cfg.device, cfg.engine)
    answers = sample(loaded, {"policy": cfg.policy, "against": cfg.against}, requests, cfg)
    report = {"policy": cfg.policy, "against": cfg.against, "reward_model": cfg.reward_model or None,
              "prompts": len(requests), "engine": loaded.engine, "well_formed": {}, "mean_score": {}}
    for label, completions in answers.items():
        ok = sum(parse_list(c.text).well_formed for c in completions)
        report["well_formed"][label] = proportion(ok, len(completions))
    scores = {}
    if cfg.reward_model:
        scorer = RewardScorer.from_folder(cfg.reward_model, device=cfg.device)
        scores = {label: scorer.score(requests, [c.text for c in completions]) for label, completions in answers.items()}
        report["mean_score"] = {label: sum(s) / len(s) for label, s in scores.items()}
        report["win_rate"] = win_rate([outcome(a, b) for a, b in zip(scores["policy"], scores["against"])]).as_dict()
    report["samples"] = [{"prompt": r, **{f"{label}_text": answers[label][i].text for label in answers},
                          **{f"{label}_score": scores[label][i] for label in scores}} for i, r in enumerate(requests)]
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(json.dumps(report, indent=2) + "\n")
    return report


def summary(report: dict) -> str:
    lines = [f"{report['prompts']} held-out requests"]
    for label in ("policy", "against"):
        wf = report["well_formed"][label]
        score = report["mean_score"].get(label)
        lines.append(f"  {label:8} {report[label]}: well-formed {wf['hits']}/{wf['n']} = {wf['rate']:.1%} "
                     f"[{wf['low']:.1%}, {wf['high']:.1%}]" + (f", mean reward {score:+.3f}" if score is not None else ""))
    if "win_rate" in report:
        w = report["win_rate"]
        lines.append(f"  reward-model win rate of policy vs against: {WinRate(w['wins'], w['losses'], w['ties'])}")
    return "\n".join(lines)
