"""The RLHF playground's library: everything but the user interfaces, in the order of the loop.

    collect/   what the person sees and says: generation, the pair queue, the arena's logic, the prompt library
    store/     where every event lands: the DuckDB store (all SQL), its cross-process lock, vote import/export
    train/     runs: snapshots, SFT, reward model, PPO, DPO, RLOO, rejection sampling, rounds, launcher
    judge/     how good it is: evaluation, the leaderboard, disagreements, agreement, over-optimisation, the demo
    view/      what the dashboard draws: charts and run tables

Shared by all: records.py (plain records and errors), lists.py (what a top-5 list is), model.py (the base model),
config.py (a dataclass -> CLI, form and config.json), paths.py (where files live), stages.py (the stage registry),
runs.py (the run-folder contract), win_rate.py and calibration.py (the statistics train and judge share), cli.py
(`python -m core`). Top-level modules but cli.py import no sub-package; sub-packages import only down the loop.
apps/ (Gradio arena, Streamlit dashboard) only call into here; nothing here imports gradio or streamlit.
"""
import os

# CPU threads: PyTorch's OpenMP (libgomp) keeps its idle threads spinning for ~300k iterations after each parallel
# region by default. With two torch processes on the same cores (the arena sampling while a run trains) the spinners
# starve each other: a token of a pair took 527 ms beside another sampling process instead of 37.5 ms alone
# (bench/cpu_sharing.py, 2 cores). A spin of 10000 keeps a lone process's speed (37.8 ms) and cuts the shared case
# to 131 ms. Read when libgomp loads, so set before torch is imported; a value the user set wins.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")
