"""Model resolution and loading: clear messages instead of tracebacks; the real embedded model (slow)."""
import pytest
import torch

from core import model as model_module
from core.model import load, pick_device, resolve_base_model
from core.records import ModelLoadError


def test_base_model_resolution_order(monkeypatch):
    monkeypatch.delenv("RLHF_BASE_MODEL", raising=False)
    assert resolve_base_model() == str(model_module.EMBEDDED_MODEL_DIR)
    monkeypatch.setenv("RLHF_BASE_MODEL", "org/some-model")
    assert resolve_base_model() == "org/some-model"
    assert resolve_base_model("./mine") == "./mine"


def test_missing_folder_says_what_to_pass(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist.*--base-model"):
        load(str(tmp_path / "nope"), device="cpu")


def test_unprepared_embedded_model_says_what_to_run(monkeypatch, tmp_path):
    monkeypatch.setattr(model_module, "EMBEDDED_MODEL_DIR", tmp_path / "SmolLM2")
    with pytest.raises(ModelLoadError, match="prepare-model"):
        load(str(tmp_path / "SmolLM2"), device="cpu")


def test_broken_model_folder_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="Could not load model"):
        load(str(tmp_path), device="cpu")


def test_cuda_without_gpu_is_refused(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert pick_device("auto").type == "cpu"
    with pytest.raises(ModelLoadError, match="--device cpu"):
        pick_device("cuda")


@pytest.mark.parametrize("name", ["gpu", "cuda:x"])
def test_a_device_torch_does_not_know_says_what_to_pass(monkeypatch, name):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    with pytest.raises(ModelLoadError, match=r"pass --device auto, cpu or cuda\.$"):  # what a stage's --device takes
        pick_device(name)
    monkeypatch.setenv("RLHF_DEVICE", name)  # the variable also takes cuda:N
    with pytest.raises(ModelLoadError, match=rf"Device '{name}'.*set RLHF_DEVICE to auto, cpu or cuda \(or cuda:N\)"):
        pick_device("auto")


def test_cli_prints_message_not_traceback(tmp_path):
    import subprocess
    import sys

    env = {"RLHF_BASE_MODEL": str(tmp_path / "missing"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "apps.arena", "--port", "0"], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode != 0
    assert "error: Model folder" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_embedded_model_writes_a_pair_of_lists(embedded_model_dir):
    from core.collect.generate import Generator
    from core.records import Prompt, SamplingSettings

    generator = Generator(load(embedded_model_dir, device="cpu"))
    tokenizer = generator.loaded.tokenizer
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.eos_token == "<|im_end|>"
    left, right = generator.generate(Prompt("Top 5 ideas for a Thanksgiving meal"), [generator.base_policy] * 2,
                                     SamplingSettings(max_new_tokens=48), seed=0)
    for gen in (left, right):
        assert gen.text and 1 <= gen.num_tokens <= 48
    assert left.text != right.text
    assert any(ch.isdigit() or ch == "-" for ch in left.text + right.text)  # it answers with some kind of list


def test_a_gpu_is_picked_when_present_in_bf16_where_it_supports_it(monkeypatch):
    """Device and dtype selection with the CUDA probe mocked (no GPU needed): auto picks cuda, bf16 when supported,
    fp32 on a GPU without it and always on the CPU; the sampling engine stays plain on a GPU."""
    from core.engine import resolve_engine
    from core.model import default_dtype, pick_device

    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.delenv("RLHF_DEVICE", raising=False)
    assert pick_device(None) == torch.device("cuda") and pick_device("cuda:1") == torch.device("cuda:1")
    assert pick_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("RLHF_DEVICE", "cpu")  # the variable stands for "auto", every stage's default; a flag wins
    assert pick_device("auto") == pick_device(None) == torch.device("cpu") and pick_device("cuda") == torch.device("cuda")
    monkeypatch.delenv("RLHF_DEVICE")
    monkeypatch.setattr("torch.cuda.is_bf16_supported", lambda *a, **k: True)
    assert default_dtype(torch.device("cuda")) == torch.bfloat16 and default_dtype(torch.device("cpu")) == torch.float32
    monkeypatch.setattr("torch.cuda.is_bf16_supported", lambda *a, **k: False)
    assert default_dtype(torch.device("cuda")) == torch.float32
    assert resolve_engine("auto", torch.device("cuda")) == "plain"


def test_training_precision_is_bf16_where_the_device_multiplies_it_natively(monkeypatch):
    """--precision auto: bf16 on a GPU with bf16 and on a CPU with AVX512-BF16 or AMX (the probe mocked), else fp32;
    bf16 and fp32 as asked; anything else refused."""
    import core.model as model
    from core.model import training_dtype

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(model, "cpu_has_bf16_matmul", lambda: True)
    assert training_dtype(cpu) == torch.bfloat16 and training_dtype(cpu, "fp32") == torch.float32
    monkeypatch.setattr(model, "cpu_has_bf16_matmul", lambda: False)
    assert training_dtype(cpu) == torch.float32 and training_dtype(cpu, "bf16") == torch.bfloat16
    monkeypatch.setattr("torch.cuda.is_bf16_supported", lambda *a, **k: True)
    assert training_dtype(cuda, "auto") == torch.bfloat16
    monkeypatch.setattr("torch.cuda.is_bf16_supported", lambda *a, **k: False)
    assert training_dtype(cuda, "auto") == torch.float32
    with pytest.raises(ValueError, match="precision must be one of"):
        training_dtype(cpu, "fp8")


def test_the_cpu_probe_reads_the_bf16_flags(tmp_path):
    from core.model import cpu_has_bf16_matmul

    cpuinfo = tmp_path / "cpuinfo"
    for flags, native in (("fpu avx512f avx512_bf16 avx512_vnni", True), ("fpu amx_bf16 amx_tile", True),
                          ("fpu avx2 avx512f avx512bw", False)):
        cpuinfo.write_text(f"processor : 0\nflags : {flags}\n")
        assert cpu_has_bf16_matmul(cpuinfo) is native
    assert cpu_has_bf16_matmul(tmp_path / "missing") is False  # no /proc (not Linux): fp32


def test_training_stages_ask_accelerate_for_bf16_as_the_precision_resolves(monkeypatch, tmp_path):
    import core.model as model
    from core.train.trainer_run import trainer_arguments

    monkeypatch.setattr(model, "cpu_has_bf16_matmul", lambda: True)
    cpu = torch.device("cpu")
    assert trainer_arguments(cpu, 0, tmp_path)["bf16"] is True  # auto
    assert trainer_arguments(cpu, 0, tmp_path, "fp32")["bf16"] is False
    monkeypatch.setattr(model, "cpu_has_bf16_matmul", lambda: False)
    assert trainer_arguments(cpu, 0, tmp_path)["bf16"] is False
    assert trainer_arguments(cpu, 0, tmp_path, "bf16")["bf16"] is True


def test_fp32_asked_makes_a_bf16_loaded_model_fp32_and_leaves_it_otherwise():
    """A GPU loads bf16 weights; --precision fp32 must train fp32 ones there (weights_for), auto and bf16 keep them."""
    from core.train.trainer_run import weights_for

    assert weights_for(torch.nn.Linear(2, 2).bfloat16(), "fp32").weight.dtype == torch.float32
    for precision in ("auto", "bf16"):
        assert weights_for(torch.nn.Linear(2, 2).bfloat16(), precision).weight.dtype == torch.bfloat16
