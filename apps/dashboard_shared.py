"""What every dashboard page shares: the store, the device, run pickers and a run's status box (thin over core)."""
from __future__ import annotations

import os

import streamlit as st

from core.model import describe_device, pick_device
from core.store.database import Store
from core.train.launcher import log_tail
from core.train.runs import RunInfo, RunState, list_runs, runs_root

PROBLEM_STATES = (RunState.FAILED, RunState.KILLED, RunState.DAMAGED)


@st.cache_resource
def _store(path: str) -> Store:
    return Store(path or None)


def store() -> Store:
    """The store for $RLHF_DB (one object per path; it holds no connection, see core/store/database.py)."""
    return _store(os.environ.get("RLHF_DB", ""))


@st.cache_resource
def device_label() -> str:
    return describe_device(pick_device(None))


def runs(stages: tuple[str, ...] = (), finished_only: bool = False) -> list[RunInfo]:
    found = [r for r in list_runs(runs_root()) if not stages or r.stage in stages]
    return [r for r in found if r.status.get("state") == RunState.FINISHED] if finished_only else found


def show_status(run: RunInfo, log_lines: int = 12) -> None:
    """A run's state; a crashed, killed or damaged run shows why, with its last log lines."""
    s = run.status
    state = s.get("state", RunState.DAMAGED)
    if state in PROBLEM_STATES:
        st.error(f"**{run.name}** {state}: {s.get('message', '')}")
        tail = log_tail(run.path, log_lines)
        if tail:
            st.code(tail, language=None)
    elif state in (RunState.RUNNING, RunState.STARTING):
        step, total = s.get("step") or 0, s.get("total") or 0
        eta = f", about {s['eta_s'] / 60:.1f} min left" if isinstance(s.get("eta_s"), (int, float)) else ""
        st.progress(min(step / total, 1.0) if total else 0.0, text=f"**{run.name}** {state}: step {step}/{total}{eta}")
    else:
        st.caption(f"**{run.name}** {state}. {s.get('message', '')}")
