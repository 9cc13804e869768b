"""The shape of the code: core/'s import graph has no cycle, core never imports a UI library, the loop's layers
only import downwards, no module edits sys.path, no stage module imports the CLI, files stay short, and no link is
tracked."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

CORE = REPO / "core"
UI_LIBRARIES = ("gradio", "gradio_client", "streamlit")
# an insert, append, removal, slice or rebinding of sys.path, or a site directory added at run time
# ([s]: so this line does not match itself)
PATH_EDIT = re.compile(r"sys\.path\s*(\.\s*(insert|append|extend|remove|pop|clear)\b|\[|\+=|=(?!=))|add[s]itedir")
# What a sub-package may never import: the loop's layers (store, collect, train, judge, view) import only downwards.
FORBIDDEN = {"core.store": ("core.collect", "core.train", "core.judge", "core.view"),
             "core.collect": ("core.train", "core.judge", "core.view"),
             "core.train": ("core.judge", "core.view"), "core.judge": ("core.view",)}
SUB_PACKAGES = ("core.store", "core.collect", "core.train", "core.judge", "core.view")
ENTRY_POINTS = ("core.cli", "core.__main__")  # the command line is the one top-level module that reaches every stage


def module_name(path: Path, root: Path = REPO) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path = REPO) -> set[str]:
    """Every module a file imports, at any depth (a function-level import is an import too); a relative import is
    read as the absolute name it stands for."""
    found, package = set(), module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}  # `from core.train import runs`
    return found


def core_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in CORE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle as a path [a, b, ..., a], or None (depth-first search with colours)."""
    colour, stack = dict.fromkeys(graph, 0), []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if colour[nxt] == 1:
                return stack[stack.index(nxt):] + [nxt]
            if colour[nxt] == 0 and (cycle := visit(nxt)):
                return cycle
        colour[node] = 2
        stack.pop()
        return None

    return next((c for n in sorted(graph) if colour[n] == 0 and (c := visit(n))), None)


def test_the_cycle_finder_finds_a_hand_made_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_core_has_no_import_cycle():
    graph = core_graph()
    assert len(graph) > 30  # the graph really was read
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_core_never_imports_a_ui_library():
    offenders = {module_name(p): sorted(m for m in imports_of(p) if m.split(".")[0] in UI_LIBRARIES)
                 for p in CORE.rglob("*.py")}
    assert not {k: v for k, v in offenders.items() if v}


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(module, import) pairs where a layer imports one above it (FORBIDDEN)."""
    return [(name, dep) for name, deps in graph.items() for dep in deps
            for layer, forbidden in FORBIDDEN.items() if name.startswith(layer) and dep.startswith(forbidden)]


def test_each_layer_imports_only_downwards():
    assert not upward_imports(core_graph())


def test_top_level_modules_import_no_sub_package():
    """records, paths, config, runs, stages, model, win_rate ... are what every layer stands on: one that imported a
    layer would tie the layers into a cycle (config once read runs from core.train, which imports config)."""
    bad = [(name, dep) for name, deps in core_graph().items() for dep in deps
           if name.count(".") == 1 and not name.startswith(SUB_PACKAGES + ENTRY_POINTS)
           and dep.startswith(SUB_PACKAGES)]
    assert not bad


def test_the_layer_rule_catches_a_hand_made_upward_import(tmp_path):
    """The rules above read real imports: a relative import counts, and a layer importing upwards is seen."""
    fake = tmp_path / "core" / "train"
    fake.mkdir(parents=True)
    (fake / "x.py").write_text("from ..judge import evaluate\nfrom . import runs\n")
    found = imports_of(fake / "x.py", root=tmp_path)
    assert {"core.judge.evaluate", "core.train.runs"} <= found
    assert ("core.train.x", "core.judge.evaluate") in upward_imports({"core.train.x": found})


def test_only_the_store_talks_to_duckdb():
    """All SQL in one place (core/store/): no other module of core or apps opens a database or runs a statement."""
    talking = [str(p.relative_to(REPO)) for folder in ("core", "apps") for p in our_files(folder)
               if not p.relative_to(REPO).parts[:2] == ("core", "store")
               and ("duckdb" in imports_of(p) or re.search(r"\.execute\(|\.sql\(", p.read_text()))]
    assert not talking


def test_no_stage_module_imports_the_cli():
    from core.stages import STAGES

    for stage in STAGES.values():
        path = REPO / (stage.module.replace(".", "/") + ".py")
        assert not {m for m in imports_of(path) if m.startswith(("core.cli", "core.__main__"))}, stage.module


def our_files(folder: str):
    """The project's .py files in `folder`: not the TRL 1.12 anchor (it runs in its own venv, outside the package)
    and nothing under bench/out/, the benchmarks' ignored outputs (ppo_vs_trl builds a venv there)."""
    for path in (REPO / folder).rglob("*.py"):
        parts = path.relative_to(REPO).parts
        if "trl112_anchor" not in parts and parts[:2] != ("bench", "out"):
            yield path


@pytest.mark.parametrize("folder", ["core", "apps", "bench", "tests"])
def test_no_file_edits_sys_path(folder):
    for path in our_files(folder):
        assert not PATH_EDIT.search(path.read_text()), path


def test_the_repository_tracks_no_symbolic_link():
    """A link committed by mistake (a worktree's `.venv` or `models` pointing at another checkout) replaces the real
    folder on checkout, and git deletes the ignored files inside it: the virtual environment and every run."""
    staged = subprocess.run(["git", "ls-files", "--stage"], cwd=REPO, capture_output=True, text=True, check=True)
    assert not [line.split("\t")[-1] for line in staged.stdout.splitlines() if line.startswith("120000")]


def test_files_stay_under_400_lines():
    long = {str(p.relative_to(REPO)): n for folder in ("core", "apps", "bench", "tests") for p in our_files(folder)
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long


@pytest.mark.parametrize("entry", ["core", "apps", "bench"])
def test_every_entry_point_shortens_openmps_idle_spin_before_torch_loads(entry):
    """core/__init__.py sets GOMP_SPINCOUNT (two torch processes on the same cores starve each other otherwise),
    for apps and bench too, and a value the user set is kept."""
    code = f"import {entry}, os, sys; assert 'torch' not in sys.modules; print(os.environ['GOMP_SPINCOUNT'])"
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    ours = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    theirs = subprocess.run([sys.executable, "-c", code], env={**env, "GOMP_SPINCOUNT": "42"}, capture_output=True,
                            text=True, check=True)
    assert (ours.stdout.strip(), theirs.stdout.strip()) == ("10000", "42")
