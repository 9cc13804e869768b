"""Stage configs: one dataclass per stage is the single definition of its settings.

The CLI (`python -m core train <stage> --learning-rate 1e-4`), the dashboard's form and a run's config.json are all generated
from the dataclass: every field is a `knob(default, "help")`, and `__post_init__` validates with messages that say
what to pass instead. A stage's `PRESETS` name bundles of overrides; `--preset quick` sizes a run for minutes on
two CPU cores, while the plain defaults suit a GPU.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from pathlib import Path

from transformers import HfArgumentParser

from core.records import USER_ERRORS, InputError
from core.runs import RunFolder, write_json
from core.stages import RUN_SETTINGS


class ConfigError(InputError):
    """A setting the stage cannot run with; the message says what to change."""


def knob(default, help: str, choices: tuple | None = None):
    """A config field with its help text (shown by --help and the dashboard form)."""
    meta = {"help": help} | ({"choices": choices} if choices else {})
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_type(cls, f: dataclasses.Field) -> type:
    """The plain type of a field: `int | None` -> int, `list[str]` -> list."""
    hint = typing.get_type_hints(cls)[f.name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint


def list_item_type(cls, f: dataclasses.Field) -> type:
    """The item type of a `list[X]` field (str when the hint does not say)."""
    hint = typing.get_type_hints(cls)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(args[0])
    return args[0] if args and isinstance(args[0], type) else str


def is_optional(cls, f: dataclasses.Field) -> bool:
    hint = typing.get_type_hints(cls)[f.name]
    return type(None) in typing.get_args(hint)


def parse_value(cls, name: str, text: str):
    """A value typed on the command line or in a form, converted to the field's type, or ConfigError."""
    f = next((f for f in dataclasses.fields(cls) if f.name == name), None)
    if f is None:
        raise ConfigError(f"{cls.__name__} has no setting {name!r}.")
    kind = field_type(cls, f)
    if isinstance(text, str) and text.strip().lower() in ("", "none") and is_optional(cls, f):
        return None
    if kind is list and isinstance(text, list):  # `--targets a b` and `--targets a,b` both give [a, b]
        text = _split_list(text)
    value = text if not isinstance(text, str) else _from_text(kind, name, text)
    if kind is list and (item := list_item_type(cls, f)) is not str:  # `--budgets 50,100` gives [50, 100]
        value = [_from_text(item, name, v) if isinstance(v, str) else v for v in value]
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"--{name.replace('_', '-')}: {value!r} is not one of {', '.join(map(str, choices))}.")
    return value


def _split_list(items: list) -> list[str]:
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


def _from_text(kind: type, name: str, text: str):
    try:
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is list:
            return _split_list([text])
        return kind(text)
    except ValueError:
        raise ConfigError(f"--{name.replace('_', '-')}: {text!r} is not a valid {kind.__name__}.") from None


def config_parser(cls, prog: str | None = None, description: str | None = None) -> HfArgumentParser:
    """The command line of a config dataclass, built by transformers' HfArgumentParser: one `--flag` per field
    (`--learning-rate` and `--learning_rate`; `--no-flag` for a bool that defaults to true; a field's `choices`),
    its help text with the default, and `--preset` when the class has presets.

    Two departures from HfArgumentParser's own parsing, so that a preset can tell what was typed and so that the CLI
    and the dashboard's form read text the same way: flags default to "not given" instead of the field's default,
    and values stay text until `build` converts them (`parse_value`: "none", "off", "a,b" lists, messages that name
    the flag)."""
    parser = HfArgumentParser(cls, prog=prog, description=description, formatter_class=argparse.HelpFormatter)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for action in parser._actions:  # HfArgumentParser keeps no other handle on the actions it adds
        if action.dest not in fields:
            continue
        f = fields[action.dest]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        action.default = argparse.SUPPRESS
        action.option_strings.sort(key=lambda option: "_" in option)  # usage shows --learning-rate, not _rate
        if isinstance(action, argparse._StoreFalseAction):  # not a name test: --normalize-reward starts with --no
            continue  # the complement of a bool (--no-stop-at-eos): store_false, nothing to convert
        action.type = None  # keep the text: `build` converts it (one conversion for the CLI and the form)
        action.choices = None  # `parse_value` checks them, in one line that names the flag
        action.metavar = field_type(cls, f).__name__.upper()
        one_of = f"one of {', '.join(map(str, f.metadata['choices']))}; " if f.metadata.get("choices") else ""
        action.help = f"{f.metadata.get('help', '')} ({one_of}default: {shown})"
    if getattr(cls, "PRESETS", {}):
        parser.add_argument("--preset", metavar="{" + ",".join(sorted(cls.PRESETS)) + "}",
                            help="a bundle of settings; flags override it")  # `build` refuses an unknown one

    def refuse(message: str):  # argparse would print its usage block and exit: one line saying what to change
        raise ConfigError(f"{message}; see --help.")

    parser.error = refuse
    return parser


def typed_flags(cls, argv: list[str], prog: str | None = None, description: str | None = None
                ) -> tuple[str | None, dict]:
    """(the preset, the settings typed as text) from a command line, or ConfigError. A class without presets may
    have a field named `preset` (bench/loop.py: the stages' preset); there it is a setting like any other."""
    typed = vars(config_parser(cls, prog, description).parse_args(argv))
    return (typed.pop("preset", None) if getattr(cls, "PRESETS", {}) else None), typed


def parse_config(cls, argv: list[str], prog: str | None = None, description: str | None = None):
    """The config from a command line (`--preset` and the flags typed), or ConfigError saying what to change."""
    return from_typed(cls, *typed_flags(cls, argv, prog, description))


def check_flags(cls, argv: list[str], what: str) -> None:
    """Check a command line for `cls` without building the config: every flag known, every value of its field's type
    and choices, the preset known; else ConfigError naming `what`. For scripts that pass flags to a stage they start
    much later (bench/loop.py trains SFT after an hour of votes), so that a typo fails at once. What needs the run's
    inputs (a config's __post_init__: files, folders) is left to the stage."""
    try:
        preset, typed = typed_flags(cls, argv, prog=what)
        check_preset(cls, preset)
        for name, value in typed.items():
            parse_value(cls, name, value)
    except ConfigError as err:
        raise ConfigError(f"{what}: {err}") from None


def command_config(cls, argv: list[str], prog: str, description: str | None = None):
    """parse_config for a script's entry point (the benchmarks): a bad flag ends the process with one line saying
    what to change (exit 2, as `python -m core` does), never a traceback."""
    try:
        return parse_config(cls, argv, prog, description)
    except ConfigError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def stage_main(cls, train, prog: str) -> int:
    """`python -m <a stage's module> FLAGS`: the same as `python -m core train <stage> FLAGS`."""
    try:
        print(f"run folder: {train(parse_config(cls, sys.argv[1:], prog=prog))}")
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def check_preset(cls, preset: str | None) -> None:
    presets = getattr(cls, "PRESETS", {})
    if preset is not None and preset not in presets:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(sorted(presets))}.")


def build(cls, preset: str | None = None, /, **overrides):
    """The config from a preset plus overrides (strings are parsed as typed on the command line)."""
    check_preset(cls, preset)
    values = dict(getattr(cls, "PRESETS", {}).get(preset, {}))
    values.update({name: parse_value(cls, name, value) for name, value in overrides.items()})
    try:
        return cls(**values)
    except TypeError as err:  # an unknown keyword
        raise ConfigError(str(err)) from None


def from_typed(cls, preset: str | None, typed: dict):
    """The config from a preset and the settings typed. With --resume RUN the run's saved config.json is the
    starting point instead, so only what is typed again changes (e.g. --total-updates to extend it)."""
    if typed.get("resume"):
        saved = RunFolder(typed["resume"]).config
        if not saved.exists():
            raise ConfigError(f"{typed['resume']} is not a run folder (no config.json); pass the folder of the run "
                              "to continue, e.g. models/runs/ppo-20261121-101500.")
        base = dataclasses.asdict(load(cls, saved))
        return build(cls, None, **{**base, **typed})
    return build(cls, preset, **typed)


def to_command(stage: str, cfg) -> list[str]:
    """The exact command that runs `cfg` (shown by the dashboard before it starts a run)."""
    command = ["python", "-m", "core", "train", stage]
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if value != default:
            shown = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            command += [f"--{f.name.replace('_', '-')}", shown]
    return command


def save(cfg, path: Path, **extra) -> None:
    """config.json, whole or not at all: a resumed run rewrites it, and the dashboard reads it at any moment."""
    write_json(Path(path), {**extra, "stage_config": type(cfg).__name__, **dataclasses.asdict(cfg)})


def load(cls, path: Path):
    """A saved config.json back into its dataclass (fields this version no longer knows are ignored)."""
    try:
        saved = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:  # cut short or hand-edited: one line, not a traceback
        raise ConfigError(f"{path} cannot be read as a run's config ({err}); start a new run instead.") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"{path} is not a run's config (not a JSON object); start a new run instead.")
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in saved.items() if k in names})


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclasses.dataclass(frozen=True)
class FormField:
    """One setting as a form shows it: its value under the preset (as text), help text, choices, and the stages
    whose finished runs it names (core.stages.RUN_SETTINGS; None: typed)."""
    name: str
    kind: type
    value: object
    help: str
    choices: tuple | None
    runs_of: tuple[str, ...] | None = None


def form_fields(cls, preset: str | None = None) -> list[FormField]:
    """The fields of a stage config as the dashboard's form shows them, with the preset's values filled in."""
    values = dict(getattr(cls, "PRESETS", {}).get(preset, {}))
    fields = []
    for f in dataclasses.fields(cls):
        value = values.get(f.name, f.default if f.default is not dataclasses.MISSING else f.default_factory())
        kind = field_type(cls, f)
        shown = value if kind is bool or f.metadata.get("choices") else \
            ",".join(map(str, value)) if isinstance(value, list) else "" if value is None else str(value)
        fields.append(FormField(f.name, kind, shown, f.metadata.get("help", ""), f.metadata.get("choices"),
                                RUN_SETTINGS.get(f.name)))
    return fields
