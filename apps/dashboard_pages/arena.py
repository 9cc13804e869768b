"""Arena: how the arena picks the next library pair, random or the reward model's most uncertain, and how often it
shows annotators one of their own voted pairs again, sides swapped, unannounced (core/collect/chooser.py).

The settings live in the database; the arena reads them at every pair, so a change applies without a restart. The
latest change wins: a flag the arena was started with is written once, at its start.
"""
from __future__ import annotations

import streamlit as st

from apps.dashboard_shared import as_text, can_act, runs, store
from core.collect.chooser import (
    SAMPLINGS,
    read_repeat_rate,
    read_sampling,
    save_settings,
)
from core.records import InputError

SAMPLING_LABELS = {"random": "random: two samples", "uncertain": "uncertain: the reward model's closest call"}

st.title("Arena")
reward_runs = runs(("reward",), finished_only=True)  # newest first, as the arena looks for them
st.metric("reward model that uncertain choice scores with", reward_runs[0].name if reward_runs else "none yet")
if not reward_runs:
    st.info("No reward model has finished yet, so uncertain choice serves random pairs until one does. Train one on "
            "the Train page (stage 2) or with `python -m core train reward --preset quick`; the arena picks up each "
            "newer one when it finishes, without a restart.")

sampling = st.radio("how library pairs are chosen", SAMPLINGS, index=SAMPLINGS.index(read_sampling(store())),
                    format_func=SAMPLING_LABELS.get, horizontal=True, key="arena_sampling", disabled=not can_act(),
                    help="A typed request always gets a random pair, so held-out statistics stay unbiased.")
rate = st.number_input("self-consistency repeats: share of pairs", min_value=0.0, max_value=1.0,
                       value=read_repeat_rate(store()), step=0.01, key="arena_repeat_rate", disabled=not can_act(),
                       help="A repeat shows an annotator a pair they voted on before, sides swapped and unannounced; "
                            "their two votes on it measure their own consistency.")
if not can_act():
    st.caption("Viewer: you can look, not change how the arena chooses pairs.")
elif st.button("Save", type="primary", key="arena_save"):
    try:
        save_settings(store(), sampling, rate)
        st.success("Saved: the arena uses these settings from its next pair.")
    except InputError as err:
        st.error(as_text(err))
