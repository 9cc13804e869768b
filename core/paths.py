"""Where the project keeps its files. Every default location is spelled here once.

    data/             the prompt library, seed demonstrations, the database (rlhf.duckdb, git-ignored)
    models/           the embedded model once converted, and models/runs/: one folder per training run

Pages of the dashboard may only read and write inside these two folders (see `inside_project_folders`).
"""
from __future__ import annotations

import os
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


def inside_project_folders(path: str | Path) -> bool:
    """Whether `path` (resolved: `..` and links followed) lies inside one of `page_roots()`."""
    resolved = Path(path).expanduser().resolve()
    return any(resolved.is_relative_to(root) for root in page_roots())
