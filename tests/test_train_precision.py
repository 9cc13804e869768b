"""bench/train_precision.py on the tiny model: every figure is measured, and PPO's mixed precision keeps less for the
backward pass than PEFT's fp32 input casts (bench/README.md quotes both on the embedded model)."""
from bench import train_precision


def test_every_figure_is_measured_and_mixed_precision_saves_memory(tiny_model_dir, capsys):
    result = train_precision.main(["--base-model", tiny_model_dir, "--rows", "2", "--tokens", "12", "--repeats", "1"])
    for key in ("matmul_gflops_float32", "matmul_gflops_bfloat16", "forward_s_float32", "forward_s_bfloat16",
                "lm_head_ms_strided", "lm_head_ms_contiguous"):
        assert result[key] > 0, key
    assert 0 < result["saved_mb_mixed"] < result["saved_mb_peft_default"]
    assert "saved for backward" in capsys.readouterr().out
