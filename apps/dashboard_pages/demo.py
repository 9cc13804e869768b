"""Demo: base vs a tuned policy on one request, side by side; a blind mode whose votes feed a human win rate."""
from __future__ import annotations

import getpass

import streamlit as st

from apps.dashboard_shared import as_text, can_act, runs, store
from core.collect.library import load_prompts
from core.judge.demo import (
    Demo,
    human_win_rate,
    policy_names,
    record_blind_vote,
)
from core.lists import parse_list
from core.records import InputError, ModelLoadError
from core.runs import adapter_dir
from core.train.best import policy_runs

st.title("Demo")
tuned_runs = policy_runs(runs())
if not tuned_runs:
    st.info("No tuned policy yet: finish an SFT, PPO, DPO, RLOO or rejection-sampling run (Train page), then "
            "compare it with the base here.")
    st.stop()


@st.cache_resource(max_entries=2, show_spinner="Loading the models…")
def demo_for(tuned: str, reward: str) -> Demo:
    return Demo.from_runs(store(), tuned, reward or None)


c1, c2 = st.columns(2)
by_name = {r.name: r for r in tuned_runs}
tuned = by_name[c1.selectbox("tuned policy", list(by_name), key="demo_tuned")]
rewards = {"(none)": None} | {r.name: r for r in runs(("reward",), finished_only=True)}
reward = rewards[c2.selectbox("reward model (scores)", list(rewards), key="demo_reward")]
examples = [p.text for p in load_prompts() if p.split == "eval"][:20]
request = st.selectbox("request", examples, accept_new_options=True, key="demo_request",
                       help="a held-out request, or type your own")
blind = st.toggle("blind: hide which list is which until I vote", key="demo_blind")
if not can_act():  # a look-only viewer watches: generating loads models and stores the demo's pair
    st.caption("Look only: generating a demo is for the people who can vote.")
elif st.button("Generate", type="primary", key="demo_generate"):
    try:
        st.session_state["shown"] = (demo_for(str(tuned.path), str(reward.path) if reward else "").compare(request),
                                     blind)
        st.session_state.pop("revealed", None)
    except (InputError, ModelLoadError) as err:
        st.error(as_text(err))

if "shown" in st.session_state:
    shown, shown_blind = st.session_state["shown"]
    revealed = not shown_blind or "revealed" in st.session_state
    columns = st.columns(2)
    for n, (col, side) in enumerate(zip(columns, ("left", "right"))):
        generation = getattr(shown.pair, side)
        col.subheader(shown.label(side) if revealed else f"List {'AB'[n]}")
        col.text(generation.text)
        problems = parse_list(generation.text).problems
        col.caption(("well-formed top-5 ✓" if not problems else "✗ " + "; ".join(problems))
                    + (f" · reward {shown.scores[n]:+.2f}" if revealed and shown.scores else ""))
    if shown_blind and not revealed and can_act():
        buttons = st.columns(4)
        for col, (choice, label) in zip(buttons, [("left", "A is better"), ("right", "B is better"),
                                                  ("tie", "Tie"), ("both_bad", "Both bad")]):
            if col.button(label, key=f"vote:{choice}"):
                st.session_state["revealed"] = record_blind_vote(store(), shown, choice, f"demo:{getpass.getuser()}")
                st.rerun()
    elif "revealed" in st.session_state:
        st.success(f"Vote saved. {as_text(st.session_state['revealed'])}")

demo_names = policy_names(str(adapter_dir(tuned.path)))
rate = human_win_rate(store().votes_between(*demo_names), *demo_names)
st.subheader("Human win rate, tuned vs base")
if rate.n:
    low, high = rate.interval
    st.metric("human win rate, tuned vs base", f"{rate.rate:.0%}", help=f"95 % Wilson interval {low:.0%}-{high:.0%}")
    st.caption(f"{as_text(demo_names[0])} over {as_text(demo_names[1])}: {rate}. From every blind vote on a pair of these two "
               "(demo and arena).")
else:
    st.caption("No blind votes on this pair of policies yet: switch on blind mode and vote.")
