"""Every `python -m core ...` command that README.md's code blocks and core's module docstrings show still parses:
its command and flags are known and its values have their settings' types and choices. A renamed flag otherwise
leaves the docs telling a user to type something the CLI refuses. Nothing runs: the stages' flags go through
core.config.check_flags (what a config's __post_init__ checks, files and folders, needs a real run)."""
from __future__ import annotations

import argparse
import ast
import re
import shlex
from pathlib import Path

import pytest

from core.cli import build_parser
from core.config import check_flags, config_parser
from core.judge.evaluate import EvalConfig
from core.stages import config_class

ROOT = Path(__file__).resolve().parents[1]
COMMAND = re.compile(r"^\s*python -m core (.*)$", flags=re.M)  # a command line, not prose naming one
ARENA = re.compile(r"python -m apps\.arena([^`\n]*(?:\n\s*\[[^`\n]*)*)")  # and its [...] lines below


def documented_lines() -> list[tuple[str, str]]:
    """(where, the text after `python -m core`) for each command in README's fenced blocks and core's docstrings,
    continuation lines joined."""
    texts = [("README.md", block) for block in re.findall(r"```[a-z]*\n(.*?)```", (ROOT / "README.md").read_text(),
                                                          flags=re.S)]
    for path in sorted((ROOT / "core").rglob("*.py")):
        docstring = ast.get_docstring(ast.parse(path.read_text()), clean=False) or ""
        texts.append((str(path.relative_to(ROOT)), docstring))
    found = []
    for where, text in texts:
        found += [(where, match.group(1)) for match in COMMAND.finditer(re.sub(r"\\\n\s*", " ", text))]
    return found


def documented_arena_commands() -> list[tuple[str, str]]:
    """(where, the text after `python -m apps.arena`) in README (inline code, which may wrap) and the arena's
    docstring (its [...] options continue on the lines below)."""
    readme = re.sub(r"`\n", "` ", (ROOT / "README.md").read_text())
    spans = [("README.md", span.replace("\n", " ")) for span in re.findall(r"`(python -m apps\.arena[^`]*)`", readme)]
    docstring = ast.get_docstring(ast.parse((ROOT / "apps" / "arena.py").read_text()), clean=False)
    spans += [("apps/arena.py", match.group(0).replace("\n", " ")) for match in ARENA.finditer(docstring)]
    return [(where, span.removeprefix("python -m apps.arena").strip()) for where, span in spans]


def argv_of(text: str) -> list[str]:
    """A documented command as the words a user would type: the optional parts in [...] included, the first of
    `a|b` alternatives taken (of `[--a A | --b B]`, --a), a `...` standing for a flag's value read as a run folder
    and dropped elsewhere."""
    text = re.split(r"\s{2,}#|\s+#\s", text)[0]  # a trailing comment
    text = re.sub(r"\s+\(.*$", "", text)  # a trailing "(what picks it)" remark
    words = shlex.split(text.replace("[", " ").replace("]", " "))
    argv: list[str] = []
    dropping = None  # after a bare "|": "flag" until the alternative flag, then "values" until the next flag
    for word in words:
        if word == "|":
            dropping = "flag"
            continue
        if dropping == "flag" and word.startswith("--") or dropping == "values" and not word.startswith("--"):
            dropping = "values"
            continue
        dropping = None
        if "|" in word and not word.startswith("-"):
            word = word.split("|")[0]
        if word == "...":
            if argv and argv[-1].startswith("--"):
                argv.append("RUN")
            continue
        argv.append(word)
    return argv


def flags_known(words: list[str], parser: argparse.ArgumentParser) -> None:
    """Each flag typed in full: argparse also takes a prefix (`--candidate` for `--candidates`), which would let a
    renamed flag's docs pass while they show a name that no longer exists."""
    known = {option for action in parser._actions for option in action.option_strings}
    unknown = [word.split("=")[0] for word in words if word.startswith("--") and word.split("=")[0] not in known]
    assert not unknown, f"not a flag of {parser.prog}: {unknown}"


def check_command(argv: list[str]) -> None:
    """The CLI's own parser for the command; a stage's (or eval's) config parser for its settings."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command in ("train", "eval"):
        cls = config_class(args.stage) if args.command == "train" else EvalConfig
        settings = args.settings if args.command == "train" else unknown + args.settings
        check_flags(cls, settings, args.command)
        flags_known(settings, config_parser(cls))
    else:
        assert not unknown, f"unknown arguments {unknown}"
        subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
        flags_known(argv, subcommands[args.command])


DOCUMENTED = documented_lines()
ARENA_DOCUMENTED = documented_arena_commands()


def test_the_docs_show_every_command():
    """The extraction finds what it should: a silent regex would make the test below check nothing."""
    commands = {argv_of(text)[0] for _, text in DOCUMENTED}
    assert {"prepare-model", "import-votes", "export-votes", "stats", "train", "score", "eval", "leaderboard",
            "next-round"} <= commands
    stages = {argv_of(text)[1] for _, text in DOCUMENTED if argv_of(text)[0] == "train"}
    assert {"sft", "reward", "ppo", "dpo", "rloo", "rejection"} <= stages


@pytest.mark.parametrize(("where", "text"), DOCUMENTED, ids=[f"{w}: {t[:60]}" for w, t in DOCUMENTED])
def test_a_documented_command_parses(where, text):
    argv = argv_of(text)
    if "--help" in argv:
        return  # "[--help for every setting]": prose about a flag, and --help exits
    try:
        check_command(argv)
    except SystemExit as exit_:  # argparse's refusal
        pytest.fail(f"{where}: `python -m core {text}` is refused by the CLI (exit {exit_.code})")


def test_the_docs_show_the_arena_command():
    flags = {word for _, text in ARENA_DOCUMENTED for word in argv_of(text) if word.startswith("--")}
    assert {"--base-model", "--pairing", "--challenger", "--round", "--db", "--port", "--sampling", "--repeat-rate",
            "--reward-model", "--engine", "--focus"} <= flags


@pytest.mark.parametrize(("where", "text"), ARENA_DOCUMENTED, ids=[f"{w}: {t[:60]}" for w, t in ARENA_DOCUMENTED])
def test_a_documented_arena_command_parses(where, text):
    from apps.arena import arena_parser  # gradio: imported by these tests only

    try:
        arena_parser().parse_args(argv_of(text))
    except SystemExit as exit_:
        pytest.fail(f"{where}: `python -m apps.arena {text}` is refused (exit {exit_.code})")
    flags_known(argv_of(text), arena_parser())


def test_a_renamed_flag_is_caught():
    """The check can fail: a flag no stage has, a value outside a setting's choices."""
    with pytest.raises(Exception, match="no-such-flag|unrecognized"):
        check_command(argv_of("train reward --preset quick --no-such-flag 1"))
    with pytest.raises(SystemExit):
        check_command(argv_of("next-round --method sft"))
    with pytest.raises(SystemExit):
        check_command(argv_of("leaderboard --bootstrap many"))
    with pytest.raises(AssertionError, match="--sft-weigh"):  # a prefix argparse would take
        check_command(argv_of("train dpo --sft-weigh 1"))
    with pytest.raises(AssertionError, match="--boot"):
        check_command(argv_of("leaderboard --boot 10"))


def test_every_test_readme_names_exists():
    """README's bad-input table names the test behind each row (`test_x.py::test_y`, or `::test_z` for the same
    file): a renamed or moved test would leave the row pointing at nothing."""
    named, file = [], None
    for match in re.finditer(r"`(test_\w+\.py)?(?:::(test_\w+))?`", (ROOT / "README.md").read_text()):
        if not any(match.groups()):  # two backticks of a code fence
            continue
        file = match.group(1) or file
        named.append((file, match.group(2)))
    assert len(named) > 30  # the table is there and read
    missing = [f"{file}::{name}" if name else file for file, name in named
               if not (ROOT / "tests" / file).exists()
               or name and not re.search(rf"^def {name}\(", (ROOT / "tests" / file).read_text(), flags=re.M)]
    assert not missing, f"README names tests that do not exist: {missing}"


def bench_sections() -> list[str]:
    return re.findall(r"^\*\*([^*]+)\*\* \(", (ROOT / "bench" / "README.md").read_text(), flags=re.M)


def test_the_benchmark_record_lists_its_sections_and_readme_names_only_those():
    """bench/README.md's contents list is its sections' titles in order, and every section README's goal tables
    send a reader to is one of them (a renamed section would leave the pointer dangling)."""
    text = (ROOT / "bench" / "README.md").read_text()
    listed = re.findall(r"^- (.+)$", text.split("**Contents**", 1)[1].split("\n\n", 2)[1], flags=re.M)
    assert listed == bench_sections() and len(listed) > 50
    pointers = []
    for table in re.findall(r"^\|[^\n]*\| bench/README\.md section \|\n\|[-|]+\|\n((?:\|[^\n]*\n)+)",
                            (ROOT / "README.md").read_text(), flags=re.M):  # the goal tables
        last_cells = [row.rstrip(" |").rsplit("|", 1)[1] for row in table.splitlines()]
        pointers += [name.strip() for cell in last_cells for name in cell.split(";")]
    dangling = [name for name in pointers if not any(title.startswith(name) for title in listed)]
    assert len(pointers) > 20 and not dangling, dangling
