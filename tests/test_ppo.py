"""Our PPO on the tiny model: one update's science in-process, then the real CLI: run folder, stop, kill -9, resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.runs import read_jsonl, read_status
from tests.helpers import (
    ADAPTER_FILES,
    run_cli,
    run_files,
    start_stage,
    tensorboard_scalars,
    wait_for_step,
)

REPO = Path(__file__).resolve().parent.parent
SMALL = ["--batch-size", "4", "--mini-batches", "2", "--ppo-epochs", "2", "--response-length", "12",
         "--norm-samples", "4", "--learning-rate", "1e-3", "--sample-every", "2", "--precision", "bf16"]


PROMPTS = ["Top 5 fruits", "Top 5 films for a rainy day", "Give me 5 hikes", "Top 5 board games"]


def test_only_the_policy_lora_and_value_head_train(trainer):
    trainable = {n for n, p in trainer.pv.named_parameters() if p.requires_grad}
    assert trainable and all(("lora_" in n and ".default." in n) or n.startswith("value_head") for n in trainable)
    base = {n: p.detach().clone() for n, p in trainer.pv.named_parameters() if "lora_" not in n and "head" not in n}
    reward = {n: p.detach().clone() for n, p in trainer.pv.named_parameters() if ".reward." in n}
    policy = {n: p.detach().clone() for n, p in trainer.pv.named_parameters() if ".default." in n}

    rollout = trainer.rollout(PROMPTS, seed=0, score_mean=0.0, score_std=1.0)
    stats = trainer.optimise(rollout, kl_coef=0.05, seed=0)

    after = dict(trainer.pv.named_parameters())
    assert all(torch.equal(after[n], v) for n, v in base.items()), "base weights moved"
    assert all(torch.equal(after[n], v) for n, v in reward.items()), "reward adapter moved"
    assert any(not torch.equal(after[n], v) for n, v in policy.items()), "policy LoRA did not move"
    assert trainer.pv.value_head.weight.abs().sum() > 0
    # on a bf16 base the trained weights and their optimiser state stay fp32 (mixed precision, as on a GPU)
    assert all(p.dtype == torch.float32 for p in trainer.pv.parameters() if p.requires_grad)
    assert {"objective/kl", "objective/scores", "loss/policy_avg", "loss/value_avg", "val/ratio",
            "policy/clipfrac_avg", "policy/approxkl_avg", "objective/entropy"} <= set(stats)


def test_rollout_log_probs_match_the_policy_at_the_first_step(trainer):
    """Log-probs are those of the distribution sampled from (logits / T), and policy = reference at the start: the
    first PPO ratio is 1 and the KL 0, up to float noise between generation's cached passes and a full forward."""
    rollout = trainer.rollout(PROMPTS, seed=1, score_mean=0.0, score_std=1.0)
    assert torch.allclose(rollout.logprobs, rollout.ref_logprobs, atol=1e-4)
    mask = rollout.mask
    assert mask[:, 0].all() and (mask.sum(1) <= 12).all()
    assert ((rollout.logprobs <= 0) | (mask == 0)).all()
    logprobs, _, values = trainer.pv(rollout.input_ids, rollout.attention_mask, rollout.context_length, 0.7,
                                     rollout.features)
    assert torch.allclose(logprobs * mask, rollout.logprobs, atol=1e-4)
    assert torch.allclose(values * mask, rollout.values)


def test_the_first_mini_batch_of_an_update_has_ratio_exactly_one(trainer):
    """Sampling runs on merged weights with a KV cache, the update on LoRA layers over the whole sequence; the old
    log-probs are recomputed by the update's forward, so before the first optimiser step nothing has moved: ratio
    exactly 1, clip fraction and approximate KL exactly 0 (the mini-batch differs in rows and size from the
    rollout's chunks, as in training)."""
    import dataclasses

    from core.train.ppo.trainer import ppo_update

    rollout = trainer.rollout(PROMPTS, seed=4, score_mean=0.0, score_std=1.0)
    one_step = dataclasses.replace(trainer.cfg, mini_batches=1, ppo_epochs=1)  # the only mini-batch is the first
    stats = ppo_update(trainer.pv, trainer.optimizer, trainer.accelerator, rollout, one_step, 0.05, seed=0)
    assert stats["val/ratio"].item() == 1.0
    assert stats["policy/clipfrac_avg"].item() == 0.0 and stats["policy/approxkl_avg"].item() == 0.0


def test_rollouts_sampled_by_llamacpp_are_exact_where_ppo_needs_it(trainer, tiny_model_dir, tmp_path):
    """The base's GGUF plus the policy's LoRA written and applied by llama.cpp: the old log-probs still come from
    the policy's own forward, so the first mini-batch's ratio is exactly 1; the LoRA file follows the policy."""
    import dataclasses

    from core.gguf_writer import policy_gguf
    from core.llamacpp import LlamaCppSampler, LoraRollouts
    from core.train.ppo.trainer import ppo_update

    trainer.rollouts = LoraRollouts(LlamaCppSampler(policy_gguf(tiny_model_dir, None, trainer.tokenizer)),
                                    tmp_path / "policy-lora.gguf")
    rollout = trainer.rollout(PROMPTS, seed=4, score_mean=0.0, score_std=1.0)
    written = trainer.rollouts.lora_path.read_bytes()
    assert rollout.mask[:, 0].all() and (rollout.mask.sum(1) <= 12).all()
    one_step = dataclasses.replace(trainer.cfg, mini_batches=1, ppo_epochs=1)
    stats = ppo_update(trainer.pv, trainer.optimizer, trainer.accelerator, rollout, one_step, 0.05, seed=0)
    assert stats["val/ratio"].item() == 1.0
    assert stats["policy/clipfrac_avg"].item() == 0.0 and stats["policy/approxkl_avg"].item() == 0.0
    trainer.rollout(PROMPTS, seed=5, score_mean=0.0, score_std=1.0)
    assert trainer.rollouts.lora_path.read_bytes() != written  # the update moved the LoRA, so the next rollout's


def test_missing_eos_is_penalised_and_scores_are_normalised(trainer):
    rollout = trainer.rollout(PROMPTS, seed=2, score_mean=0.5, score_std=2.0)
    expected = (rollout.raw_scores - 0.5) / 2.0 - 1.0 * (~rollout.ended).float()
    assert torch.allclose(rollout.scores, expected)


def test_the_training_loop_keeps_every_tensor_on_the_models_device(trainer, monkeypatch):
    """On a GPU a tensor made on the CPU by default (`torch.arange(n)` with no device) or a host sync (`.item()`)
    inside the update would fail or stall; on the meta device both raise, so the loop runs there as on CUDA. The
    rollout is sampled on the CPU (sampling needs real numbers), then everything after the sampling -- EOS cut,
    reference pass, values, shared reward head, and a full update with backward, clipping and AdamW -- runs on
    meta. Eager attention: transformers' SDPA mask checks the padding on the host, the only sync it needs."""
    import dataclasses

    from core.train.ppo.maths import per_token_rewards, truncate_after_eos
    from core.train.ppo.trainer import ppo_update

    cpu = trainer.rollout(PROMPTS, seed=3, score_mean=0.0, score_std=1.0)
    meta = torch.device("meta")
    pv = trainer.pv.to(meta)
    pv.lm.config._attn_implementation = "eager"
    rollout = dataclasses.replace(cpu, **{f.name: getattr(cpu, f.name).to(meta) for f in dataclasses.fields(cpu)
                                          if isinstance(getattr(cpu, f.name), torch.Tensor)})
    Q = rollout.context_length
    responses, mask, ended = truncate_after_eos(rollout.input_ids[:, Q:], trainer.eos, trainer.tokenizer.pad_token_id)
    ref_logprobs, features = pv.reference(rollout.input_ids, rollout.attention_mask, Q, 0.7)
    last = Q + mask.sum(1) - 1
    made = [responses, mask, ended, ref_logprobs, features, pv.values(features),
            pv.reward_scores(rollout.input_ids, rollout.attention_mask, last)]
    optimizer = torch.optim.AdamW([p for p in pv.parameters() if p.requires_grad], lr=1e-3)
    stats = ppo_update(pv, optimizer, trainer.accelerator, rollout, trainer.cfg, kl_coef=0.05, seed=0)
    assert {t.device for t in made} == {meta}
    assert stats and {v.device for v in stats.values()} == {meta}
    assert all(p.device == meta for p in pv.parameters())

    # the check can fail: the same update with one CPU-made tensor in its maths raises
    from core.train.ppo import trainer as module

    def rewards_made_on_the_cpu(scores, kl, mask, kl_coef):
        return per_token_rewards(scores, kl, mask, kl_coef) + torch.zeros(mask.shape)

    monkeypatch.setattr(module, "per_token_rewards", rewards_made_on_the_cpu)
    with pytest.raises(RuntimeError, match="device"):
        ppo_update(pv, optimizer, trainer.accelerator, rollout, trainer.cfg, kl_coef=0.05, seed=0)


def _ppo_cli(*args, **kwargs):
    return run_cli("train", "ppo", *args, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, tiny_reward_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("ppo") / "straight"
    _ppo_cli("--base-model", tiny_model_dir, "--reward-model", tiny_reward_run, "--total-updates", "4", *SMALL,
             "--output-dir", out)
    return out


def test_ppo_run_folder(uninterrupted, tiny_model_dir, tiny_reward_run):
    from safetensors.torch import load_file

    status = read_status(uninterrupted)
    assert status["state"] == "finished" and status["step"] == status["total"] == 4
    assert run_files(uninterrupted) == ADAPTER_FILES | {
        "config.json", "status.json", "metrics.jsonl", "train.log", "samples.jsonl", "checkpoint/state.pt",
        "data/lineage.json", "data/prompts_train.jsonl"}
    config = json.loads((uninterrupted / "config.json").read_text())
    assert config["stage_config"] == "PPOConfig" and config["reward_model_shares_base"] is True
    assert config["rollout_engine"] == "llamacpp"  # auto, on a CPU: llama.cpp samples, the policy scores
    assert config["dtype"] == "bfloat16" and config["precision"] == "bf16"
    assert (uninterrupted / "data" / "prompts_train.jsonl").exists()
    rounds = json.loads((tiny_reward_run / "data" / "lineage.json").read_text())["rounds"]
    assert json.loads((uninterrupted / "data" / "lineage.json").read_text())["rounds"] == rounds != {}
    metrics = read_jsonl(uninterrupted / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    for name in ("objective/kl", "objective/rlhf_reward", "objective/scores", "objective/entropy",
                 "policy/approxkl_avg", "policy/clipfrac_avg", "loss/policy_avg", "loss/value_avg", "val/ratio",
                 "val/response_length", "objective/well_formed", "eps", "objective/kl_coef"):
        assert all(m[name] is not None for m in metrics), name
    assert metrics[0]["objective/kl"] == pytest.approx(0.0, abs=1e-3)  # the first rollout is the reference's
    samples = read_jsonl(uninterrupted / "samples.jsonl")
    assert {s["step"] for s in samples} == {1, 2, 4} and {"prompt", "text", "score"} <= set(samples[0])
    adapter = load_file(str(uninterrupted / "adapter" / "adapter_model.safetensors"))
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in adapter.items())
    assert (uninterrupted / "checkpoint" / "state.pt").exists()


def test_the_ppo_adapter_loads_into_the_arena_generator(uninterrupted, tiny_model_dir):
    from core.collect.generate import Generator
    from core.model import load
    from core.records import Prompt, SamplingSettings

    generator = Generator(load(tiny_model_dir, device="cpu"))  # its own copy: add_adapter wraps the model
    policy = generator.add_adapter(str(uninterrupted / "adapter"))
    assert policy.adapter.endswith("adapter")
    # the arena's pair: base on one side, the PPO policy on the other, in one batched call
    base, tuned = generator.generate(Prompt("Top 5 fruits", source="custom"), [generator.base_policy, policy],
                                     SamplingSettings(max_new_tokens=6), seed=0)
    assert base.policy.adapter is None and tuned.policy == policy and tuned.num_tokens > 0


def _checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoint" / "state.pt", weights_only=True)


def test_sigterm_then_kill_9_then_resume_reaches_the_uninterrupted_state(uninterrupted, tiny_model_dir,
                                                                         tiny_reward_run, tmp_path):
    run = tmp_path / "interrupted"
    # SIGTERM: stops at the end of the current update with a checkpoint and a "stopped" status
    proc = start_stage("ppo", "--base-model", tiny_model_dir, "--reward-model", tiny_reward_run, "--total-updates", "4",
                       *SMALL, "--output-dir", run)
    wait_for_step(run, 1, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 0
    stopped = read_status(run)
    assert stopped["state"] == "stopped" and 1 <= stopped["step"] < 4 and "--resume" in stopped["message"]
    assert _checkpoint(run)["state"]["update"] == stopped["step"]

    # kill -9 in the middle of the resumed run: no final status, reported as killed
    proc = start_stage("ppo", "--resume", run)
    wait_for_step(run, stopped["step"] + 1, proc)
    proc.kill()
    proc.wait(timeout=60)
    assert read_status(run)["state"] == "killed"

    # resume again: the run ends where the uninterrupted one did (same weights, same logged curve, no duplicates)
    _ppo_cli("--resume", run)
    assert read_status(run)["state"] == "finished"
    ours, reference = _checkpoint(run), _checkpoint(uninterrupted)
    assert ours["state"] == reference["state"]
    for name, weight in reference["policy"].items():
        assert torch.allclose(ours["policy"][name], weight, atol=1e-5), name
    metrics, straight = read_jsonl(run / "metrics.jsonl"), read_jsonl(uninterrupted / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert [m["objective/scores"] for m in metrics] == pytest.approx([m["objective/scores"] for m in straight],
                                                                     abs=1e-4)


def test_ppo_refuses_bad_input_with_a_message(tmp_path, tiny_model_dir, tiny_reward_run):
    no_rm = _ppo_cli("--base-model", tiny_model_dir, check=False)
    assert no_rm.returncode == 2 and "--reward-model" in no_rm.stderr
    uneven = _ppo_cli("--reward-model", tiny_reward_run, "--batch-size", "6", "--mini-batches", "4", check=False)
    assert uneven.returncode == 2 and "split evenly" in uneven.stderr
    not_a_run = _ppo_cli("--resume", tmp_path, check=False)
    assert not_a_run.returncode == 2 and "not a run folder" in not_a_run.stderr
    sft_as_rm = _ppo_cli("--base-model", tiny_model_dir, "--reward-model", tmp_path / "nothing", "--output-dir",
                         tmp_path / "run", check=False)
    assert sft_as_rm.returncode == 2 and "Traceback" not in sft_as_rm.stderr


def test_a_reward_model_on_another_base_scores_decoded_text(tiny_model_dir, preference_db, tmp_path):
    """A reward model trained on a different base cannot ride on the policy's weights: PPO loads it beside the
    policy and scores the decoded lists."""
    from tests.helpers import build_tiny_model

    other_base = build_tiny_model(tmp_path / "other-base", seed=7)
    run_cli("train", "reward", "--base-model", other_base, "--db", preference_db, "--max-steps", "2",
            "--output-dir", tmp_path / "rm")
    _ppo_cli("--base-model", tiny_model_dir, "--reward-model", tmp_path / "rm", "--total-updates", "1", *SMALL,
             "--output-dir", tmp_path / "ppo")
    config = json.loads((tmp_path / "ppo" / "config.json").read_text())
    assert config["reward_model_shares_base"] is False
    (metrics,) = read_jsonl(tmp_path / "ppo" / "metrics.jsonl")
    assert metrics["objective/scores"] is not None and read_status(tmp_path / "ppo")["state"] == "finished"


def test_two_processes_share_one_run(tiny_model_dir, tiny_reward_run, tmp_path):
    """The multi-GPU path, on CPU: two ranks (gloo), rank 0 writes the folder, metrics count both ranks' episodes."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", "2", "-m", "core",
                           "train", "ppo", "--device", "cpu", "--base-model", tiny_model_dir, "--reward-model",
                           str(tiny_reward_run), "--total-updates", "2", *SMALL, "--output-dir", str(tmp_path / "run")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["processes"] == 2
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2] and metrics[-1]["episode"] == 2 * 4 * 2  # updates × batch × ranks
    assert read_status(tmp_path / "run")["state"] == "finished"


def test_starting_from_an_sft_adapter_makes_it_the_reference(tiny_model_dir, tiny_adapter_dir, tiny_reward_run):
    """With --sft-adapter the policy starts as the SFT policy and the KL is measured against it, not the base."""
    from accelerate import Accelerator
    from peft import LoraConfig

    from core.model import load_causal_lm, load_tokenizer
    from core.train.ppo import policy_value
    from core.train.ppo.trainer import PPOConfig, PPOTrainer

    tok = load_tokenizer(tiny_model_dir)
    pv = policy_value.build(load_causal_lm(tiny_model_dir, torch.device("cpu")), tok,
                            LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], task_type="CAUSAL_LM"),
                            tiny_adapter_dir, str(tiny_reward_run))
    cfg = PPOConfig(reward_model=str(tiny_reward_run), batch_size=4, mini_batches=2, response_length=12)
    trainer = PPOTrainer(cfg, Accelerator(cpu=True), pv, torch.optim.AdamW(
        [p for p in pv.parameters() if p.requires_grad], lr=1e-3), tok, scorer=None)
    rollout = trainer.rollout(PROMPTS, seed=3, score_mean=0.0, score_std=1.0)
    assert torch.allclose(rollout.logprobs, rollout.ref_logprobs, atol=1e-4)  # policy = reference = SFT
    with pv.adapter(None):
        base_logprobs = pv(rollout.input_ids, rollout.attention_mask, rollout.context_length, 0.7,
                           rollout.features)[0]
    assert not torch.allclose(base_logprobs * rollout.mask, rollout.logprobs, atol=1e-3)  # and not the base
    trainer.optimise(rollout, kl_coef=0.05, seed=0)
    reference = {n: p for n, p in pv.named_parameters() if ".reference." in n}
    assert reference and not any(p.requires_grad for p in reference.values())
    after = trainer.rollout(PROMPTS, seed=3, score_mean=0.0, score_std=1.0)
    assert not torch.allclose(after.logprobs, after.ref_logprobs, atol=1e-3)  # the policy moved, the reference did not


def test_periodic_held_out_evaluation_feeds_the_over_optimisation_view(tiny_model_dir, tiny_reward_run, tmp_path):
    run = tmp_path / "run"
    _ppo_cli("--base-model", tiny_model_dir, "--reward-model", tiny_reward_run, "--total-updates", "2", *SMALL,
             "--eval-every", "1", "--eval-prompts", "3", "--output-dir", run, "--report-to", "tensorboard")
    evals = [m for m in read_jsonl(run / "metrics.jsonl") if "eval/scores" in m]
    assert [m["step"] for m in evals] == [0, 1, 2]  # before training, then after every update
    assert evals[0]["eval/kl"] == pytest.approx(0.0, abs=1e-3)  # the starting policy is the reference
    assert all(m["eval/sqrt_kl"] >= 0 and 0 <= m["eval/well_formed"] <= 1 for m in evals)
    samples = read_jsonl(run / "eval_samples.jsonl")
    assert [s["step"] for s in samples] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    held_out = [json.loads(line)["prompt"] for line in open(run / "data" / "prompts_eval.jsonl")][:3]
    assert [s["prompt"] for s in samples[:3]] == held_out and {"text", "score", "kl"} <= set(samples[0])
    # --report-to tensorboard: the same rows, by the same names, in the run's tensorboard/ event files
    logged = tensorboard_scalars(run / "tensorboard")
    assert [step for step, _ in logged["eval/scores"]] == [0, 1, 2]
    assert [v for _, v in logged["eval/scores"]] == pytest.approx([m["eval/scores"] for m in evals])
    assert [step for step, _ in logged["objective/kl"]] == [1, 2]


def test_resume_without_a_checkpoint_is_refused(tiny_model_dir, tiny_reward_run, tmp_path):
    """A run that saved no checkpoint is not silently restarted at update 0 (which would drop its curves)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"stage": "ppo", "reward_model": str(tiny_reward_run),
                                                 "base_model": tiny_model_dir}))
    curves = '{"step": 1, "objective/kl": 0.5}\n'
    (run / "metrics.jsonl").write_text(curves)
    done = _ppo_cli("--resume", run, check=False)
    assert done.returncode == 2 and "saved no checkpoint to resume from" in done.stderr
    assert "Traceback" not in done.stderr and (run / "metrics.jsonl").read_text() == curves
