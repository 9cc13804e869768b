"""Stage configs: one dataclass -> CLI flags, presets, validation, the command that reruns it, config.json."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import pytest

from core.cli import build_parser
from core.config import (
    ConfigError,
    build,
    check,
    config_parser,
    knob,
    load,
    parse_config,
    parse_value,
    save,
    to_command,
)
from core.train.sft import SFTConfig


@dataclass
class ToyConfig:
    steps: int = knob(10, "optimiser steps")
    lr: float = knob(1e-3, "learning rate")
    shuffle: bool = knob(True, "shuffle the data each epoch")
    targets: list[str] = knob(["q_proj", "v_proj"], "module names to adapt")
    limit: int | None = knob(None, "cap on examples (none: all)")
    warmup: float | None = knob(0.1, "warm-up fraction (none: no warm-up)")
    mode: str = knob("fast", "how hard to try", choices=("fast", "slow"))

    PRESETS: ClassVar[dict] = {"small": dict(steps=2, lr=0.5, targets=["a"])}

    def __post_init__(self):
        check(self.steps > 0, "steps must be positive, e.g. --steps 10.")


def parse(argv: list[str]) -> ToyConfig:
    return parse_config(ToyConfig, argv)


# ---- flags -> typed fields -----------------------------------------------------------------------------------------
def test_flags_parse_to_the_field_types():
    cfg = parse(["--steps", "5", "--lr", "2e-4", "--shuffle", "no", "--targets", "a, b,,c", "--limit", "7",
                 "--warmup", "0.25", "--mode", "slow"])

    assert cfg == ToyConfig(steps=5, lr=2e-4, shuffle=False, targets=["a", "b", "c"], limit=7, warmup=0.25,
                            mode="slow")
    assert type(cfg.steps) is int and type(cfg.lr) is float and type(cfg.limit) is int


def test_a_list_of_numbers_arrives_as_numbers_and_a_bad_item_gets_one_line():
    @dataclass
    class Budgets:
        budgets: list[int] = knob([50], "vote counts")
        limit: list[int] | None = knob(None, "optional counts")

    assert parse_config(Budgets, ["--budgets", "8,16", "--limit", "3"]) == Budgets(budgets=[8, 16], limit=[3])
    assert parse_config(Budgets, ["--budgets", "8", "16"]).budgets == [8, 16]
    with pytest.raises(ConfigError, match="--budgets: 'x' is not a valid int"):
        parse_config(Budgets, ["--budgets", "8,x"])


@pytest.mark.parametrize("text, expected", [("true", True), ("1", True), ("YES", True), ("on", True),
                                            ("false", False), ("0", False), ("No", False), ("off", False)])
def test_bool_flags_accept_the_usual_spellings(text, expected):
    assert parse(["--shuffle", text]).shuffle is expected


@pytest.mark.parametrize("text", ["none", "None", ""])
def test_optional_fields_take_none(text):
    assert parse(["--warmup", text]).warmup is None


def test_no_flags_gives_the_defaults_and_lists_are_not_shared():
    first, second = parse([]), parse([])
    assert first == ToyConfig()
    first.targets.append("o_proj")
    assert second.targets == ["q_proj", "v_proj"] and ToyConfig().targets == ["q_proj", "v_proj"]


def test_preset_applies_then_explicit_flags_override_it():
    cfg = parse(["--preset", "small", "--steps", "3"])
    assert (cfg.steps, cfg.lr, cfg.targets) == (3, 0.5, ["a"])  # steps typed, the rest from the preset
    assert cfg.mode == "fast"  # untouched by either: the default


def test_help_shows_each_fields_help_and_default():
    text = " ".join(config_parser(ToyConfig).format_help().split())
    assert "optimiser steps (default: 10)" in text
    assert "module names to adapt (default: q_proj,v_proj)" in text
    assert "--preset {small}" in text


# ---- bad input -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag, text, kind", [("--steps", "ten", "int"), ("--steps", "2.5", "int"),
                                              ("--lr", "fast", "float"), ("--shuffle", "maybe", "bool"),
                                              ("--limit", "1e3", "int")])
def test_a_bad_value_names_the_flag_and_the_expected_type(flag, text, kind):
    with pytest.raises(ConfigError) as err:
        parse([flag, text])
    assert str(err.value) == f"{flag}: {text!r} is not a valid {kind}."


def test_empty_text_is_refused_for_a_required_number():
    with pytest.raises(ConfigError, match="--steps: '' is not a valid int"):
        parse_value(ToyConfig, "steps", "")


def test_validation_in_post_init_reaches_the_caller_as_config_error():
    with pytest.raises(ConfigError, match=r"steps must be positive, e\.g\. --steps 10\."):
        parse(["--steps", "0"])


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown preset 'huge'; choose one of small."):
        build(ToyConfig, "huge")


def test_unknown_setting_is_refused():
    with pytest.raises(ConfigError, match="ToyConfig has no setting 'stepz'"):
        build(ToyConfig, stepz="3")


def test_the_cli_refuses_a_value_outside_the_choices_an_unknown_flag_or_preset_in_one_line():
    for argv, message in ((["--mode", "medium"], "--mode: 'medium' is not one of fast, slow."),
                          (["--preset", "huge"], "unknown preset 'huge'; choose one of small."),
                          (["--stpes", "3"], "unrecognized arguments: --stpes 3; see --help.")):
        with pytest.raises(ConfigError) as refused:
            parse(argv)
        assert str(refused.value) == message


@pytest.mark.parametrize("argv, line", [
    (["--report-to", "mlflow"], "error: --report-to: 'mlflow' is not one of none, tensorboard, wandb."),
    (["--preset", "slow"], "error: unknown preset 'slow'; choose one of quick."),
    (["--bogus", "1"], "error: unrecognized arguments: --bogus 1; see --help."),
])
def test_python_m_core_train_answers_a_bad_flag_in_one_line(capsys, tmp_path, argv, line):
    from core.cli import main

    assert main(["train", "sft", *argv, "--output-dir", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [line] and not (tmp_path / "run").exists()


def test_build_refuses_a_value_outside_the_choices():
    with pytest.raises(ConfigError, match="--mode"):
        build(ToyConfig, mode="medium")


# ---- the command that reruns a config ------------------------------------------------------------------------------
def test_to_command_lists_only_the_settings_that_differ_from_the_defaults():
    cfg = build(ToyConfig, "small", shuffle="false", warmup="none")
    assert to_command("toy", cfg) == ["python", "-m", "core", "train", "toy", "--steps", "2", "--lr", "0.5",
                                      "--shuffle", "False", "--targets", "a", "--warmup", "None"]
    assert to_command("toy", ToyConfig()) == ["python", "-m", "core", "train", "toy"]


@pytest.mark.parametrize("overrides", [{}, {"steps": "7", "limit": "3", "mode": "slow"},
                                       {"targets": "k_proj,o_proj,gate_proj", "shuffle": "0", "warmup": "none"},
                                       {"lr": "3e-05", "warmup": "0.5"}])
def test_to_command_round_trips_through_the_parser(overrides):
    cfg = build(ToyConfig, **overrides)
    assert parse(to_command("toy", cfg)[5:]) == cfg


def test_sft_to_command_round_trips_through_the_real_cli():
    cfg = build(SFTConfig, "quick", lora_targets="q_proj,v_proj", learning_rate="1e-4", seed_lists="off",
                device="cpu", output_dir="/tmp/some run")
    command = to_command("sft", cfg)
    assert command[:5] == ["python", "-m", "core", "train", "sft"]
    args = build_parser().parse_args(command[3:])
    assert (args.stage, parse_config(SFTConfig, args.settings)) == ("sft", cfg)


# ---- config.json ---------------------------------------------------------------------------------------------------
def test_save_and_load_round_trip_with_extra_fields(tmp_path):
    cfg = build(ToyConfig, "small", limit="4", warmup="none")
    save(cfg, tmp_path / "config.json", base_model_resolved="models/tiny", device_name="cpu (2 threads)")

    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["stage_config"] == "ToyConfig" and saved["base_model_resolved"] == "models/tiny"
    assert saved["targets"] == ["a"] and saved["warmup"] is None
    assert load(ToyConfig, tmp_path / "config.json") == cfg


def test_load_ignores_unknown_fields_and_defaults_missing_ones(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"steps": 4, "retired_knob": 1}))
    assert load(ToyConfig, tmp_path / "config.json") == ToyConfig(steps=4)


@pytest.mark.parametrize("content", ['{"steps": 4', "[4]", ""])
def test_a_damaged_config_json_is_one_line(tmp_path, content):
    (tmp_path / "config.json").write_text(content)  # cut short, hand-edited
    with pytest.raises(ConfigError, match="start a new run instead"):
        load(ToyConfig, tmp_path / "config.json")


def test_a_bool_flag_whose_name_starts_with_no_takes_text_too():
    """--normalize-reward is not the complement of a bool (--no-normalize-reward is): it reads "off" like any."""
    from core.train.ppo.config import PPOConfig

    cfg = parse_config(PPOConfig, ["--reward-model", "x", "--normalize-reward", "off", "--no-stop-at-eos"])
    assert (cfg.normalize_reward, cfg.stop_at_eos) == (False, False)
    shown = config_parser(PPOConfig).format_help()
    assert "(default: True)" in shown[shown.index("  --normalize-reward [BOOL]"):shown.index("  --no-normalize-reward")]
    with pytest.raises(ConfigError, match="cliprange-value must be positive"):
        parse_config(PPOConfig, ["--reward-model", "x", "--cliprange-value", "0"])


def test_load_validates_what_it_reads(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"steps": 0}))
    with pytest.raises(ConfigError, match="steps must be positive"):
        load(ToyConfig, tmp_path / "config.json")


# ---- SFTConfig -----------------------------------------------------------------------------------------------------
def test_sft_quick_preset_is_a_valid_config():
    from core.train.sft import SFTConfig

    cfg = build(SFTConfig, "quick")
    assert (cfg.max_steps, cfg.batch_size, cfg.learning_rate) == (40, 8, 5e-4)
    assert cfg.lora_r == SFTConfig().lora_r  # not in the preset: the default


@pytest.mark.parametrize("name, text, message", [
    ("epochs", "0", "epochs must be positive, e.g. --epochs 3."),
    ("max_steps", "0", "max-steps must be -1 (all epochs) or a positive count."),
    ("learning_rate", "1.5", "learning-rate should be small and positive, e.g. 2e-4."),
    ("batch_size", "0", "batch-size must be at least 1."),
    ("lora_r", "0", "lora-r and lora-alpha must be positive, e.g. 16 and 32."),
    ("lora_dropout", "1", "lora-dropout must be in [0, 1)."),
    ("lora_targets", " , ", "lora-targets needs at least one module name, e.g. q_proj,v_proj."),
    ("max_length", "16", "max-length must be at least 32 tokens."),
    ("eval_max_new_tokens", "0", "eval-prompts must be >= 0 and eval-max-new-tokens positive."),
])
def test_sft_config_says_what_to_pass_instead(name, text, message):
    from core.train.sft import SFTConfig

    with pytest.raises(ConfigError) as err:
        build(SFTConfig, "quick", **{name: text})
    assert str(err.value) == message


@dataclass
class BenchConfig:
    """A script's config without presets whose field is itself named `preset` (bench/loop.py passes it on)."""
    preset: str = knob("quick", "preset of every training stage")
    votes: int = knob(300, "votes")


def test_a_field_named_preset_is_a_setting_when_the_class_has_no_presets():
    # bench/rounds.py starts round 1 as `bench.loop --preset quick`; that flag once failed with "unknown preset"
    assert parse_config(BenchConfig, ["--preset", "full", "--votes", "3"]) == BenchConfig(preset="full", votes=3)
    assert parse_config(BenchConfig, []) == BenchConfig()


def test_a_field_naming_a_run_says_which_stages_runs_the_form_offers():
    """The Train page's run pickers come from core (FormField.runs_of), not from a table of the page's own."""
    from core.config import form_fields
    from core.stages import POLICY_STAGES, STAGES, config_class

    picks = {(stage, f.name): f.runs_of for stage in STAGES for f in form_fields(config_class(stage)) if f.runs_of}
    assert picks == {("ppo", "reward_model"): ("reward",), ("ppo", "sft_adapter"): POLICY_STAGES,
                     ("rloo", "reward_model"): ("reward",), ("rloo", "sft_adapter"): POLICY_STAGES,
                     ("rejection", "reward_model"): ("reward",), ("rejection", "sft_adapter"): POLICY_STAGES,
                     ("rejection", "candidates_from"): ("rejection",), ("dpo", "sft_adapter"): POLICY_STAGES,
                     ("dpo", "pairs_from"): ("rejection",)}
