"""Data: what has been collected, refreshed live; how far annotators agree; browse and export the votes."""
from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from apps.dashboard_shared import as_text, runs, store
from core.judge.agreement import agreement_report, ceiling_sentence, headline
from core.records import CHOICES, USER_ERRORS, StoreBusy
from core.store.preferences import export_votes
from core.view import charts
from core.win_rate import position_bias

st.title("Data")


@st.fragment(run_every="10s")
def overview() -> None:
    try:
        ov = store().overview()
    except StoreBusy as err:  # a long import holds the file: try again at the next refresh
        st.warning(as_text(err))
        return
    totals = ov["totals"].iloc[0]
    if not totals.votes and not totals.demonstrations:
        st.info("No votes yet. Open the arena (`make run` starts it at http://127.0.0.1:7860) and vote on a few "
                "pairs, or import some: `python -m core import-votes votes.jsonl`. This page refreshes by itself.")
        return
    cols = st.columns(6)
    for col, (label, value) in zip(cols, [("votes", totals.votes), ("annotators", totals.annotators),
                                          ("undone", totals.retracted), ("flagged noise", totals.flagged_noise),
                                          ("ratings", totals.ratings), ("demonstrations", totals.demonstrations)]):
        col.metric(label, int(value))
    left, right = st.columns(2)
    left.plotly_chart(charts.votes_per_day(ov["per_day"]), key="per_day")
    right.plotly_chart(charts.choice_mix(ov["choices"]), key="choices")
    sides = ov["shuffled_sides"].iloc[0]
    bias = position_bias(int(sides.left), int(sides.right))
    if bias["n"]:
        share, count = left.columns(2)
        share.metric("position bias: decided arena votes that went left", f"{bias['left_share']:.0%}",
                     help="sides are shuffled, so a share far from 50 % means the position sways votes")
        count.metric("decided arena votes", bias["n"])
        left.caption(f"95 % interval {bias['low']:.0%}-{bias['high']:.0%}: {bias['verdict']}.")
    if ov["decision_s"].empty:
        right.caption("No decision times yet (imported votes have none; arena votes do).")
    else:
        right.plotly_chart(charts.histogram(ov["decision_s"], "seconds", "votes", "Decision time (60: a minute or more)",
                                            "seconds"), key="decision")
    if not ov["ratings"].empty:
        left.plotly_chart(charts.histogram(ov["ratings"], "stars", "ratings", "Ratings", "stars"), key="ratings")
    if ov["rounds"]["round"].notna().any():  # rounds of collection (core/train/rounds.py): set on the Arena page
        st.subheader("Rounds")
        st.dataframe(ov["rounds"].fillna({"round": "(no round)"}), hide_index=True, key="rounds")
    st.subheader("Annotators")
    st.dataframe(ov["annotators"], hide_index=True)
    if not ov["demonstrations"].empty:
        st.subheader("Demonstrations")
        st.dataframe(ov["demonstrations"], hide_index=True)


overview()


def agreement() -> None:
    """Self-agreement on the arena's swapped repeats beside the newest reward model's accuracy, then the kappas."""
    report = agreement_report(store().votes(), runs(("reward",)))
    if not report["annotators"]:
        return
    st.subheader("Agreement")
    for col, (label, value, interval) in zip(st.columns(3), headline(report)):
        col.metric(label, value)
        col.caption(interval)
    # a run's name is whatever --output-dir was given: shown as text
    newest = f" Newest reward run: {as_text(report['reward']['run'])}." if report["reward"] else ""
    if note := (ceiling_sentence(report["overall"]) + newest).strip():
        st.caption(note)
    st.dataframe(report["intra"], hide_index=True)
    if report["annotators"] >= 2:
        st.caption("Between annotators: Cohen's kappa per pair on the items both rated; Fleiss' kappa over the items "
                   "rated by the same number of annotators.")
        st.dataframe(report["kappa"], hide_index=True)
        st.dataframe(report["fleiss"], hide_index=True)


agreement()

st.subheader("Browse comparisons")
c1, c2, c3, c4 = st.columns([2, 1, 2, 1])
choices = c1.multiselect("choice", CHOICES, default=list(CHOICES), key="browse_choices")
annotator = c2.text_input("annotator", placeholder="anyone", key="browse_annotator")
search = c3.text_input("request contains", placeholder="e.g. thanksgiving", key="browse_search")
limit = c4.number_input("rows", min_value=10, max_value=5000, value=200, step=50, key="browse_rows")
st.dataframe(store().browse_votes(choices, annotator.strip() or None, search.strip(), int(limit)), hide_index=True)

st.subheader("Export")
st.caption("TRL's preference format (prompt, chosen, rejected[, margin]), the same file as "
           "`python -m core export-votes`: ties, both-bad, undone and noise-flagged votes are left out.")
fmt = st.radio("format", [".jsonl", ".parquet"], horizontal=True, key="export_format")
if st.button("Prepare export", key="prepare_export"):
    try:
        with tempfile.TemporaryDirectory() as folder:  # the bytes are kept for the download: the file is not
            out = Path(folder) / f"preferences{fmt}"
            summary = export_votes(store(), out)
            st.session_state["export"] = (out.read_bytes(), out.name, str(summary))
    except (*USER_ERRORS, OSError) as err:  # a full or unwritable temporary folder, a busy database
        st.error(f"The export could not be written: {as_text(err)}")
if "export" in st.session_state:
    data, name, said = st.session_state["export"]
    st.success(as_text(said))
    st.download_button("Download", data, file_name=name, key="download_export")
