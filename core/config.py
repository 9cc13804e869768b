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
import types
import typing
from pathlib import Path

from core.records import InputError


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
    value = text if not isinstance(text, str) else _from_text(kind, name, text)
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"--{name.replace('_', '-')}: {value!r} is not one of {', '.join(map(str, choices))}.")
    return value


def _from_text(kind: type, name: str, text: str):
    try:
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is list:
            return [part.strip() for part in text.split(",") if part.strip()]
        return kind(text)
    except ValueError:
        raise ConfigError(f"--{name.replace('_', '-')}: {text!r} is not a valid {kind.__name__}.") from None


def add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One --flag per field (defaults shown in help, but left unset so presets can tell what was typed)."""
    presets = getattr(cls, "PRESETS", {})
    if presets:
        parser.add_argument("--preset", choices=sorted(presets), help="a bundle of settings; flags override it")
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=argparse.SUPPRESS,
                            metavar=field_type(cls, f).__name__.upper(), choices=f.metadata.get("choices"),
                            help=f"{f.metadata.get('help', '')} (default: {shown})")


def build(cls, preset: str | None = None, **overrides):
    """The config from a preset plus overrides (strings are parsed as typed on the command line)."""
    presets = getattr(cls, "PRESETS", {})
    if preset is not None and preset not in presets:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(sorted(presets))}.")
    values = dict(presets.get(preset, {}))
    values.update({name: parse_value(cls, name, value) for name, value in overrides.items()})
    try:
        return cls(**values)
    except TypeError as err:  # an unknown keyword
        raise ConfigError(str(err)) from None


def from_arguments(cls, args: argparse.Namespace):
    """The config from --preset and the flags typed. With --resume RUN the run's saved config.json is the
    starting point instead, so only what is typed again changes (e.g. --total-updates to extend it)."""
    names = {f.name for f in dataclasses.fields(cls)}
    typed = {k: v for k, v in vars(args).items() if k in names}
    if typed.get("resume"):
        saved = Path(typed["resume"]) / "config.json"
        if not saved.exists():
            raise ConfigError(f"{typed['resume']} is not a run folder (no config.json); pass the folder of the run "
                              "to continue, e.g. models/runs/ppo-20261121-101500.")
        base = dataclasses.asdict(load(cls, saved))
        return build(cls, None, **{**base, **typed})
    return build(cls, getattr(args, "preset", None), **typed)


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
    Path(path).write_text(json.dumps({"stage_config": type(cfg).__name__, **dataclasses.asdict(cfg), **extra},
                                     indent=2, default=str) + "\n")


def load(cls, path: Path):
    """A saved config.json back into its dataclass (fields this version no longer knows are ignored)."""
    saved = json.loads(Path(path).read_text())
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in saved.items() if k in names})


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclasses.dataclass(frozen=True)
class FormField:
    """One setting as a form shows it: its value under the preset (as text), help text and choices."""
    name: str
    kind: type
    value: object
    help: str
    choices: tuple | None


def form_fields(cls, preset: str | None = None) -> list[FormField]:
    """The fields of a stage config as the dashboard's form shows them, with the preset's values filled in."""
    values = dict(getattr(cls, "PRESETS", {}).get(preset, {}))
    fields = []
    for f in dataclasses.fields(cls):
        value = values.get(f.name, f.default if f.default is not dataclasses.MISSING else f.default_factory())
        kind = field_type(cls, f)
        shown = value if kind is bool or f.metadata.get("choices") else \
            ",".join(map(str, value)) if isinstance(value, list) else "" if value is None else str(value)
        fields.append(FormField(f.name, kind, shown, f.metadata.get("help", ""), f.metadata.get("choices")))
    return fields
