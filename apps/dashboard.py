"""The dashboard: data, training, curves, reward-model disagreements and a demo, in one Streamlit app.

    streamlit run apps/dashboard.py          # make run starts it beside the arena: http://127.0.0.1:8501

It reads the database in short shared transactions (the arena's writes go first, see core/store/lock.py) and run
folders from disk; it starts training as separate processes (core/train/launcher.py) and never trains itself. The
database is $RLHF_DB, run folders live in $RLHF_RUNS_DIR (default models/runs/).
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from apps.dashboard_shared import device_label, store
from core.train.runs import runs_root

PAGES = Path(__file__).resolve().parent / "dashboard_pages"

st.set_page_config(page_title="RLHF playground", page_icon="🏆", layout="wide")
page = st.navigation([
    st.Page(PAGES / "data.py", title="Data", icon="🗳️", default=True),
    st.Page(PAGES / "train.py", title="Train", icon="🚀"),
    st.Page(PAGES / "runs.py", title="Runs", icon="📈"),
    st.Page(PAGES / "disagreements.py", title="Disagreements", icon="⚖️"),
    st.Page(PAGES / "demo.py", title="Demo", icon="🎬"),
])
with st.sidebar:
    st.caption(f"Database: `{store().path}`  \nRuns: `{runs_root()}`  \nDevice: {device_label()}")
page.run()
