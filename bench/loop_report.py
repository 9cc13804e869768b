"""The loop benchmark's report (bench/loop.py step 8): goals, figures with counts and intervals, plotly curves.

    loop.json  everything measured, with the annotator's taste (`taste`; the held-out samples in loop_samples.jsonl
               beside it)
    loop.md    the tables
    loop.html  over-optimisation (reward-model score and annotator win rate against sqrt(KL)), PPO per update, and
               the final rates with their 95 % intervals (plotly, loaded from its CDN)
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from bench.annotator import TASTES
from core.judge.evaluate import proportion
from core.judge.overoptimisation import curve
from core.runs import RunFolder, read_json, read_jsonl

GOALS = {  # name: (what, threshold, higher is better)
    "rm_heldout_accuracy": ("reward-model held-out accuracy against the annotator's votes", 0.85, True),
    "ppo_vs_base_annotator": ("annotator prefers the PPO policy to the base", 0.75, True),
    "ppo_well_formed": ("well-formed top-5 rate after PPO", 0.95, True),
    "minutes_after_votes": ("training and evaluation wall time (steps 3-7), minutes", 30.0, False),
}


def summarise(cfg: dict, runs: dict, votes: dict, stored: dict, wall: dict, judgements: list, evaluation: dict) -> dict:
    calibration = read_json(RunFolder(runs["reward"]).calibration)
    rm = proportion(calibration.get("correct") or 0, calibration.get("pairs") or 0)
    figures = {"rm_heldout_accuracy": rm["rate"],
               "ppo_vs_base_annotator": evaluation["annotator_win_rate"]["ppo_vs_base"]["rate"],
               "ppo_well_formed": evaluation["well_formed"]["ppo"]["rate"],
               "minutes_after_votes": wall["after_votes"] / 60}
    goals = {name: {"what": what, "goal": goal, "value": figures[name],
                    "reached": figures[name] is not None and (figures[name] >= goal if up else figures[name] <= goal)}
             for name, (what, goal, up) in GOALS.items()}
    lineage = read_json(RunFolder(runs["reward"]).lineage)
    samples = evaluation.pop("samples")
    reward_model = {"heldout": rm, "ece": calibration.get("ece"), "train_pairs": lineage.get("train_pairs"),
                    "eval_pairs": lineage.get("eval_pairs"), "ties": lineage.get("ties"),
                    "both_bad": lineage.get("both_bad"),
                    **{k: v for k, v in lineage.items() if k.startswith("pairs_from_")}}
    taste = cfg.get("taste", "form")  # loops from before --taste all voted with `form`
    return {"taste": taste, "taste_rules": TASTES[taste].summary, "config": cfg, "runs": runs, "goals": goals,
            "votes": votes, "stored": stored, "reward_model": reward_model, "evaluation": evaluation,
            "overoptimisation": json.loads(curve(Path(runs["ppo"])).to_json(orient="records")),
            "judgements": judgements, "wall_s": wall, "samples": samples}


def _rate(p: dict) -> str:
    return "n/a (0)" if not p["n"] else f"{p['rate']:.1%} [{p['low']:.1%}, {p['high']:.1%}] (n={p['n']})"


def mean_se(values: list[float]) -> dict:
    """Mean with its standard error (NaN for one value) and count: a taste's mean utility over lists."""
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else math.nan
    return {"mean": statistics.fmean(values), "se": se, "n": len(values)}


def win_cell(w: dict | None) -> str:
    """A win rate as a table cell: rate [95 % interval] (W-L-T), or "-" where there is none."""
    return f"{w['rate']:.1%} [{w['low']:.1%}, {w['high']:.1%}] ({w['wins']}-{w['losses']}-{w['ties']})" if w else "-"


def _win(w: dict) -> str:
    return "n/a" if not w["n"] else (f"{w['rate']:.1%} [{w['low']:.1%}, {w['high']:.1%}] "
                                     f"({w['wins']}-{w['losses']}-{w['ties']} of {w['n']})")


def _written_and_rated(v: dict) -> str:  # loops from before 2026-12-07 wrote no both-bad lists and gave no stars
    return (f", {v['both_bad_demonstrations']} lists written after 'both bad', {v['ratings']} ratings"
            if "ratings" in v else "")


def _sources(rm: dict) -> str:
    sources = {k.removeprefix("pairs_from_"): n for k, n in rm.items() if k.startswith("pairs_from_") and n}
    return f" (from {', '.join(f'{k} {n}' for k, n in sources.items())})" if sources else ""


def markdown(r: dict) -> str:
    e, rm, v = r["evaluation"], r["reward_model"], r["votes"]
    lines = [f"# RLHF loop benchmark: taste `{r['taste']}`", "", f"The annotator's taste: {r['taste_rules']}.", "",
             f"{v['votes']} votes ({v['left']} left, {v['right']} right, {v['tie']} tie, {v['both_bad']} both bad; "
             f"{v['own_requests']} on the annotator's own requests), {v['demonstrations']} demonstrations"
             f"{_written_and_rated(v)}; reward model: {rm['train_pairs']} train / {rm['eval_pairs']} held-out pairs"
             f"{_sources(rm)}. "
             f"Final evaluation on {e['prompts']} held-out requests.", "",
             "| goal | target | measured | reached |", "|---|---|---|---|"]
    for g in r["goals"].values():
        value = "n/a" if g["value"] is None else f"{g['value']:.3g}"
        lines.append(f"| {g['what']} | {'>=' if 'minutes' not in g['what'] else '<='} {g['goal']} | {value} | "
                     f"{'yes' if g['reached'] else 'no'} |")
    lines += ["", "| figure | value [95 % Wilson] |", "|---|---|",
              f"| reward model, held-out votes: accuracy | {_rate(rm['heldout'])}, ECE {rm['ece']} |",
              f"| reward model agrees with the annotator on the evaluation pairs | {_rate(e['rm_agrees_with_annotator'])} |"]
    for k in ("base", "sft", "ppo"):
        lines.append(f"| well-formed top-5 rate, {k} | {_rate(e['well_formed'][k])} |")
    for pair, w in e["annotator_win_rate"].items():
        lines.append(f"| annotator win rate {pair.replace('_', ' ')} (W-L-T, ties half) | {_win(w)} |")
    for pair, w in e["rm_win_rate"].items():
        lines.append(f"| reward-model win rate {pair.replace('_', ' ')} | {_win(w)} |")
    lines += ["", "Over-optimisation (PPO held-out evaluations; annotator vs the answers at step 0):", "",
              "| step | sqrt KL | RM score | well-formed | annotator win rate [95 %] (n) |", "|---|---|---|---|---|"]
    for c in r["overoptimisation"]:
        judged = "" if c["judge_n"] is None else \
            f"{c['judge_win_rate']:.2f} [{c['judge_low']:.2f}, {c['judge_high']:.2f}] ({c['judge_n']:.0f})"
        lines.append(f"| {c['step']} | {c['sqrt_kl']:.2f} | {c['rm_score']:+.3f} | {c['well_formed']:.2f} | {judged} |")
    lines += ["", "| stage | wall time |", "|---|---|"]
    lines += [f"| {k.replace('_', ' ')} | {s:.0f} s ({s / 60:.1f} min) |" for k, s in r["wall_s"].items()]
    return "\n".join(lines) + "\n"


def figures(r: dict) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    over = make_subplots(specs=[[{"secondary_y": True}]])
    c = r["overoptimisation"]
    c = [{k: (v if v is not None else float("nan")) for k, v in row.items()} for row in c]
    x = [row["sqrt_kl"] for row in c]
    over.add_scatter(x=x, y=[row["rm_score"] for row in c], name="reward-model score", mode="lines+markers")
    over.add_scatter(x=x, y=[row["judge_win_rate"] for row in c], name="annotator win rate vs step 0",
                     mode="lines+markers", error_y=dict(type="data", symmetric=False,
                                                        array=[row["judge_high"] - row["judge_win_rate"] for row in c],
                                                        arrayminus=[row["judge_win_rate"] - row["judge_low"] for row in c]),
                     secondary_y=True)
    over.update_layout(title=f"Over-optimisation: proxy reward and annotator preference (taste {r['taste']}) "
                             "against sqrt(KL)")
    over.update_xaxes(title="sqrt(KL to the PPO reference), nats^0.5")
    over.update_yaxes(title="mean reward-model score", secondary_y=False)
    over.update_yaxes(title="annotator win rate", range=[0, 1], secondary_y=True)

    rows = [m for m in read_jsonl(Path(r["runs"]["ppo"]) / "metrics.jsonl") if "objective/scores" in m]
    ppo = make_subplots(rows=1, cols=3, subplot_titles=("RM score (raw)", "KL to reference (nats)", "well-formed"))
    for col, key in enumerate(("objective/scores", "objective/kl", "objective/well_formed"), start=1):
        ppo.add_scatter(x=[m["step"] for m in rows], y=[m.get(key) for m in rows], name=key, row=1, col=col)
    ppo.update_layout(title="PPO per update (rollout batch)", showlegend=False)

    e = r["evaluation"]
    bars = go.Figure()
    for label, items in (("well-formed", [(k, e["well_formed"][k]) for k in ("base", "sft", "ppo")]),
                         ("annotator win rate", list(e["annotator_win_rate"].items()))):
        bars.add_bar(name=label, x=[k for k, _ in items], y=[p["rate"] for _, p in items],
                     error_y=dict(type="data", symmetric=False, array=[p["high"] - p["rate"] for _, p in items],
                                  arrayminus=[p["rate"] - p["low"] for _, p in items]))
    bars.update_layout(title=f"Held-out evaluation ({e['prompts']} requests, taste {r['taste']}), 95 % Wilson "
                             "intervals",
                       yaxis_range=[0, 1])
    parts = [fig.to_html(full_html=False, include_plotlyjs="cdn" if i == 0 else False)
             for i, fig in enumerate((over, ppo, bars))]
    return (f"<html><head><meta charset='utf-8'><title>RLHF loop: taste {r['taste']}</title></head><body>"
            + "".join(parts) + "</body></html>")


def write_report(r: dict, out: Path) -> None:
    samples = r.pop("samples")
    with open(out / "loop_samples.jsonl", "w") as f:
        f.writelines(json.dumps(s) + "\n" for s in samples)
    (out / "loop.json").write_text(json.dumps(r, indent=2, default=str) + "\n")
    (out / "loop.md").write_text(markdown(r))
    (out / "loop.html").write_text(figures(r))
