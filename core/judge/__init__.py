"""Judge: is the tuned policy better, and can the reward model be trusted? (The maths it shares with train:
core/win_rate.py and core/calibration.py.)

    evaluate.py          `python -m core eval`: one policy against another on held-out requests
    leaderboard.py       `python -m core leaderboard`: Bradley-Terry ratings of every voted policy, bootstrap intervals
    disagreements.py     where the reward model and the person disagree, most confident first
    agreement.py         self-agreement on swapped repeats, Cohen's and Fleiss' kappa between annotators
    overoptimisation.py  proxy reward and a judge's win rate against sqrt(KL) during PPO (Gao et al. 2022)
    demo.py              base vs tuned side by side, with blind votes
"""
