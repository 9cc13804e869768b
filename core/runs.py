"""A training run is a folder, and this module owns it: every file name in a run folder is spelled here, once.

    models/runs/<stage>-<YYYYmmdd-HHMMSS>/     (or any --output-dir: the stage is read from the files, not the name)
        config.json         the stage's config as run, its stage, base model, device, processes
        status.json         state, step, total, eta_s, pid, started_at, updated_at, message (see RunState)
        metrics.jsonl       one flat dict per logged step: {"step": 3, "objective/kl": 0.8, ...}
        train.log           the run's log (a failed run's traceback too)
        data/               the exact snapshot it trained on (core/train/snapshot.py):
            lineage.json        counts, sources, votes per round (PPO, RLOO, rejection: their reward model's), newest vote
            votes.parquet, pairs.parquet                 reward model: every labelled vote, the pairs it trained on
            demonstrations.jsonl                         SFT: the lists it imitated
            prompts_train.jsonl, prompts_eval.jsonl      the requests it sampled for (PPO) or evaluated on
        adapter/            the PEFT adapter: the run's product
        samples.jsonl       generations with their scores (SFT: base vs tuned; PPO: every --sample-every updates)
        scores.parquet      reward model: every labelled pair scored (the dashboard's disagreements)
        calibration.json    reward model: held-out accuracy with counts, ECE, reliability bins, accuracy by gap and round
        checkpoint/state.pt PPO: everything --resume continues from (DPO and RLOO save none: they are minutes long)
        eval_samples.jsonl  PPO --eval-every: answers to held-out requests, for the over-optimisation view
        judgements.jsonl    written by a judge other than the reward model (bench/loop.py's scripted annotator)
        tensorboard/        --report-to tensorboard: the same metrics as event files
        launch.json, console.log   written when the dashboard starts the run (core/train/launcher.py)

Writer side: `Run` in core/train/run_writer.py (config, metrics, samples, status with ETA, a progress bar), which
asks `RunFolder` for every path. Reader side, here: `read_status`, `list_runs`, the adapter of a run. A run goes starting -> running -> finished | stopped | failed; see RunState.
"""
from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from core.paths import DEFAULT_RUNS_DIR, write_whole
from core.records import InputError, ModelLoadError
from core.stages import stage_named_by_config


class RunState(StrEnum):
    """What status.json says, or what the readers conclude when it cannot say."""
    STARTING = "starting"  # launched from the dashboard; the process is loading and has written no status yet
    RUNNING = "running"
    FINISHED = "finished"
    STOPPED = "stopped"  # SIGTERM or Ctrl-C: saved at a step boundary (PPO: resumable)
    FAILED = "failed"  # an exception; status.json keeps its message, train.log its traceback
    KILLED = "killed"  # status says running but the process is gone (SIGKILL, power loss): it could not say so
    DAMAGED = "damaged"  # status.json missing or unreadable


FINAL_STATES = frozenset({RunState.FINISHED, RunState.STOPPED, RunState.FAILED, RunState.KILLED})
RESUMABLE_STATES = frozenset({RunState.STOPPED, RunState.FAILED, RunState.KILLED})


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder (the layout above). Other modules ask here; none spells a file name."""
    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    config = property(lambda self: self.path / "config.json")
    status = property(lambda self: self.path / "status.json")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    log = property(lambda self: self.path / "train.log")
    data = property(lambda self: self.path / "data")
    lineage = property(lambda self: self.path / "data" / "lineage.json")
    adapter = property(lambda self: self.path / "adapter")
    samples = property(lambda self: self.path / "samples.jsonl")
    scores = property(lambda self: self.path / "scores.parquet")
    calibration = property(lambda self: self.path / "calibration.json")
    checkpoint = property(lambda self: self.path / "checkpoint")
    checkpoint_state = property(lambda self: self.path / "checkpoint" / "state.pt")
    eval_samples = property(lambda self: self.path / "eval_samples.jsonl")
    judgements = property(lambda self: self.path / "judgements.jsonl")
    tensorboard = property(lambda self: self.path / "tensorboard")
    launch = property(lambda self: self.path / "launch.json")
    console = property(lambda self: self.path / "console.log")

    def snapshot(self, name: str) -> Path:
        """A file of the data snapshot: votes.parquet, arena_demonstrations.parquet, ratings.parquet, pairs.parquet
        (the reward model's), demonstrations.jsonl (SFT's), prompts_<split>.jsonl."""
        return self.data / name

    @property
    def step_logs(self) -> tuple[Path, ...]:
        """The per-step logs a resumed run rewinds to its checkpoint."""
        return self.metrics, self.samples, self.eval_samples

    @property
    def stage(self) -> str:
        """The stage, from the run's own files: config.json, else launch.json (a run still starting); "" if neither
        says (a folder name is never trusted: --output-dir can be anything)."""
        config = read_json(self.config)
        return (config.get("stage") or stage_named_by_config(config.get("stage_config", ""))
                or read_json(self.launch).get("stage") or "")


def runs_root() -> Path:
    """Where run folders go: $RLHF_RUNS_DIR (read at each call: a dashboard or a test may point it elsewhere)."""
    return Path(os.environ.get("RLHF_RUNS_DIR") or DEFAULT_RUNS_DIR)


def is_main_process() -> bool:
    """Rank 0 of an `accelerate launch` (or the only process): the one that writes the run folder."""
    return int(os.environ.get("RANK", "0")) == 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def prepare_run_dir(stage: str, output_dir: str = "", resume: str = "") -> Path:
    """The run's folder: `resume` (an existing run), else `output_dir`, else a fresh one under models/runs/.
    A folder that already holds a run is refused unless resumed, so two runs never mix their logs. Under
    `accelerate launch` every process must agree on the folder without talking: pass --output-dir."""
    if world_size() > 1:
        if not (resume or output_dir):
            raise InputError("with several processes, name the run folder: pass --output-dir models/runs/<name>.")
        if not is_main_process():
            return Path(resume or output_dir)
    if resume:
        folder = RunFolder(resume)
        if not folder.config.exists():
            raise InputError(f"{resume} is not a run folder (no config.json); pass the folder of the run to continue.")
        return folder.path
    if not output_dir:
        return new_run_dir(stage)
    folder = RunFolder(output_dir)
    if folder.status.exists():
        raise InputError(f"{folder.path} already holds a run; pass a new --output-dir (or --resume it, for PPO).")
    folder.path.mkdir(parents=True, exist_ok=True)
    return folder.path


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


ADAPTER_CONFIG = "adapter_config.json"  # PEFT's own file inside adapter/


def run_folder(path: str | Path) -> Path:
    """The run folder, given it or the adapter folder inside it."""
    path = Path(path)
    return path.parent if path.name == "adapter" else path


def adapter_dir(path: str | Path) -> Path:
    """A run folder or an adapter folder -> the folder holding adapter_config.json."""
    folder = RunFolder(path)
    return folder.adapter if (folder.adapter / ADAPTER_CONFIG).exists() else folder.path


def adapter_config(path: str | Path) -> dict:
    """The adapter_config.json of a run or adapter folder, unchecked ({} when there is none)."""
    return read_json(adapter_dir(path) / ADAPTER_CONFIG)


def read_adapter_config(path: str | Path, task_type: str, made_by: str) -> dict:
    """A run's or adapter folder's adapter_config.json, checked to be the kind of adapter expected."""
    config_path = adapter_dir(path) / ADAPTER_CONFIG
    if not config_path.exists():
        raise ModelLoadError(f"{path} holds no adapter (no adapter_config.json); pass a folder made by `{made_by}`.")
    with readable_adapter(path, made_by):
        saved = json.loads(config_path.read_text())
    if not isinstance(saved, dict):
        raise ModelLoadError(f"{config_path} is not an adapter config; pass a folder made by `{made_by}`.")
    if saved.get("task_type") not in (task_type, None if task_type == "CAUSAL_LM" else task_type):  # untyped: LM
        raise ModelLoadError(f"{path} holds a {saved.get('task_type')} adapter, not the {task_type} adapter "
                             f"expected here; pass a folder made by `{made_by}`.")
    return saved


@contextmanager
def readable_adapter(path: str | Path, made_by: str):
    """Loading a run's adapter (PEFT, safetensors, JSON) inside this: a damaged folder (truncated weights, a config
    PEFT cannot read, half a copy) becomes one ModelLoadError line saying what to do, not a traceback in a page or
    the arena. Broad on purpose: safetensors raises its own Exception subclass, PEFT a ValueError or a KeyError."""
    try:
        yield
    except ModelLoadError:
        raise
    except Exception as err:  # noqa: BLE001 - every failure to read the folder is the same message to the person
        said = (str(err).strip().splitlines() or [""])[0][:200]
        raise ModelLoadError(f"{path} holds an adapter that could not be loaded ({type(err).__name__}: {said}); "
                             f"pass another run, or make this one again with `{made_by}`.") from err


def write_json(path: Path, payload: dict) -> None:
    """Write whole-or-nothing (a reader never sees half a file, even if the process dies mid-write)."""
    write_whole(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n"))


def write_parquet(path: Path, frame) -> None:
    """A pandas frame as parquet, whole-or-nothing like write_json (the dashboard may read it while it is written)."""
    write_whole(path, lambda tmp: frame.to_parquet(tmp, index=False))


def append_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, default=plain_value) + "\n")


def plain_value(value):
    return value.item() if hasattr(value, "item") else str(value)


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
    folder = RunFolder(run_dir)
    status, launched = read_json(folder.status), read_json(folder.launch)
    if status and launched and str(launched.get("launched_at", "")) > str(status.get("updated_at", "")) \
            and status.get("state") != RunState.RUNNING:
        if pid_alive(launched.get("pid")):
            # resumed from the dashboard, still loading: the old status would offer Resume a second time
            return {**status, "state": RunState.STARTING, "pid": launched["pid"],
                    "message": "resuming: loading the model"}
        # the resume ended before the run wrote a word (a bad setting, a damaged config): not the old state again
        return {**status, "state": RunState.FAILED, "message": "the resume ended before the run restarted; see "
                                                               "console.log"}
    if not status:
        if launched and pid_alive(launched.get("pid")):
            return {"state": RunState.STARTING, "pid": launched["pid"], "message": "loading the model and the data"}
        if launched:
            return {"state": RunState.FAILED, "message": "the process ended before the run started; see console.log"}
        return {"state": RunState.DAMAGED, "message": "status.json is missing or unreadable"}
    if status.get("state") == RunState.RUNNING and not pid_alive(status.get("pid")):
        status = {**status, "state": RunState.KILLED, "message": "the process ended without a final status (killed?)"}
    return status


@dataclass
class RunInfo:
    path: Path
    stage: str
    status: dict

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.path)


STAMP = re.compile(r"\d{8}-\d{6}")  # what new_run_dir puts in a folder's name


def started(run: RunInfo) -> float:
    """When a run started, as a POSIX time: its status says; a run without one (still starting, or damaged) goes by
    the stamp in its name, else by when its folder last changed (a --output-dir name need not hold a time)."""
    try:
        return datetime.fromisoformat(run.status["started_at"]).timestamp()
    except (KeyError, TypeError, ValueError):
        pass
    if stamp := STAMP.search(run.name):
        try:
            return datetime.strptime(stamp.group(0), "%Y%m%d-%H%M%S").timestamp()  # local, as new_run_dir wrote it
        except ValueError:  # digits that are no time (month 13): the folder's time instead
            pass
    try:
        return run.path.stat().st_mtime
    except OSError:  # removed since it was listed: last
        return 0.0


def list_runs(root: Path | None = None) -> list[RunInfo]:
    """Every run folder under `root`, newest first: by when each started, not by its name (a run named by
    --output-dir, "reward-mine", would otherwise sort above every stamped one and count as the newest)."""
    root = Path(root or runs_root())
    if not root.is_dir():
        return []
    runs = [RunInfo(p, RunFolder(p).stage, read_status(p)) for p in root.iterdir() if p.is_dir()]
    # ties (two runs in one second): new_run_dir's suffix, -1, -2..., decides
    return sorted(runs, key=lambda r: (started(r), r.name.split("-", 1)[-1]), reverse=True)


def finished_runs(stage: str, root: Path | None = None) -> list[RunInfo]:
    """The finished runs of one stage under `root` (default $RLHF_RUNS_DIR), newest first."""
    return [r for r in list_runs(root) if r.stage == stage and r.status.get("state") == RunState.FINISHED]


def newest_finished_run(stage: str, root: Path | None = None) -> Path | None:
    """The newest finished run of `stage` (for example the reward model that the arena's uncertain choice and the
    leaderboard score with); None when there is none yet."""
    return next((r.path for r in finished_runs(stage, root)), None)
