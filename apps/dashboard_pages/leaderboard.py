"""Leaderboard: Bradley-Terry ratings of every policy people voted on, with 95 % bootstrap intervals, the win rates
behind them and, beside each, the newest finished reward model's mean score (core/judge/leaderboard.py)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from apps.dashboard_shared import as_text, store
from core.judge.leaderboard import (
    Leaderboard,
    leaderboard,
    mean_reward_under,
    with_mean_rewards,
)
from core.records import USER_ERRORS, InputError
from core.runs import newest_finished_run
from core.view import charts

FIT_COLUMNS = ["choice", "left_policy", "right_policy", "source", "repeat_of"]  # all a rating reads
SCORE_COLUMNS = FIT_COLUMNS + ["prompt", "left_text", "right_text"]  # and the lists the reward model scores


@st.cache_data(max_entries=8, show_spinner="Fitting the ratings…")
def fitted(votes: pd.DataFrame, bootstrap: int, seed: int) -> Leaderboard:
    return leaderboard(votes, bootstrap=bootstrap, seed=seed)  # cached by the votes' content: refit on a new vote


@st.cache_data(max_entries=4, show_spinner="Scoring every list with the reward model…")
def mean_rewards(run: str, votes: pd.DataFrame) -> dict[str, float]:
    """Scored once per (reward run, votes): never on a mere rerun of the page."""
    return mean_reward_under(run, votes)


st.title("Leaderboard")
votes = store().votes()
c1, c2 = st.columns(2)
bootstrap = c1.number_input("bootstrap resamples", min_value=100, max_value=5000, value=1000, step=100,
                            key="leaderboard_bootstrap")
seed = c2.number_input("seed", min_value=0, value=0, key="leaderboard_seed")
try:
    board = fitted(votes[FIT_COLUMNS], int(bootstrap), int(seed))
except InputError as err:
    st.info(f"{as_text(err)} The leaderboard ranks policies once people have compared two of them.")
    st.stop()

run = newest_finished_run("reward")
if run is None:
    st.caption("No reward model has finished yet: the mean reward-model score column stays empty.")
elif st.toggle(f"mean score under the newest reward model, {as_text(run.name)} (loads it once per new vote)",
               key="leaderboard_rm"):
    try:
        board = with_mean_rewards(board, mean_rewards(str(run), votes[SCORE_COLUMNS]))
    except USER_ERRORS as err:  # a damaged reward run: the ratings still show, without its column
        st.error(as_text(err))

anchor = f"{as_text(board.anchor)} is" if board.anchor else "the mean is"
st.caption(f"Bradley-Terry ratings on the Elo scale ({anchor} 1000; 400 points are odds of 10 to 1), fitted to arena "
           "and blind demo votes: first votes only, no imported ones; ties and 'both bad' count half. A policy's "
           "interval is its gap to the anchor's; policies the votes cannot tell apart share a rank.")
if len(board.groups) > 1:
    st.warning(f"{len(board.groups)} groups of policies never met, even through others: ratings compare only "
               "within a group (see the vote counts).")
scored = board.table["mean_reward"].notna().any()  # an empty column read "None" on every row
st.dataframe(board.table if scored else board.table.drop(columns="mean_reward"), key="leaderboard_table",
             hide_index=True, column_config={
    "rating": st.column_config.NumberColumn(format="%.0f"),
    "low": st.column_config.NumberColumn("95 % low", format="%.0f"),
    "high": st.column_config.NumberColumn("95 % high", format="%.0f"),
    "mean_reward": st.column_config.NumberColumn("mean RM score", format="%+.3f")})
left, right = st.columns(2)
left.plotly_chart(charts.rating_intervals(board.table), key="leaderboard_intervals")
right.plotly_chart(charts.win_rate_heatmap(board.win_rate, board.counts), key="leaderboard_heatmap")
st.subheader("Votes between each two policies")
st.dataframe(board.counts, key="leaderboard_counts")
