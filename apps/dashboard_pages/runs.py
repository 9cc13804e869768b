"""Runs: live curves from metrics.jsonl, several runs overlaid, config diff, the data each run saw, samples."""
from __future__ import annotations

import streamlit as st

from apps.dashboard_shared import as_text, runs, show_status
from core.judge.overoptimisation import curve as overoptimisation_curve
from core.runs import RunInfo, read_status
from core.view import charts
from core.view import runs as run_view

st.title("Runs")
found = runs()
if not found:
    st.info("No runs yet. Start one on the Train page, or `python -m core train sft --preset quick`.")
    st.stop()

st.dataframe(run_view.runs_table(found), hide_index=True,
             column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0)})
by_name = {r.name: r for r in found}
chosen = st.multiselect("runs to plot (runs of one stage overlay on the same axes)", list(by_name),
                        default=[found[0].name], key="plotted_runs")


@st.fragment(run_every="3s")
def curves() -> None:
    # statuses are read again on every refresh: progress, ETA and a run that died show up live
    selected = [RunInfo(by_name[name].path, by_name[name].stage, read_status(by_name[name].path)) for name in chosen]
    for run in selected:
        show_status(run, log_lines=8)
    for stage in dict.fromkeys(r.stage for r in selected):
        frames = {r.name: run_view.metrics_frame(r.path) for r in selected if r.stage == stage}
        panels = run_view.panels_for(stage, *frames.values())
        if not panels:
            st.caption(f"{stage}: no metrics logged yet.")
        columns = st.columns(2)
        for n, (title, keys) in enumerate(panels):
            columns[n % 2].plotly_chart(charts.curves(frames, keys, title), key=f"{stage}:{title}")
        for name, frame in frames.items():
            figures = run_view.final_figures(frame)
            if figures:
                st.caption(f"{as_text(name)}: " + ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}"
                                                   for k, v in figures.items()))
    for run in selected:
        if run.stage == "ppo":
            over = overoptimisation_curve(run.path)
            if len(over):
                st.plotly_chart(charts.overoptimisation(over), key=f"over:{run.name}")


curves()

st.subheader("What each run trained on")
for name in chosen:
    st.text(name)
    st.json(run_view.lineage(by_name[name].path) or {"lineage": "none recorded"}, expanded=False)

st.subheader("Compare two configs")
c1, c2 = st.columns(2)
a = c1.selectbox("run A", list(by_name), index=0, key="diff_a")
b = c2.selectbox("run B", list(by_name), index=min(1, len(by_name) - 1), key="diff_b")
if a != b:
    diff = run_view.config_diff(by_name[a].path, by_name[b].path)
    if len(diff):
        st.dataframe(diff, hide_index=True)
    else:
        st.caption("Same settings.")

st.subheader("Samples")
sample_run = st.selectbox("run", list(by_name), key="sample_run")
kind = st.radio("which", ["samples during training", "answers to held-out requests (--eval-every)"],
                horizontal=True, key="sample_kind")
frame = run_view.samples(by_name[sample_run].path, held_out=kind.startswith("answers"))
steps = [] if frame.empty else sorted(frame.step.dropna().unique().tolist())  # rows without a step are not shown
if not steps:
    st.caption("No samples in this run.")
else:
    step = st.select_slider("step", steps, value=steps[-1]) if len(steps) > 1 else steps[0]
    st.dataframe(frame[frame.step == step], hide_index=True)
