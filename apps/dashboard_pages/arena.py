"""Arena: which two policies the arena pairs and the round it collects for, how it picks the next library pair
(random or the reward model's most uncertain) and request (every category evenly, or more where the challenger
loses: core/collect/focus.py, with the table it reads), how often it shows annotators one of their own voted pairs again
(sides swapped, unannounced; core/collect/chooser.py), and Next round (core/train/rounds.py).

The settings live in the database; the arena follows them without a restart (a new pairing from its next pair, its
adapters loaded in the background), and writes back what it serves now. The latest change wins: a flag the arena
was started with is written once, at its start.
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import streamlit as st

from apps.dashboard_shared import as_text, can_act, follow_stored, runs, store
from core.collect.chooser import (
    BASE,
    SAMPLINGS,
    read_pairing,
    read_repeat_rate,
    read_reward_serving,
    read_round,
    read_sampling,
    read_serving,
    save_settings,
)
from core.collect.focus import FOCUSES, read_focus, readable, save_focus, weak_spots_in
from core.records import USER_ERRORS, InputError, short_policy_names
from core.stages import STAGES
from core.train import best as policies
from core.train import rounds

SAMPLING_LABELS = {"random": "random: two samples", "uncertain": "uncertain: the reward model's closest call"}
FOCUS_LABELS = {"even": "even: every category in turn", "weak": "weak: more where the challenger loses"}
PRESETS = {"quick": "quick: minutes on two CPU cores", "": "the stages' defaults (sized for a GPU)"}

st.title("Arena")


def policy_choices(*stored: str) -> list[str]:
    """The base, every finished policy run (newest first) and whatever is stored, even if it is gone since."""
    found = [BASE, *(str(run.path) for run in policies.policy_runs(runs()))]
    return found + [side for side in dict.fromkeys(stored) if side not in found]


# ---- pairing and round ----------------------------------------------------------------------------------------------
st.subheader("Pairing and round")
serving, stored, round_now = read_serving(store()), read_pairing(store()), read_round(store())
if serving:
    st.metric("the arena serves now", as_text(" vs ".join(short_policy_names(serving.get("policies") or []))),
              help=as_text(" vs ".join(serving.get("policies") or [])))  # the full names
    st.caption(f"Round: {as_text(serving.get('round') or 'none')} · since {serving.get('since')}, as the arena last "
               "said. Sources stay hidden from annotators until each vote; sides are shuffled on every pair.")
    if serving.get("error"):
        st.error(f"The arena could not load the stored pairing and keeps serving the one above: "
                 f"{as_text(serving['error'])}")
    elif serving.get("pairing") is not None and serving["pairing"] != list(stored):
        st.caption("Switching to the stored pairing at its next pair.")
else:
    st.info("No arena has said what it serves yet. Start one (`make run`, or `python -m apps.arena`); it follows "
            "what is saved here from its next pair, without a restart.")
choices = policy_choices(*stored)
for key, value in (("pairing_first", stored[0]), ("pairing_second", stored[1]), ("pairing_round", round_now or "")):
    follow_stored(key, value)  # Next round or another tab may have switched the pairing since this page drew it
first = st.selectbox("policy A (the incumbent)", choices, format_func=policies.label, key="pairing_first",
                     disabled=not can_act())
second = st.selectbox("policy B (the challenger)", choices, format_func=policies.label, key="pairing_second",
                      disabled=not can_act())
round_name = st.text_input("round", placeholder="e.g. round 2: ppo-r1 vs sft",
                           key="pairing_round", disabled=not can_act(),
                           help="Every pair records the round it is shown in; the Data page counts votes per round. "
                                "Empty: no round.")
if can_act() and st.button("Switch", type="primary", key="pairing_save"):
    try:
        policies.set_pairing(store(), first, second, round_name)
        st.success("Saved: the arena switches at its next pair. The pairs it had ready for the old pairing are "
                   "dropped (never shown, so no vote is lost); one being generated for a request is finished.")
    except USER_ERRORS as err:
        st.error(as_text(err))

# ---- how library pairs are chosen -----------------------------------------------------------------------------------
st.subheader("Choosing pairs")
reward_runs = runs(("reward",), finished_only=True)  # newest first, as the arena looks for them
said = read_reward_serving(store())  # the arena's own word wins: --reward-model, or a newest run that would not load
if said.get("run") or said.get("failed"):  # what the arena said it loaded (nothing: random pairs)
    in_use, why = Path(said["run"]).name if said.get("run") else "none: random pairs", "as the arena last said"
else:  # it loads the newest finished run once uncertain choice is on
    in_use, why = reward_runs[0].name if reward_runs else "none yet", "the newest finished reward run"
st.metric("reward model that uncertain choice scores with", as_text(in_use), help=why)
if said.get("failed"):
    st.warning(f"The arena could not load the reward model in {as_text(Path(said['failed']).name)} (its log says "
               f"why) and keeps {as_text(Path(said['run']).name) if said.get('run') else 'random pairs'}.")
if not reward_runs:
    st.info("No reward model has finished yet, so uncertain choice serves random pairs until one does. Train one on "
            "the Train page (stage 2) or with `python -m core train reward --preset quick`; the arena picks up each "
            "newer one when it finishes, without a restart.")

follow_stored("arena_sampling", read_sampling(store()))
follow_stored("arena_repeat_rate", read_repeat_rate(store()))
follow_stored("arena_focus", read_focus(store()))
sampling = st.radio("how library pairs are chosen", SAMPLINGS, format_func=SAMPLING_LABELS.get, horizontal=True,
                    key="arena_sampling", disabled=not can_act(),
                    help="A typed request always gets a random pair, so held-out statistics stay unbiased.")
rate = st.number_input("self-consistency repeats: share of pairs", min_value=0.0, max_value=1.0, step=0.01,
                       key="arena_repeat_rate", disabled=not can_act(),
                       help="A repeat shows an annotator a pair they voted on before, sides swapped and unannounced; "
                            "their two votes on it measure their own consistency.")
focus = st.radio("which library requests come next", FOCUSES, format_func=FOCUS_LABELS.get, horizontal=True,
                 key="arena_focus", disabled=not can_act(),
                 help="weak: a category is drawn in proportion to how often the challenger (policy B) loses or "
                      "gets 'both bad' there, a quarter of the requests still spread evenly; the table below.")
if not can_act():
    st.caption("Viewer: you can look, not change what the arena serves or start a round.")
elif st.button("Save", type="primary", key="arena_save"):
    try:
        save_settings(store(), sampling, rate)
        save_focus(store(), focus)
        st.success("Saved: the arena uses these settings from its next pair.")
    except InputError as err:
        st.error(as_text(err))

with st.expander("Where the challenger is weak, by category"):
    try:
        challenger, spots = weak_spots_in(store())
        st.caption(f"{as_text(challenger)}: votes with it on either side, weakest first; score: won plus half the "
                   "ties, a 'both bad' counting as lost, with its 95 % interval; focus: each category's share of "
                   "the next library requests under focus weak.")
        st.dataframe(readable(spots), key="weak_spots")
    except USER_ERRORS as err:
        st.info(as_text(err))

# ---- next round -----------------------------------------------------------------------------------------------------
st.subheader("Next round")
st.caption("Three steps, each an ordinary run you can follow and stop on the Runs page: a reward model on every vote "
           "so far, a new policy tuned from the current best, then the two paired here as a new round. The current "
           "best: the pairing's run side; of two, the one the other was tuned from, unless the other won the "
           "head-to-head votes beyond chance (95 % interval above one half); else the newest finished SFT run.")
said = rounds.read_report(store())
if said:
    show = {"failed": st.error, "killed": st.error, "finished": st.success}.get(said.get("state"), st.info)
    show(f"Last next round: {said.get('state')}: {as_text(said.get('message', ''))}")
method = st.radio("tune the new policy with", rounds.METHODS, index=rounds.METHODS.index(rounds.RECOMMENDED),
                  horizontal=True, key="next_round_method",
                  help=f"{rounds.RECOMMENDED} beat SFT by the most on every scripted taste (bench/README.md)")
try:
    best_now, why = policies.best_and_why(store(), runs())
    st.caption(f"Current best: {as_text(why)}.")
except InputError as err:
    best_now = BASE
    st.info(f"{as_text(err)} Until then a round can start from the base.")
best_choices = policy_choices(best_now)
follow_stored("next_round_best", best_now)  # a round finished since may have made another policy the best
best = st.selectbox("start from and pair against (the current best)", best_choices, format_func=policies.label,
                    key="next_round_best")
preset = st.selectbox("preset of both training steps", list(PRESETS), format_func=PRESETS.get, key="next_round_preset")
lists = rounds.ONLINE_DPO_LISTS
if method == "online-dpo":
    lists = st.number_input("lists a request (online-dpo)", min_value=2, max_value=32, value=rounds.ONLINE_DPO_LISTS,
                            key="next_round_lists", help="sampled for every training request; the best is paired "
                            "with the worst. On `terse` 8 beat 4 side by side (64 % against 53 % over SFT) and took "
                            "26 min of sampling on 2 cores (bench/README.md)")
stamp = st.session_state.setdefault("next_round_stamp", datetime.now().strftime("%Y%m%d-%H%M%S"))
try:
    steps = rounds.plan_for(store(), method, best, preset or None, stamp, int(lists))
    st.code("\n".join(step.describe() for step in steps), language=None)
except USER_ERRORS as err:
    steps = None
    st.error(as_text(err))
missing = [step.stage for step in steps or () if step.stage and step.stage not in STAGES]
if missing:
    st.warning(f"This checkout has no {missing[0]} stage yet: pick another method.")
busy = said.get("state") in ("starting", "running")
if can_act() and st.button("Start next round", type="primary", key="next_round_start",
                           disabled=busy or not steps or bool(missing)):
    try:
        pid = rounds.start_next_round(store(), method, best, preset or None, stamp, int(lists))
        st.session_state.pop("next_round_stamp")  # the next plan gets fresh run folders
        st.success(f"Started (pid {pid}): step 1 appears on the Runs page in a few seconds; this page says where "
                   "the round is.")
    except USER_ERRORS as err:
        st.error(as_text(err))
