"""bench/gpu_check.py without a GPU: every stage's command line is one its CLI accepts, the figures are read from
what the stages write, and a failed stage skips the stages that need it (the check itself ran on an H200:
bench/README.md)."""
from __future__ import annotations

import json

import pytest

from bench import gpu_check, pair_generation, static_compile
from core.config import parse_config
from core.judge.evaluate import EvalConfig
from core.stages import config_class


@pytest.mark.parametrize("sizes", sorted(gpu_check.SIZES))
def test_every_stage_command_parses_with_its_own_cli(sizes, tmp_path):
    cfg = gpu_check.GPUCheckConfig(out=str(tmp_path), device="cpu", sizes=sizes, base_model="/models/tiny")
    for stage in gpu_check.STAGES:
        module, *argv = gpu_check.command(stage, cfg, tmp_path)
        if module.startswith("bench."):
            args = {"bench.pair_generation": pair_generation, "bench.static_compile": static_compile}[module] \
                .arguments(argv)
            assert (args.device, args.base_model) == ("cpu", "/models/tiny")
        elif argv[0] == "eval":
            parsed = parse_config(EvalConfig, argv[1:])
            assert parsed.policy == str(tmp_path / "runs" / "ppo") and parsed.device == "cpu"
        else:
            assert (module, argv[0]) == ("core", "train")
            parsed = parse_config(config_class(argv[1]), argv[2:])
            assert parsed.output_dir == str(tmp_path / "runs" / stage) and parsed.device == "cpu"
    ppo = gpu_check.command("ppo", cfg, tmp_path)
    assert ppo[ppo.index("--sft-adapter") + 1] == str(tmp_path / "runs" / "sft")


def test_figures_come_from_the_run_folder_and_the_pair_line(tmp_path):
    run = tmp_path / "runs" / "ppo"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in (
        {"step": 1, "eps": 4.0, "memory/cuda_peak_mb": 5000.0, "objective/kl": 0.1},
        {"step": 2, "eps": 5.0, "memory/cuda_peak_mb": 5100.0}, {"step": 2, "eval/scores": 1.0})) + "\n")
    assert gpu_check.last_metrics(run) == {"eps": 5.0, "memory/cuda_peak_mb": 5100.0}
    assert gpu_check.last_metrics(tmp_path / "runs" / "pair") == {}
    log = 'fixed trial 0: ...\n{"bench": "pair_generation", "fixed_batched_s_median": 7.5, "trials": 1}\n'
    assert gpu_check.output_figures("pair", log, tmp_path) == {"fixed_batched_s_median": 7.5}
    assert gpu_check.output_figures("pair", "Traceback ...", tmp_path) == {}
    log = '{"machine": "x86_64", "rows": {"dynamic_b2": {"ms_per_token": 45.0}, "static_compiled_b2": ' \
          '{"ms_per_token": 9.5}}}\n'
    assert gpu_check.output_figures("decode", log, tmp_path) == {"ms_per_token/dynamic_b2": 45.0,
                                                                 "ms_per_token/static_compiled_b2": 9.5}


def test_a_failed_stage_skips_what_needs_it_and_the_report_is_written_after_each_stage(tmp_path):
    report, path, seen = {"device_name": "test", "torch": "x", "bf16": False, "sizes": "tiny", "stages": {}}, \
        tmp_path / "gpu_check.json", []

    def run(stage):
        seen.append(stage)
        if stage != "pair":  # the file already holds every stage before this one, skipped ones too
            before = gpu_check.STAGES[:gpu_check.STAGES.index(stage)]
            assert list(json.loads(path.read_text())["stages"]) == list(before)
        return {"status": "failed (exit 1)"} if stage == "reward" else {"status": "ok", "wall_s": 1.0}

    gpu_check.check_stages(report, run, path)
    assert seen == ["pair", "sft", "reward", "dpo", "decode"]  # ppo, eval and rloo need the reward model
    stages = json.loads(path.read_text())["stages"]
    assert stages["ppo"]["status"] == "skipped (needs reward)"
    assert stages["eval"]["status"] == "skipped (needs ppo, reward)"
    assert stages["rloo"]["status"] == "skipped (needs reward)" and stages["dpo"]["status"] == "ok"
    assert "| reward | failed (exit 1) |" in gpu_check.table(report)


def test_a_stage_whose_process_fails_is_reported_with_its_exit_code_and_log(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "command", lambda stage, cfg, out: ["core", "no-such-command"])
    (tmp_path / "logs").mkdir()
    cfg = gpu_check.GPUCheckConfig(out=str(tmp_path), device="cpu", sizes="tiny")
    result = gpu_check.check_stage("sft", cfg, tmp_path)
    assert result["status"] == "failed (exit 2)" and result["wall_s"] > 0
    assert "no-such-command" in result["log_tail"] and (tmp_path / "logs" / "sft.log").exists()
