"""Plotly figures for the dashboard (and the benchmarks' reports): frames in, figures out, no UI code.

Kept apart from the pages so a figure can be tested, and reused in an HTML report, without Streamlit.
"""
from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.records import short_policy_names

CHOICE_COLOURS = {"left": "#4c78a8", "right": "#f58518", "tie": "#9d9d9d", "both_bad": "#e45756"}


def _layout(fig: go.Figure, title: str, x: str = "", y: str = "", height: int = 300) -> go.Figure:
    # the legend goes under the plot: above it, it collides with the title and plotly's toolbar
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, height=height + 40,
                      margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", yanchor="top", y=-0.25, x=0))
    return fig


def curves(frames: dict[str, pd.DataFrame], keys: list[str], title: str) -> go.Figure:
    """One line per (run, metric) against step; several runs overlay on the same axes."""
    fig = go.Figure()
    for run, frame in frames.items():
        for key in keys:
            if key not in frame:
                continue
            points = frame[["step", key]].apply(pd.to_numeric, errors="coerce").dropna()
            if points.empty:
                continue
            name = key if len(frames) == 1 else f"{run} · {key}"  # a run's folder name is the user's to choose
            fig.add_trace(go.Scatter(x=points.step, y=points[key], mode="lines+markers", name=_plain([name])[0],
                                     marker=dict(size=4)))
    return _layout(fig, title, "step")


def votes_per_day(per_day: pd.DataFrame) -> go.Figure:
    fig = go.Figure([go.Bar(x=g.day, y=g.votes, name=choice, marker_color=CHOICE_COLOURS.get(choice))
                     for choice, g in per_day.groupby("choice")])
    fig.update_layout(barmode="stack")
    return _layout(fig, "Votes per day", "day", "votes")


def choice_mix(choices: pd.DataFrame) -> go.Figure:
    fig = go.Figure(go.Bar(x=choices.choice, y=choices.votes,
                           marker_color=[CHOICE_COLOURS.get(c, "#888") for c in choices.choice]))
    return _layout(fig, "Choice mix", "", "votes")


def histogram(frame: pd.DataFrame, x: str, y: str, title: str, x_title: str) -> go.Figure:
    return _layout(go.Figure(go.Bar(x=frame[x], y=frame[y])), title, x_title, y)


def reliability(bins: pd.DataFrame) -> go.Figure:
    """Reliability diagram: accuracy against mean confidence per bin, with the diagonal of perfect calibration."""
    fig = go.Figure(go.Scatter(x=[0.5, 1], y=[0.5, 1], mode="lines", name="calibrated",
                               line=dict(dash="dash", color="#999")))
    if not bins.empty:
        shown = bins.dropna(subset=["accuracy"])
        fig.add_trace(go.Scatter(x=shown.confidence, y=shown.accuracy, mode="lines+markers+text", name="model",
                                 text=[f"n={c}" for c in shown["count"]], textposition="top center"))
    fig.update_yaxes(range=[0, 1.12])  # room for the n= labels above a perfect bin
    return _layout(fig, "Calibration (reliability diagram)", "confidence (model's probability of its choice)",
                   "accuracy")


def accuracy_by_margin(rows: pd.DataFrame) -> go.Figure:
    if rows.empty:
        return _layout(go.Figure(), "Accuracy by score gap")
    labels = [f"{lo:g}-{hi:g}" if hi != float("inf") else f">={lo:g}" for lo, hi in zip(rows.low, rows.high)]
    fig = go.Figure(go.Bar(x=labels, y=rows.accuracy, text=[f"n={c}" for c in rows["count"]], textposition="auto"))
    fig.update_yaxes(range=[0, 1.12])
    return _layout(fig, "Accuracy by score gap |r_left - r_right|", "score gap", "accuracy")


def overoptimisation(curve: pd.DataFrame) -> go.Figure:
    """Reward-model score and the judge's win rate against sqrt(KL): reward hacking shows as the curves parting
    (Gao et al. 2022 plot gold and proxy reward against sqrt(KL) the same way)."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    if not curve.empty:
        fig.add_trace(go.Scatter(x=curve.sqrt_kl, y=curve.rm_score, mode="lines+markers", name="reward-model score"),
                      secondary_y=False)
        if "judge_win_rate" in curve and curve.judge_win_rate.notna().any():
            judged = curve.dropna(subset=["judge_win_rate"])
            fig.add_trace(go.Scatter(
                x=judged.sqrt_kl, y=judged.judge_win_rate, mode="lines+markers", name="annotator win rate",
                error_y=dict(type="data", symmetric=False, array=judged.judge_high - judged.judge_win_rate,
                             arrayminus=judged.judge_win_rate - judged.judge_low)), secondary_y=True)
    fig.update_yaxes(title_text="reward-model score (held-out)", secondary_y=False)
    fig.update_yaxes(title_text="win rate vs start", range=[0, 1], secondary_y=True)
    return _layout(fig, "Over-optimisation: reward against sqrt(KL)", "sqrt(KL to the reference)")


def _plain(names) -> list[str]:
    """Names as plotly shows them: it reads a subset of HTML in labels (<b>, <a href>), so a name is escaped."""
    return [html.escape(str(n)) for n in names]


def rating_intervals(table: pd.DataFrame) -> go.Figure:
    """Each policy's rating with its 95 % interval as error bars, best first (Chatbot Arena's bootstrap plot)."""
    fig = go.Figure(go.Scatter(
        x=_plain(short_policy_names(table.policy)), y=table.rating, hovertext=_plain(table.policy),
        mode="markers+text", text=[f"{r:.0f}" for r in table.rating], textposition="middle right", cliponaxis=False,
        error_y=dict(type="data", symmetric=False, array=table.high - table.rating,
                     arrayminus=table.rating - table.low)))
    return _layout(fig, "Ratings with 95 % bootstrap intervals", "policy", "rating (Elo scale)")


def win_rate_heatmap(rate: pd.DataFrame, counts: pd.DataFrame) -> go.Figure:
    """Row policy's win rate against the column's (ties half), each cell labelled with its vote count."""
    labels = [[f"{r:.0%}<br>n={c}" if c else "" for r, c in zip(rs, cs)] for rs, cs in zip(rate.values, counts.values)]
    # the base model's name, shared by every adapter on it, is left off the axes (it crowded out the plot)
    fig = go.Figure(go.Heatmap(z=rate.values, x=_plain(short_policy_names(rate.columns)),
                               y=_plain(short_policy_names(rate.index)), zmin=0, zmax=1,
                               colorscale="RdBu", text=labels, texttemplate="%{text}", hoverongaps=False))
    fig.update_yaxes(autorange="reversed")  # the best policy on top, as in the table
    return _layout(fig, "Win rate of the row's policy against the column's", "against", "policy", height=360)
