"""What every dashboard page shares: the store, the device, run pickers and a run's status box (thin over core)."""
from __future__ import annotations

import os
import re

import streamlit as st

from core.access import Role, passwords_configured, role_for
from core.model import describe_device, pick_device
from core.records import ModelLoadError, StoreBusy
from core.runs import RunInfo, RunState, list_runs, runs_root
from core.store.database import Store
from core.train.launcher import log_tail

PROBLEM_STATES = (RunState.FAILED, RunState.KILLED, RunState.DAMAGED)


def page_wait_s(raw: str | None) -> tuple[float, str | None]:
    """$RLHF_PAGE_DB_WAIT_S as seconds, and a line to show when it is not a number of seconds (the default is used)."""
    try:
        seconds = float(raw if raw is not None else 5)
        if 0 <= seconds < float("inf"):
            return seconds, None
    except ValueError:
        pass
    return 5.0, f"RLHF_PAGE_DB_WAIT_S={raw!r} is not a number of seconds: set it to one (like 5); pages wait 5 s."


# A page waits this long for the database before saying it is busy and trying again every RETRY_S seconds (the
# arena's votes go first; a long import or a DuckDB shell can hold the file for longer).
PAGE_WAIT_S, PAGE_WAIT_PROBLEM = page_wait_s(os.environ.get("RLHF_PAGE_DB_WAIT_S"))
RETRY_S = 5
_MARKDOWN = re.compile(r"([\\`*_\[\]()#!<>$~|{}:&])")  # links, emphasis, HTML, LaTeX, :colour[...], entities
_LINE_MARKER = re.compile(r"^([ \t]*)([-+=]|\d+(?=[.)]))", re.MULTILINE)  # "- item", "+ item", "===", "1. item"


def as_text(value) -> str:
    """Text a person or a model wrote, made safe for a Streamlit message (st.error, st.caption and the like render
    Markdown: an image link would load, `#include <x>` would vanish, a line "1. x" would become a list). A backslash
    before ASCII punctuation is CommonMark's literal; unescaping gives the text back."""
    escaped = _MARKDOWN.sub(r"\\\1", str(value))
    return _LINE_MARKER.sub(lambda m: m[1] + (m[2] + "\\" if m[2][0].isdigit() else "\\" + m[2]), escaped)


def follow_stored(key: str, stored) -> None:
    """Show a value saved elsewhere (by the arena, Next round or another tab) in the keyed widget `key`: such a
    widget keeps its own value across reruns and ignores a new default, so it takes the stored value whenever that
    changes, and keeps what the person picked while it does not. Create the widget without index= or value=."""
    seen = f"_stored_{key}"
    if seen not in st.session_state or st.session_state[seen] != stored:
        st.session_state[seen] = st.session_state[key] = stored


@st.cache_resource
def _store(path: str) -> Store:
    return Store(path or None, timeout_s=PAGE_WAIT_S)


def store() -> Store:
    """The store for $RLHF_DB (one object per path; it holds no connection, see core/store/database.py)."""
    return _store(os.environ.get("RLHF_DB", ""))


def sign_in() -> Role:
    """The visitor's role. With a password configured, a page shows only a password field until one matches."""
    if not passwords_configured():
        return Role.ADMIN
    if "role" in st.session_state:
        return st.session_state["role"]
    typed = st.text_input("Password", type="password", key="password")
    if typed:
        role = role_for(typed)
        if role is Role.NONE:
            st.error("Wrong password.")
        else:
            st.session_state["role"] = role
            st.rerun()
    st.stop()


def can_act() -> bool:
    """Whether this visitor may start, stop, resume, relabel or vote (a viewer may only look)."""
    return not passwords_configured() or st.session_state.get("role") == Role.ADMIN


@st.fragment(run_every=f"{RETRY_S}s")
def retry_when_free() -> None:
    """Rerun the whole page once the database answers again (shown after a page met a busy database)."""
    try:
        store().counts()
    except StoreBusy:
        return
    st.rerun(scope="app")


@st.cache_resource
def device_label() -> str:
    """The device runs started here would use, or why none can be ($RLHF_DEVICE naming a GPU this machine lacks)."""
    try:
        return describe_device(pick_device(None))
    except ModelLoadError as err:
        return f"unusable: {err}"


def runs(stages: tuple[str, ...] = (), finished_only: bool = False) -> list[RunInfo]:
    found = [r for r in list_runs(runs_root()) if not stages or r.stage in stages]
    return [r for r in found if r.status.get("state") == RunState.FINISHED] if finished_only else found


def show_status(run: RunInfo, log_lines: int = 12) -> None:
    """A run's state; a crashed, killed or damaged run shows why, with its last log lines."""
    s = run.status
    state = s.get("state", RunState.DAMAGED)
    if state in PROBLEM_STATES:
        st.error(f"{as_text(run.name)} {state}: {as_text(s.get('message', ''))}")
        tail = log_tail(run.path, log_lines)
        if tail:
            st.code(tail, language=None)
    elif state in (RunState.RUNNING, RunState.STARTING):
        # numbers as the run writes them; anything else (a hand-edited status) reads as 0
        step, total = (v if isinstance(v, (int, float)) and v > 0 else 0 for v in (s.get("step"), s.get("total")))
        eta = f", about {s['eta_s'] / 60:.1f} min left" if isinstance(s.get("eta_s"), (int, float)) else ""
        st.progress(min(step / total, 1.0) if total else 0.0,
                    text=f"{as_text(run.name)} {state}: step {step}/{total}{eta}")
    else:
        st.caption(f"{as_text(run.name)} {state}. {as_text(s.get('message', ''))}")
