"""Train: each stage is a run, and a run is a folder (core/stages.py names the stages, core/runs.py owns the folder).

    run_writer.py    the writer side: config, metrics, samples, status with ETA, progress bar
    trackers.py      --report-to tensorboard | wandb, for every stage
    snapshot.py      the data a run trains on, copied out of the live database
    trainer_run.py   a Hugging Face trainer (TRL's SFT and reward trainers) wired to a run folder
    sft.py           1. supervised fine-tuning on demonstrations (TRL SFTTrainer, LoRA)
    reward_model.py  2. the reward model on votes (TRL RewardTrainer, LoRA sequence classifier)
    feedback.py      every kind of feedback (votes, edits, both-bad with a demonstration, ratings, ties) as pairs
    start.py         where a tuning stage starts: the base model, or the base with an SFT (or any policy) adapter
    ppo/             3. our own PPO against it (config, maths, shared-base model, seeds and checkpoints, the loop)
    dpo.py           3'. TRL DPOTrainer on the vote pairs, LoRA, the reference frozen where it starts
    rloo.py          3''. TRL RLOOTrainer with our reward model, LoRA
    rejection.py     3'''. rejection-sampling fine-tuning: the reward model's best of n, learned by SFT
    best.py          the policies an arena can serve, and the current best (the gate on head-to-head votes)
    rounds.py        next round: reward model on every vote, a new policy from the best, the new arena pairing
    launcher.py      start, stop and resume runs as processes of their own (the dashboard's Train page)
"""
