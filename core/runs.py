"""A training run is a folder, and this module is the only code that writes or reads one.

    models/runs/<stage>-<YYYYmmdd-HHMMSS>/
        config.json     the stage's config as run (+ base model, device, versions)
        data/           the exact snapshot it trained on, and lineage.json (counts, newest vote, database path)
        metrics.jsonl   one flat dict per logged step: {"step": 3, "objective/kl": 0.8, ...}
        status.json     state, step, total, eta_s, pid, started_at, updated_at, message
        samples.jsonl   generations with their scores (stages that generate)
        eval_samples.jsonl  PPO's periodic answers to held-out requests (--eval-every), for the over-optimisation view
        launch.json, console.log  written when the dashboard starts the run (core/launcher.py): command, pid, output
        adapter/        the PEFT adapter (the run's product)
        checkpoint/     what --resume continues from (PPO)
        train.log       the run's log

States: running -> finished | stopped (SIGTERM/Ctrl-C, with a final checkpoint) | failed (exception, message
kept). A run killed with SIGKILL cannot say so: `read_status` reports a "running" run whose pid is gone as "killed".
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tqdm.auto import tqdm

from core import config as config_io

DEFAULT_RUNS_DIR = Path(__file__).resolve().parent.parent / "models" / "runs"


def runs_root() -> Path:
    """Where run folders go: $RLHF_RUNS_DIR (read at each call: a dashboard or a test may point it elsewhere)."""
    return Path(os.environ.get("RLHF_RUNS_DIR") or DEFAULT_RUNS_DIR)


FINAL_STATES = ("finished", "stopped", "failed", "killed")
log = logging.getLogger(__name__)


def is_main_process() -> bool:
    """Rank 0 of an `accelerate launch` (or the only process): the one that writes the run folder."""
    return int(os.environ.get("RANK", "0")) == 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def prepare_run_dir(stage: str, output_dir: str = "", resume: str = "") -> Path:
    """The run's folder: `resume` (an existing run), else `output_dir`, else a fresh one under models/runs/.
    A folder that already holds a run is refused unless resumed, so two runs never mix their logs. Under
    `accelerate launch` every process must agree on the folder without talking: pass --output-dir."""
    from core.records import InputError

    if world_size() > 1:
        if not (resume or output_dir):
            raise InputError("with several processes, name the run folder: pass --output-dir models/runs/<name>.")
        if not is_main_process():
            return Path(resume or output_dir)
    if resume:
        path = Path(resume)
        if not (path / "config.json").exists():
            raise InputError(f"{resume} is not a run folder (no config.json); pass the folder of the run to continue.")
        return path
    if not output_dir:
        return new_run_dir(stage)
    path = Path(output_dir)
    if (path / "status.json").exists():
        raise InputError(f"{path} already holds a run; pass a new --output-dir (or --resume it, for PPO).")
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_run_dir(stage: str, root: Path | None = None) -> Path:
    """A fresh `<stage>-<timestamp>` folder under `root` (a suffix keeps two runs in one second apart)."""
    root = Path(root or runs_root())
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(100):
        path = root / f"{stage}-{stamp}{'' if n == 0 else f'-{n}'}"
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a run folder under {root}")


def write_json(path: Path, payload: dict) -> None:
    """Write whole-or-nothing (a reader never sees half a file, even if the process dies mid-write)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def append_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, default=_plain) + "\n")


def _plain(value):
    return value.item() if hasattr(value, "item") else str(value)


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
    """The writer side of a run folder: config, metrics, samples, status with ETA, and a terminal progress bar."""

    def __init__(self, path: Path, total: int, resumed_step: int = 0):
        self.path, self.total, self.is_main = Path(path), total, is_main_process()
        self.step, self.first_step, self.started = resumed_step, resumed_step, time.monotonic()
        self.stop = StopRequest().install()
        self._bar = tqdm(total=total, initial=resumed_step, desc=self.path.name, disable=not self.is_main,
                         dynamic_ncols=True)
        self._status = {}
        if self.is_main:
            self._log_handler = logging.FileHandler(self.path / "train.log")
            self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            logging.getLogger().addHandler(self._log_handler)
            logging.getLogger().setLevel(min(logging.getLogger().level or logging.INFO, logging.INFO))
            previous = read_json(self.path / "status.json")
            self.set_status("running", started_at=previous.get("started_at", _now()), resumed_at_step=resumed_step)

    def set_total(self, total: int) -> None:
        """The step count, once known (a Hugging Face trainer knows it only when training begins)."""
        self.total = self._bar.total = total
        self._bar.refresh()
        self.set_status("running")

    def restart_at(self, step: int) -> None:
        """Continue counting from `step` (a resumed run); the ETA is measured from here."""
        self.step = self.first_step = step
        self.started = time.monotonic()
        self._bar.reset(total=self.total)
        self._bar.update(step)
        self.set_status("running", resumed_at_step=step)

    def save_config(self, cfg, **extra) -> None:
        if self.is_main:
            config_io.save(cfg, self.path / "config.json", **extra)

    def set_status(self, state: str, **fields) -> None:
        if not self.is_main:
            return
        self._status.update(state=state, step=self.step, total=self.total, eta_s=self.eta_s(), pid=os.getpid(),
                            updated_at=_now(), **fields)
        write_json(self.path / "status.json", self._status)

    def eta_s(self) -> float | None:
        done = self.step - self.first_step
        if done <= 0:
            return None
        return round((time.monotonic() - self.started) / done * max(self.total - self.step, 0), 1)

    def log_metrics(self, step: int, metrics: dict) -> None:
        """One flat row in metrics.jsonl; advances the progress bar and status to `step`."""
        row = {"step": step, **{k: _finite(v) for k, v in metrics.items()}}
        if self.is_main:
            append_jsonl(self.path / "metrics.jsonl", [row])
        self._bar.update(max(step - self.step, 0))
        self.step = max(self.step, step)
        self.set_status("running")

    def log_samples(self, step: int, samples: list[dict]) -> None:
        if self.is_main:
            append_jsonl(self.path / "samples.jsonl", [{"step": step, **s} for s in samples])

    def finish(self, state: str = "finished", message: str = "") -> None:
        self._bar.close()
        self.set_status(state, message=message, finished_at=_now())
        if self.is_main:
            logging.getLogger().removeHandler(self._log_handler)
            self._log_handler.close()

    def complete(self, stopped: bool, how_to_continue: str = "") -> None:
        """The final status of a run that ended on its own (finished) or on request (stopped, saved)."""
        if stopped:
            self.finish("stopped", message=f"stopped at step {self.step}; adapter saved"
                        + (f"; {how_to_continue}" if how_to_continue else ""))
        else:
            self.finish("finished", message="adapter saved")

    def fail(self, err: BaseException) -> None:
        log.error("run failed: %s", err)
        if self.is_main:  # the traceback is for train.log; the console gets the CLI's one-line error
            self._log_handler.stream.write("".join(traceback.format_exception(err)))
            self._log_handler.flush()
        self.finish("failed", message=f"{type(err).__name__}: {err}")

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        """An exception escaping the run's block marks it failed (with its traceback in train.log), then goes on."""
        if exc is not None and self._status.get("state") not in FINAL_STATES:
            self.fail(exc)
        return False


def rewind_logs(run_dir: Path, step: int) -> None:
    """Drop metrics and samples logged after `step`: a resumed run redoes those updates and logs them again."""
    for name in ("metrics.jsonl", "samples.jsonl", "eval_samples.jsonl"):
        path = Path(run_dir) / name
        if path.exists():
            kept = [row for row in read_jsonl(path) if row.get("step", 0) <= step]
            tmp = path.with_name(f".{name}.tmp")
            tmp.write_text("".join(json.dumps(row) + "\n" for row in kept))
            os.replace(tmp, path)


def _finite(value):
    value = _plain(value) if hasattr(value, "item") else value
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; a missing value plots as a gap
    return value


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---- the reader side (dashboard, tests, --resume) ------------------------------------------------------------------
def read_json(path: Path) -> dict:
    """A JSON file, or {} when it is missing or damaged (a reader never crashes on a bad folder)."""
    try:
        value = json.loads(Path(path).read_text())
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def read_jsonl(path: Path) -> list[dict]:
    """Every whole line of a JSONL file; a torn last line (a run killed mid-write) is skipped."""
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    rows.append(row)
    except OSError:
        pass
    return rows


def pid_alive(pid) -> bool:
    """Whether process `pid` is running (a zombie, ended but not yet reaped by its parent, is not)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): kill(pid, 0) is all we know


def read_status(run_dir: Path) -> dict:
    """status.json, with a "running" run whose process is gone reported as "killed". A folder the dashboard
    launched (launch.json) but whose process has not written a status yet is "starting", or "failed" if the
    process already ended (its console.log says why)."""
    status = read_json(Path(run_dir) / "status.json")
    launched = read_json(Path(run_dir) / "launch.json")
    if status and launched and str(launched.get("launched_at", "")) > str(status.get("updated_at", "")) \
            and status.get("state") != "running" and pid_alive(launched.get("pid")):
        # resumed from the dashboard, still loading: the old status would offer Resume a second time
        return {**status, "state": "starting", "pid": launched["pid"], "message": "resuming: loading the model"}
    if not status:
        if launched and pid_alive(launched.get("pid")):
            return {"state": "starting", "pid": launched["pid"], "message": "loading the model and the data"}
        if launched:
            return {"state": "failed", "message": "the process ended before the run started; see console.log"}
        return {"state": "damaged", "message": "status.json is missing or unreadable"}
    if status.get("state") == "running" and not pid_alive(status.get("pid")):
        status = {**status, "state": "killed", "message": "the process ended without a final status (killed?)"}
    return status


@dataclass
class RunInfo:
    path: Path
    stage: str
    status: dict

    @property
    def name(self) -> str:
        return self.path.name


def list_runs(root: Path | None = None) -> list[RunInfo]:
    """Every run folder under `root`, newest first."""
    root = Path(root or runs_root())
    if not root.is_dir():
        return []
    runs = [RunInfo(p, p.name.split("-")[0], read_status(p)) for p in root.iterdir() if p.is_dir()]
    return sorted(runs, key=lambda r: r.path.name.split("-", 1)[-1], reverse=True)  # by timestamp, any stage
