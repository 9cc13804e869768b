"""The dashboard: data, training, curves, reward-model disagreements and a demo, in one Streamlit app.

    streamlit run apps/dashboard.py          # make run starts it beside the arena: http://127.0.0.1:8501

It reads the database in short shared transactions (the arena's writes go first, see core/db_lock.py) and run
folders from disk; it starts training as separate processes (core/launcher.py) and never trains itself. The
database is $RLHF_DB, run folders live in $RLHF_RUNS_DIR (default models/runs/).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `streamlit run` puts apps/ on the path, not the repo

import streamlit as st  # noqa: E402

from apps.dashboard_shared import device_label, store  # noqa: E402
from core.runs import runs_root  # noqa: E402

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
