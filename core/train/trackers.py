"""Where a run's metrics go besides metrics.jsonl: `--report-to none|tensorboard|wandb` (every stage, off by default).

One mechanism for all stages: the run (core/train/run_writer.py) forwards each row it writes to metrics.jsonl, so
TensorBoard and Weights & Biases see exactly the names the dashboard plots (`objective/kl`, `train/loss`), PPO's
included, rather than each Hugging Face trainer's own report_to with its own names. TensorBoard writes event files
into the run's tensorboard/ folder (`tensorboard --logdir models/runs`); W&B follows its own environment
(WANDB_MODE=offline works without a network). Both libraries are optional and imported only when asked for.
"""
from __future__ import annotations

import dataclasses
import numbers

from core.config import knob
from core.records import InputError
from core.runs import RunFolder

REPORT_TO = ("none", "tensorboard", "wandb")


def report_to_knob():
    """The `report_to` setting every stage's config has."""
    return knob("none", "also send metrics to tensorboard (the run folder's tensorboard/) or wandb", choices=REPORT_TO)


class TensorBoardTracker:
    def __init__(self, folder: RunFolder, cfg):
        try:  # optional: only runs that ask for TensorBoard need it
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise InputError(f"--report-to tensorboard needs the tensorboard package ({err}); pip install "
                             "tensorboard, or pass --report-to none.") from None
        self.writer = SummaryWriter(log_dir=str(folder.tensorboard))
        self.writer.add_text("config", _config_text(cfg))

    def log(self, step: int, row: dict) -> None:
        for key, value in _numbers(row):
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    def __init__(self, folder: RunFolder, cfg):
        try:  # optional, and it talks to a server unless WANDB_MODE=offline
            import wandb
        except ImportError as err:
            raise InputError(f"--report-to wandb needs the wandb package ({err}); pip install wandb, or pass "
                             "--report-to tensorboard.") from None
        self.run = wandb.init(dir=str(folder.path), name=folder.path.name, config=dataclasses.asdict(cfg))

    def log(self, step: int, row: dict) -> None:
        self.run.log(dict(_numbers(row)), step=step)

    def close(self) -> None:
        self.run.finish()


TRACKERS = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker}


def open_trackers(report_to: str, folder: RunFolder, cfg) -> list:
    """The trackers `report_to` names, writing beside the run ("none": no tracker)."""
    if report_to == "none":
        return []
    if report_to not in TRACKERS:
        raise InputError(f"--report-to {report_to!r} is not one of {', '.join(REPORT_TO)}.")
    return [TRACKERS[report_to](folder, cfg)]


def _numbers(row: dict):
    """The row's numeric metrics (not the step itself, nor text or missing values)."""
    return [(k, float(v)) for k, v in row.items()
            if k != "step" and isinstance(v, numbers.Number) and not isinstance(v, bool)]


def _config_text(cfg) -> str:
    return "\n".join(f"{k}: {v}" for k, v in dataclasses.asdict(cfg).items())
