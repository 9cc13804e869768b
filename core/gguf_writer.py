"""A Hugging Face Llama model, or one with its LoRA adapter merged in, written to a GGUF file for llama.cpp: the
first half of the llama.cpp sampling engine (core/llamacpp.py samples the file).

    python -m core eval ... --engine llamacpp      (the arena, evaluation and PPO's rollouts write files through here)

Why by hand: llama.cpp's `convert_hf_to_gguf.py` does this in general but ships only in llama.cpp's source tree, not
in any wheel; `gguf`, the library it is built on, writes the file here. What this writes:
1. The weights from the fp32 state dict (an adapter merged with PEFT's `merge_and_unload`), Q8_0 for the matrices
   (llama.cpp's near-lossless 8-bit format: one scale per 32 weights) and F32 for the norms; q and k rows reordered
   for llama.cpp's RoPE layout (`permute_for_rope`). Only Llama-architecture models with a BPE tokenizer
   (SmolLM2, the tests' tiny model); anything else is refused in one line, and `--engine auto` falls back to int8.
2. The vocabulary just so that llama.cpp loads the file: prompts are tokenized and answers decoded by the model's own
   Hugging Face tokenizer, and llama.cpp sees token ids only.
3. Files are cached under models/gguf/ ($RLHF_GGUF_CACHE), named by a hash of what they were made from (base, adapter,
   their weight files' sizes and times, the format), so a second arena start or evaluation writes nothing.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from core.paths import MODELS_DIR
from core.records import ModelLoadError

log = logging.getLogger(__name__)

WRITER_VERSION = 1  # part of every cache key: bump when the file written for the same inputs changes

# Hugging Face Llama parameter names -> GGUF tensor names (llama.cpp's gguf-py tensor map for the llama architecture)
LAYER_NAMES = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
               "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
               "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
TOP_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}


class EngineUnavailable(ModelLoadError):
    """This model or machine cannot use the llama.cpp engine; the message says what to pass instead."""


def unsupported_reason(config, tokenizer) -> str | None:
    """Why this model cannot be written for llama.cpp here, or None when it can."""
    arch = (getattr(config, "architectures", None) or ["?"])[0]
    if getattr(config, "model_type", None) != "llama":
        return f"the llama.cpp engine writes Llama-architecture models; this is {arch}"
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return "the llama.cpp engine writes Llama models without attention or MLP biases"
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        return f"the llama.cpp engine writes Llama models with plain RoPE; this one has {rope.get('rope_type')}"
    if not getattr(tokenizer, "is_fast", False) or json.loads(tokenizer.backend_tokenizer.to_str())["model"]["type"] \
            != "BPE":
        return "the llama.cpp engine writes models with a BPE tokenizer"
    return None


def gguf_name(hf_name: str) -> str:
    """'model.layers.3.self_attn.q_proj.weight' -> 'blk.3.attn_q.weight'."""
    if hf_name in TOP_NAMES:
        return TOP_NAMES[hf_name]
    parts = hf_name.split(".")  # model . layers . i . <module...> . weight
    if parts[:2] != ["model", "layers"] or parts[-1] != "weight":
        raise EngineUnavailable(f"the llama.cpp engine does not know the parameter {hf_name}")
    return f"blk.{parts[2]}.{LAYER_NAMES['.'.join(parts[3:-1])]}.weight"


def permute_for_rope(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder q/k projection rows from Hugging Face's rotate-half RoPE layout to llama.cpp's interleaved pairs:
    per head, rows [0..d/2) and [d/2..d) become pairs (0, d/2), (1, d/2+1), ... (convert_hf_to_gguf's `permute`)."""
    out_dim = weight.shape[0]  # (n_head * d, in)
    return (weight.reshape(n_head, 2, out_dim // n_head // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def bpe_vocab(tokenizer, vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges) for llama.cpp's "gpt2" vocabulary; ids past the tokenizer's are padding."""
    from gguf import TokenType

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    special = set(tokenizer.all_special_ids) | {a["id"] for a in spec.get("added_tokens", []) if a.get("special")}
    tokens, types = [], []
    for i in range(vocab_size):
        tokens.append(by_id.get(i, f"[PAD{i}]"))
        types.append(TokenType.UNUSED if i not in by_id else TokenType.CONTROL if i in special else TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges", [])]
    return tokens, [int(t) for t in types], merges


def _finish(writer, writer_path: Path, path: Path) -> Path:
    """Write the file aside, then rename it into place: a killed process leaves no half file under the real name."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(writer_path, path)
    return path


def write_gguf(state_dict: dict[str, torch.Tensor], config, tokenizer, path: Path, quantize: bool = True) -> Path:
    """Write a Llama model's weights for llama.cpp: Q8_0 matrices (F32 where a row is not a multiple of 32, and
    everywhere with quantize=False, which the exactness test uses), F32 norms. Written aside, then renamed."""
    import gguf

    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    writer_path = path.with_name(path.name + ".partial")
    writer = gguf.GGUFWriter(str(writer_path), "llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float((getattr(config, "rope_parameters", None) or {}).get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quantize else gguf.LlamaFileType.ALL_F32)
    tokens, types, merges = bpe_vocab(tokenizer, config.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")  # never used: llama.cpp is given token ids (module docstring, 2.)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for key, token_id in (("bos", tokenizer.bos_token_id), ("eos", tokenizer.eos_token_id),
                          ("pad", tokenizer.pad_token_id)):
        if token_id is not None:
            getattr(writer, f"add_{key}_token_id")(token_id)
    writer.add_add_bos_token(False)
    for hf_name, tensor in state_dict.items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # llama.cpp reads the embedding as the output layer when output.weight is absent
        data = tensor.detach().float().cpu().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = permute_for_rope(data, heads)
        elif hf_name.endswith("k_proj.weight"):
            data = permute_for_rope(data, kv_heads)
        if quantize and data.ndim == 2 and data.shape[1] % 32 == 0:
            writer.add_tensor(gguf_name(hf_name), gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0),
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(gguf_name(hf_name), data)
    return _finish(writer, writer_path, path)


def write_lora_gguf(lora: dict[str, tuple[torch.Tensor, torch.Tensor, float]], config, path: Path) -> Path:
    """A LoRA adapter for llama.cpp (`llama_adapter_lora_init`), as llama.cpp's convert_lora_to_gguf.py writes one:
    `lora` maps a Linear's Hugging Face name ('model.layers.0.self_attn.q_proj') to (A (r, in), B (out, r), PEFT's
    scaling). llama.cpp scales by alpha / r, so alpha is written as scaling * r (one value per file: every layer
    must share it). B's rows of q and k are reordered like their weights (`permute_for_rope`)."""
    import gguf

    scalings = {round(scaling, 6) for _, _, scaling in lora.values()}
    ranks = {a.shape[0] for a, _, _ in lora.values()}
    if len(scalings) != 1 or len(ranks) != 1:
        raise EngineUnavailable("llama.cpp takes one LoRA scaling per adapter; this one has several")
    writer_path = path.with_name(path.name + ".partial")
    writer = gguf.GGUFWriter(str(writer_path), "llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, scalings.pop() * ranks.pop())
    for name, (a, b, _) in lora.items():
        b = b.detach().float().cpu().numpy()
        if name.endswith("q_proj"):
            b = permute_for_rope(b, config.num_attention_heads)
        elif name.endswith("k_proj"):
            b = permute_for_rope(b, config.num_key_value_heads)
        target = gguf_name(name + ".weight")
        writer.add_tensor(target + ".lora_a", a.detach().float().cpu().numpy())
        writer.add_tensor(target + ".lora_b", b)
    return _finish(writer, writer_path, path)


def _fingerprint(folder: str | None) -> list:
    """What identifies a model folder's weights: its path and each weight file's size and time."""
    if folder is None or not Path(folder).is_dir():
        return [folder]
    files = sorted(p for p in Path(folder).iterdir() if p.suffix in (".safetensors", ".bin"))
    return [str(Path(folder).resolve())] + [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def cached_gguf_path(base: str, adapter: str | None, quantize: bool, cache_dir: Path) -> Path:
    key = json.dumps([WRITER_VERSION, _fingerprint(base), _fingerprint(adapter), quantize], default=str)
    stem = Path(adapter).name if adapter else Path(base).name
    return Path(cache_dir) / f"{stem}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.gguf"


def gguf_cache_dir() -> Path:
    """Where written GGUF files are kept: $RLHF_GGUF_CACHE (the tests point it at a temporary folder), else
    models/gguf/."""
    return Path(os.environ.get("RLHF_GGUF_CACHE") or MODELS_DIR / "gguf")


def policy_gguf(base: str, adapter: str | None, tokenizer, quantize: bool = True,
                cache_dir: Path | None = None) -> Path:
    """The GGUF file of `base` with `adapter` merged in (None: the base), written on first use."""
    from transformers import AutoModelForCausalLM

    path = cached_gguf_path(base, adapter, quantize, cache_dir or gguf_cache_dir())
    if path.exists():
        return path
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)  # a fresh copy: merging changes it
    reason = unsupported_reason(model.config, tokenizer)
    if reason:
        raise EngineUnavailable(f"{reason}: pass --engine int8 or plain.")
    if adapter:
        from peft import PeftModel  # lazy: ~7 s to import, only adapters need it

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("writing %s for llama.cpp (once)", path)
    return write_gguf(model.state_dict(), model.config, tokenizer, path, quantize)
