"""Disagreements: labelled pairs where the reward model prefers the other list, most confident first; review them."""
from __future__ import annotations

import getpass

import streamlit as st

from apps.dashboard_shared import as_text, can_act, runs, store
from core.judge.disagreements import calibration, disagreements, load_scores
from core.records import CHOICES, InputError
from core.view import charts

PAGE_SIZE = 10

st.title("Disagreements")
reward_runs = [r for r in runs(("reward",)) if r.folder.scores.exists()]
if not reward_runs:
    st.info("No reward model has scored the votes yet. Train one on the Train page (stage 2) or with "
            "`python -m core train reward --preset quick`; its scores appear here when it finishes.")
    st.stop()

by_name = {r.name: r for r in reward_runs}
run = by_name[st.selectbox("reward model", list(by_name), key="disagreements_run")]
split = st.radio("pairs", ["eval", "train", "all"], horizontal=True, key="disagreements_split",
                 format_func={"eval": "held-out", "train": "training", "all": "all"}.get)
scores = load_scores(run.path)
table = disagreements(scores, store().table("reviews"), None if split == "all" else split)
cal = calibration(run.path, scores, split)
if cal["pairs"]:
    figures = st.columns(5)
    for col, (label, value) in zip(figures, [("accuracy", f"{cal['accuracy']:.1%}"), ("decided pairs", cal["pairs"]),
                                             ("disagreements", len(table)),
                                             ("not reviewed", int((table.review == "open").sum())),
                                             ("ECE", "-" if cal["ece"] is None else f"{cal['ece']:.3f}")]):
        col.metric(label, value)
left, right = st.columns(2)
left.plotly_chart(charts.reliability(cal["reliability"]), key="reliability")
right.plotly_chart(charts.accuracy_by_margin(cal["by_margin"]), key="margin")
if len(cal["by_round"]) > 1:  # the newest round's pairs are the policies being tuned: the accuracy RL relies on
    st.caption("Accuracy by round of collection (95 % Wilson interval)")
    st.dataframe(cal["by_round"], hide_index=True, key="by_round")

if table.empty:
    st.success("The reward model agrees with every decided vote here.")
    st.stop()
reviewer = st.text_input("reviewer", value=getpass.getuser(), key="reviewer")
page = st.number_input("page", min_value=1, max_value=(len(table) - 1) // PAGE_SIZE + 1, value=1,
                       key="disagreements_page")
for row in table.iloc[(page - 1) * PAGE_SIZE: page * PAGE_SIZE].itertuples():
    with st.container(border=True):
        # the request and the annotator's name are typed text: shown as text, never as Markdown
        st.text(row.prompt)
        st.text(f"human: {row.choice}, model: {row.model_prefers} ({row.confidence:.0%} sure) · {row.split} · "
                f"by {row.annotator} · review: {row.review}")
        a, b = st.columns(2)
        a.caption(f"left · reward {row.score_left:+.2f}")
        a.text(row.left_text)
        b.caption(f"right · reward {row.score_right:+.2f}")
        b.text(row.right_text)
        if not can_act():
            continue  # a viewer sees the disagreements, and cannot review them
        c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
        new_choice = c1.selectbox("relabel to", [c for c in CHOICES if c != row.choice], key=f"to:{row.comparison_id}",
                                  label_visibility="collapsed")
        action = None
        if c2.button("Relabel", key=f"relabel:{row.comparison_id}"):
            action = ("relabel", new_choice)
        if c3.button("Flag as noise", key=f"noise:{row.comparison_id}"):
            action = ("noise", None)
        if c4.button("Confirm", key=f"confirm:{row.comparison_id}"):
            action = ("confirm", None)
        if action:
            try:
                store().review_vote(row.comparison_id, action[0], reviewer or "dashboard", action[1])
                st.rerun()
            except InputError as err:
                st.error(as_text(err))
