"""Train: a form per stage built from its config dataclass, the exact command, Start / Stop / Resume, live progress."""
from __future__ import annotations

import shlex
import time

import streamlit as st

from apps.dashboard_shared import as_text, can_act, device_label, runs, show_status
from core.config import build, form_fields
from core.records import InputError
from core.runs import RESUMABLE_STATES, RunState
from core.stages import POLICY_STAGES, STAGES, config_class, stage_module
from core.train import best as policies
from core.train import launcher

NOT_IN_FORM = ("resume",)  # the Resume button below does that
SECOND_CLICK_S = 10  # the same settings started again this soon is a double click, not a second run
STAGE_LABELS = {"sft": "1. SFT", "reward": "2. Reward model", "ppo": "3. PPO", "rloo": "3. RLOO",
                "dpo": "DPO (votes, or scored lists)", "rejection": "3. Best of n (rejection sampling)"}

st.title("Train")
st.caption(f"Runs start as their own processes (`python -m core train ...`), keep going if this page is closed, "
           f"and write folders the Runs page plots. Device: **{as_text(device_label())}**.")

stage = st.radio("stage", list(STAGES), horizontal=True, key="stage",
                 format_func=lambda name: STAGE_LABELS.get(name, name))
cls = config_class(stage)
st.caption((stage_module(stage).__doc__ or "").split("\n\n")[0])
presets = ["(defaults: GPU-sized)"] + sorted(getattr(cls, "PRESETS", {}))
preset = st.selectbox("preset", presets, index=len(presets) - 1 if len(presets) > 1 else 0, key="preset")
preset = None if preset.startswith("(") else preset

typed = {}
with st.expander("Settings", expanded=True):
    columns = st.columns(3)
    for n, field in enumerate(f for f in form_fields(cls, preset) if f.name not in NOT_IN_FORM):
        col, key = columns[n % 3], f"{stage}:{preset}:{field.name}"
        if field.runs_of:  # a setting naming a run folder (core.stages.RUN_SETTINGS): those stages' finished runs
            found = runs(field.runs_of, finished_only=True)
            found = policies.policy_runs(found) if field.runs_of == POLICY_STAGES else found  # not sample-only
            options = [""] + [str(r.path) for r in found]
            typed[field.name] = col.selectbox(field.name, options, help=field.help, key=key,
                                              format_func=lambda p: p.rsplit("/", 1)[-1] or "(none)")
        elif field.kind is bool:
            typed[field.name] = col.checkbox(field.name, value=bool(field.value), help=field.help, key=key)
        elif field.choices:
            typed[field.name] = col.selectbox(field.name, field.choices, index=field.choices.index(field.value),
                                              help=field.help, key=key)
        else:
            typed[field.name] = col.text_input(field.name, value=field.value, help=field.help, key=key)

try:
    cfg = build(cls, None, **typed)
    launcher.check_paths(cfg)
except InputError as err:
    cfg = None
    st.error(as_text(err))
if cfg is not None:
    command = shlex.join(launcher.command_for(stage, cfg))
    st.code(command, language="bash")
    last = st.session_state.get("last_start")  # (command, when, run name): a double click queues a second Start
    if not can_act():
        st.caption("Viewer: you can look, not start, stop or resume runs.")
    elif st.button("Start", type="primary", key="start"):
        if last and last[0] == command and time.monotonic() - last[1] < SECOND_CLICK_S:
            st.info(f"{as_text(last[2])} started from this very form a moment ago: a second click starts nothing. "
                    f"Press Start again after {SECOND_CLICK_S:.0f} s for a second run of the same settings.")
        else:
            try:
                started = launcher.launch(stage, cfg)
                st.session_state["last_start"] = (command, time.monotonic(), started.run_dir.name)
                st.success(f"started {as_text(started.run_dir.name)} (pid {started.pid}); follow it below or on "
                           "the Runs page.")
            except InputError as err:
                st.error(as_text(err))


@st.fragment(run_every="2s")
def live_runs() -> None:
    st.subheader("Runs")
    shown = runs()[:8]
    if not shown:
        st.info("No runs yet: fill in the form above and press Start.")
    for run in shown:
        state = run.status.get("state")
        with st.container(border=True):
            show_status(run)
            if state in (RunState.RUNNING, RunState.STARTING):
                st.code(launcher.log_tail(run.path, 6) or "(no log yet)", language=None)
                if can_act() and st.button("Stop", key=f"stop:{run.name}"):
                    st.toast(as_text(launcher.stop(run.path)))
            elif can_act() and run.stage in STAGES and STAGES[run.stage].resumable and \
                    state in RESUMABLE_STATES and run.folder.checkpoint_state.exists():
                if st.button("Resume", key=f"resume:{run.name}"):
                    try:
                        st.toast(f"resumed {as_text(launcher.resume(run.path).run_dir.name)}")
                    except InputError as err:
                        st.error(as_text(err))


live_runs()
