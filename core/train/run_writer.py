"""The writer side of a run folder (its layout and readers: core/runs.py, which names every file)."""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from tqdm.auto import tqdm

from core import config as config_io
from core.paths import write_whole
from core.runs import (
    FINAL_STATES,
    RunFolder,
    RunState,
    append_jsonl,
    is_main_process,
    plain_value,
    read_json,
    read_jsonl,
    write_json,
)
from core.stages import stage_for_config
from core.train.trackers import open_trackers

log = logging.getLogger(__name__)


class StopRequest:
    """SIGTERM and Ctrl-C ask the loop to stop at the next step boundary instead of killing it mid-write."""

    def __init__(self):
        self.requested = False

    def install(self) -> "StopRequest":
        def handler(signum, frame):
            self.requested = True
            log.warning("received %s: stopping after this step", signal.Signals(signum).name)

        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                signal.signal(sig, handler)
            except ValueError:  # not the main thread (tests, notebooks): stopping is then up to the caller
                pass
        return self


class Run:
    """The writer side of a run folder: config, metrics, samples, status with ETA, and a terminal progress bar.
    With `report_to` in the stage's config, metrics also go to TensorBoard or Weights & Biases (core/train/trackers)."""

    def __init__(self, path: Path, total: int, resumed_step: int = 0, cfg=None):
        """`cfg`: the stage's config, written to config.json at once (a resumed run keeps its own) so that a run
        that fails before save_config still says what stage it was and how it was asked for."""
        self.folder = RunFolder(path)
        self.path, self.total, self.is_main = self.folder.path, total, is_main_process()
        self.step, self.first_step, self.started = resumed_step, resumed_step, time.monotonic()
        self.stop = StopRequest().install()
        self._bar = tqdm(total=total, initial=resumed_step, desc=self.path.name, disable=not self.is_main,
                         dynamic_ncols=True)
        self._status, self._trackers = {}, []
        if self.is_main:
            self._log_handler = logging.FileHandler(self.folder.log)
            self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            logging.getLogger().addHandler(self._log_handler)
            logging.getLogger().setLevel(min(logging.getLogger().level or logging.INFO, logging.INFO))
            if cfg is not None and not self.folder.config.exists():
                self._write_config(cfg)
            previous = read_json(self.folder.status)
            self.set_status(RunState.RUNNING, started_at=previous.get("started_at", _now()),
                            resumed_at_step=resumed_step)

    def set_total(self, total: int) -> None:
        """The step count, once known (a Hugging Face trainer knows it only when training begins)."""
        self.total = self._bar.total = total
        self._bar.refresh()
        self.set_status(RunState.RUNNING)

    def restart_at(self, step: int) -> None:
        """Continue counting from `step` (a resumed run); the ETA is measured from here."""
        self.step = self.first_step = step
        self.started = time.monotonic()
        self._bar.reset(total=self.total)
        self._bar.update(step)
        self.set_status(RunState.RUNNING, resumed_at_step=step)

    def save_config(self, cfg, **extra) -> None:
        """config.json, with the stage named (readers take the stage from here), and the trackers it asks for."""
        if self.is_main:
            self._write_config(cfg, **extra)
            self._trackers = open_trackers(getattr(cfg, "report_to", "none"), self.folder, cfg)

    def _write_config(self, cfg, **extra) -> None:
        config_io.save(cfg, self.folder.config, stage=stage_for_config(cfg), **extra)

    def set_status(self, state: RunState, **fields) -> None:
        if not self.is_main:
            return
        self._status.update(state=str(state), step=self.step, total=self.total, eta_s=self.eta_s(),
                            pid=os.getpid(), updated_at=_now(), **fields)
        write_json(self.folder.status, self._status)

    def eta_s(self) -> float | None:
        done = self.step - self.first_step
        if done <= 0:
            return None
        return round((time.monotonic() - self.started) / done * max(self.total - self.step, 0), 1)

    def log_metrics(self, step: int, metrics: dict) -> None:
        """One flat row in metrics.jsonl (and each tracker); advances the progress bar and status to `step`."""
        row = {"step": step, **{k: _finite(v) for k, v in metrics.items()}}
        if self.is_main:
            append_jsonl(self.folder.metrics, [row])
            for tracker in self._trackers:
                tracker.log(step, row)
        self._bar.update(max(step - self.step, 0))
        self.step = max(self.step, step)
        self.set_status(RunState.RUNNING, message="")  # a logged step ends any phase a message named

    def log_samples(self, step: int, samples: list[dict]) -> None:
        if self.is_main:
            append_jsonl(self.folder.samples, [{"step": step, **s} for s in samples])

    def log_eval_samples(self, step: int, samples: list[dict]) -> None:
        if self.is_main:
            append_jsonl(self.folder.eval_samples, [{"step": step, **s} for s in samples])

    def finish(self, state: RunState = RunState.FINISHED, message: str = "") -> None:
        self._bar.close()
        self.set_status(state, message=message, finished_at=_now())
        for tracker in self._trackers:
            tracker.close()
        self._trackers = []
        if self.is_main:
            logging.getLogger().removeHandler(self._log_handler)
            self._log_handler.close()

    def complete(self, stopped: bool, how_to_continue: str = "") -> None:
        """The final status of a run that ended on its own (finished) or on request (stopped, saved)."""
        if stopped:
            self.finish(RunState.STOPPED, message=f"stopped at step {self.step}; adapter saved"
                        + (f"; {how_to_continue}" if how_to_continue else ""))
        else:
            self.finish(RunState.FINISHED, message="adapter saved")

    def fail(self, err: BaseException) -> None:
        if self.is_main:  # the failure and its traceback are for train.log; the console gets the CLI's one line
            self._log_handler.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, "run failed: %s", (err,),
                                                    None))
            self._log_handler.stream.write("".join(traceback.format_exception(err)))
            self._log_handler.flush()
        else:  # another process of a multi-process run: its console is all it has
            log.error("run failed: %s", err)
        self.finish(RunState.FAILED, message=f"{type(err).__name__}: {err}")

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        """An exception escaping the run's block marks it failed (with its traceback in train.log), then goes on."""
        if exc is not None and self._status.get("state") not in FINAL_STATES:
            self.fail(exc)
        return False


def rewind_logs(run_dir: Path, step: int) -> None:
    """Drop metrics and samples logged after `step`: a resumed run redoes those updates and logs them again."""
    for path in RunFolder(run_dir).step_logs:
        if path.exists():
            kept = [row for row in read_jsonl(path) if row.get("step", 0) <= step]
            write_whole(path, lambda tmp, kept=kept: tmp.write_text("".join(json.dumps(row) + "\n" for row in kept)))


def _finite(value):
    value = plain_value(value) if hasattr(value, "item") else value
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; a missing value plots as a gap
    return value


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
