"""Start, stop and resume training runs as processes of their own (what the dashboard's Train page does).

The dashboard never trains in its own process: a run is `python -m core train <stage> ...`, the same command a
researcher would type (shown before it starts), started in a session of its own so it outlives a page reload or a
restart of the dashboard. The run folder is chosen here and passed as --output-dir, so the page can follow the run
from its first second; `launch.json` records the command and pid before the run has written anything, and
`console.log` keeps what the process printed (a run that dies before its folder is set up says why there).
Stopping sends SIGTERM, which a run turns into a final save (`stopped`); a PPO run can then be resumed.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from core.config import to_command
from core.paths import REPO_ROOT, inside_project_folders
from core.records import InputError
from core.runs import (
    FINAL_STATES,
    RESUMABLE_STATES,
    RunFolder,
    RunState,
    new_run_dir,
    pid_alive,
    read_status,
    write_json,
)
from core.stages import STAGES

# The settings that name a file or folder. A page may point them only inside the project's folders (core/paths.py):
# the dashboard is not a way to read or write anywhere else on the machine.
PATH_SETTINGS = ("output_dir", "db", "prompts_file", "reward_model", "sft_adapter", "base_model", "resume",
                 "candidates_from", "pairs_from")


def check_paths(cfg) -> None:
    """InputError naming the first path setting of `cfg` that points outside the data and models folders. A
    base model that is not a local path (a Hugging Face id such as HuggingFaceTB/SmolLM2-360M) is left alone."""
    for name in PATH_SETTINGS:
        value = str(getattr(cfg, name, "") or "")
        if not value:
            continue
        if name == "base_model" and not value.startswith(("/", ".", "~")) and not Path(value).exists():
            continue
        if not inside_project_folders(value):
            raise InputError(f"{name.replace('_', '-')}: {value} is outside the data and models folders; pick a "
                             "file or run under data/ or models/ (or leave it empty).")


@dataclass(frozen=True)
class Launch:
    run_dir: Path
    pid: int
    command: list[str]


def command_for(stage: str, cfg, run_dir: Path | None = None) -> list[str]:
    """The exact command that runs `cfg` into `run_dir` (what the form previews and what is started)."""
    if run_dir is not None:
        cfg = dataclasses.replace(cfg, output_dir=str(run_dir))
    return to_command(stage, cfg)


def launch(stage: str, cfg, runs_root: Path | None = None) -> Launch:
    """Start a run of `stage` with `cfg` in the background; returns at once with its folder and pid."""
    check_paths(cfg)
    run_dir = Path(cfg.output_dir).resolve() if cfg.output_dir else new_run_dir(stage, runs_root)
    folder = RunFolder(run_dir)
    if folder.status.exists() or folder.launch.exists():
        raise InputError(f"{run_dir} already holds a run; leave the output folder empty for a fresh one.")
    run_dir.mkdir(parents=True, exist_ok=True)
    return _start(run_dir, command_for(stage, cfg, run_dir))


def resume(run_dir: Path) -> Launch:
    """Continue a stopped, failed or killed PPO run from its last checkpoint."""
    folder = RunFolder(run_dir)
    run_dir, stage = folder.path, folder.stage
    if stage not in STAGES or not STAGES[stage].resumable:
        raise InputError(f"only PPO runs resume; start a new {stage or 'training'} run instead (it takes minutes).")
    state = read_status(run_dir).get("state")  # "starting" while a resume is already loading
    if state not in RESUMABLE_STATES:
        raise InputError(f"{run_dir.name} is {state}; only a stopped, failed or killed run can be resumed.")
    if not folder.checkpoint_state.exists():
        raise InputError(f"{run_dir.name} saved no checkpoint to resume from; start a new run.")
    return _start(run_dir, ["python", "-m", "core", "train", stage, "--resume", str(run_dir)])


def stop(run_dir: Path) -> str:
    """Ask a running run to stop at the end of its current step (it saves first). Returns what was done."""
    status = read_status(run_dir)
    if status.get("state") in FINAL_STATES or status.get("state") == RunState.DAMAGED:
        return f"{Path(run_dir).name} is not running ({status.get('state')})."
    pid = status.get("pid")
    if not pid_alive(pid):
        return f"{Path(run_dir).name} has no live process."
    if not _is_training(pid):
        return f"pid {pid} is no longer {Path(run_dir).name}'s process; nothing was stopped."
    os.kill(pid, signal.SIGTERM)
    if status.get("state") == RunState.STARTING:
        return f"stopped {Path(run_dir).name} while it was still starting (nothing to save yet)."
    return f"asked {Path(run_dir).name} to stop: it saves at the end of the current step."


def _is_training(pid: int) -> bool:
    """Whether `pid` still runs `core train` (a pid from an old status file may since belong to another process)."""
    try:
        return b"core" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc (macOS): trust the status file


def log_tail(run_dir: Path, lines: int = 20) -> str:
    """The last lines the run logged (train.log, or console.log for a run that died while starting)."""
    folder = RunFolder(run_dir)
    logs = [p for p in (folder.log, folder.console) if p.exists() and p.stat().st_size]
    if not logs:
        return ""
    newest = max(logs, key=lambda p: p.stat().st_mtime)  # a resume that died while starting wrote console.log last
    with open(newest, "rb") as f:
        f.seek(max(0, newest.stat().st_size - 64_000))
        return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])


def _start(run_dir: Path, command: list[str]) -> Launch:
    argv = [sys.executable, *command[1:]]  # "python" in the preview; this interpreter (the venv's) in practice
    folder = RunFolder(run_dir)
    with open(folder.console, "ab") as console:
        process = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=console, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    write_json(folder.launch, {"stage": command[4], "command": command, "pid": process.pid,
                                         "launched_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    # reap it when it ends, so a finished child never lingers as a zombie that still looks alive
    threading.Thread(target=process.wait, daemon=True, name=f"reap-{process.pid}").start()
    return Launch(run_dir, process.pid, command)
