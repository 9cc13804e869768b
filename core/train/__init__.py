"""Train: each stage is a run, and a run is a folder.

    stages.py        the stage registry: sft, reward, ppo (what `python -m core train NAME` runs)
    runs.py          the run-folder contract: every file name, the run states, the readers
    run_writer.py    the writer side: config, metrics, samples, status with ETA, progress bar
    trackers.py      --report-to tensorboard | wandb, for every stage
    snapshot.py      the data a run trains on, copied out of the live database
    trainer_run.py   a Hugging Face trainer (TRL's SFT and reward trainers) wired to a run folder
    sft.py           1. supervised fine-tuning on demonstrations (TRL SFTTrainer, LoRA)
    reward_model.py  2. the reward model on votes (TRL RewardTrainer, LoRA sequence classifier)
    ppo/             3. our own PPO against it (config, maths, shared-base model, seeds and checkpoints, the loop)
    launcher.py      start, stop and resume runs as processes of their own (the dashboard's Train page)
"""
