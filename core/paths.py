"""Where the project keeps its files. Every default location is spelled here once.

    data/             the prompt library, seed demonstrations, the database (rlhf.duckdb, git-ignored)
    models/           the embedded model once converted, and models/runs/: one folder per training run

Pages of the dashboard may only read and write inside these two folders (see `inside_project_folders`).
"""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
MODELS_DIR = REPO_ROOT / "models"
DEFAULT_DB = DATA_DIR / "rlhf.duckdb"
DEFAULT_RUNS_DIR = MODELS_DIR / "runs"
