"""The dashboard: data, training, curves, reward-model disagreements, the arena's pair choice and a demo, in one
Streamlit app.

    streamlit run apps/dashboard.py          # make run starts it beside the arena: http://127.0.0.1:8501

It reads the database in short shared transactions (the arena's writes go first, see core/store/lock.py) and run
folders from disk; it starts training as separate processes (core/train/launcher.py) and never trains itself. The
database is $RLHF_DB, run folders live in $RLHF_RUNS_DIR (default models/runs/).
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from apps.dashboard_shared import (
    PAGE_WAIT_PROBLEM,
    RETRY_S,
    as_text,
    device_label,
    retry_when_free,
    sign_in,
    store,
)
from core.access import Role, bind_warning
from core.records import USER_ERRORS, StoreBusy
from core.runs import runs_root

PAGES = Path(__file__).resolve().parent / "dashboard_pages"

st.set_page_config(page_title="RLHF playground", page_icon="🏆", layout="wide")
if warning := bind_warning(st.get_option("server.address") or "127.0.0.1", "dashboard"):
    st.warning(warning)
if PAGE_WAIT_PROBLEM:
    st.warning(as_text(PAGE_WAIT_PROBLEM))
role = sign_in()
page = st.navigation([
    st.Page(PAGES / "data.py", title="Data", icon="🗳️", default=True),
    st.Page(PAGES / "train.py", title="Train", icon="🚀"),
    st.Page(PAGES / "runs.py", title="Runs", icon="📈"),
    st.Page(PAGES / "disagreements.py", title="Disagreements", icon="⚖️"),
    st.Page(PAGES / "leaderboard.py", title="Leaderboard", icon="🏅"),
    st.Page(PAGES / "arena.py", title="Arena", icon="🎯"),
    st.Page(PAGES / "demo.py", title="Demo", icon="🎬"),
])
try:
    with st.sidebar:
        st.text(f"Database: {store().path}\nRuns: {runs_root()}\nDevice: {device_label()}"
                + ("\nViewer: look only" if role == Role.VIEWER else ""))
    page.run()
except StoreBusy as err:  # another process holds the database longer than a page waits: say so, try again
    st.warning(f"The database is busy: {as_text(err)}. This page tries again every {RETRY_S} s.")
    retry_when_free()
except USER_ERRORS as err:  # $RLHF_DB not a DuckDB file, or unwritable: one line saying what to change
    st.error(as_text(err))
