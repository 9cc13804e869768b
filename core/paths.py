"""Where the project keeps its files. Every default location is spelled here once.

    data/             the prompt library, seed demonstrations, the database (rlhf.duckdb, git-ignored)
    models/           the embedded model once converted, and models/runs/: one folder per training run

Pages of the dashboard may only read and write inside these two folders (see `inside_project_folders`).
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
MODELS_DIR = REPO_ROOT / "models"
DEFAULT_DB = DATA_DIR / "rlhf.duckdb"
DEFAULT_RUNS_DIR = MODELS_DIR / "runs"


def page_roots() -> list[Path]:
    """Where a page of the dashboard may point a setting: the data and models folders, plus the database, runs
    folder and base model the dashboard itself was started with ($RLHF_DB, $RLHF_RUNS_DIR, $RLHF_BASE_MODEL)."""
    roots = [DATA_DIR, MODELS_DIR]
    for variable in ("RLHF_DB", "RLHF_RUNS_DIR", "RLHF_BASE_MODEL"):  # the database file itself, not its folder
        if os.environ.get(variable):
            roots.append(Path(os.environ[variable]).expanduser())
    return [root.resolve() for root in roots]


def write_whole(path: str | Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` into a file beside `path`, then rename it onto `path`: a reader (the dashboard, another process)
    sees the old file or the new one, never half of one, and a write that fails or is interrupted leaves the old file
    and no temporary behind (a killed process can leave one: its name starts with a dot and ends in .tmp)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: two writers never share a temporary
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # the error that stopped the write is the one to report
            tmp.unlink(missing_ok=True)
        raise


def inside_project_folders(path: str | Path) -> bool:
    """Whether `path` (resolved: `..` and links followed) lies inside one of `page_roots()`."""
    resolved = Path(path).expanduser().resolve()
    return any(resolved.is_relative_to(root) for root in page_roots())
