"""GGUF files (llama.cpp format): config, dequantized weights and tokenizer, with numpy only.

llama.cpp stores q/k projection rows permuted for its interleaved RoPE; they are permuted back to
the Hugging Face rotate-half layout here. The tokenizer is rebuilt from the file's metadata
(byte-level BPE with single-digit splitting, as SmolLM2 uses), chat template included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lamps_jax.config import ModelConfig
from lamps_jax.model.llama import Params
from lamps_jax.model.sources import ModelLoadError
from lamps_jax.model.weights import params_from_hf_tensors

_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def _hf_name(gguf_name: str) -> str:
    parts = gguf_name.split(".")  # blk.3.attn_q.weight | token_embd.weight
    if parts[0] == "blk":
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.{parts[3]}"
    return f"{_GLOBAL_NAMES[parts[0]]}.{parts[1]}"


def _unpermute_rope_rows(w: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation: rows [heads, H/2, 2] -> [heads, 2, H/2]."""
    rows, cols = w.shape
    return w.reshape(num_heads, rows // num_heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def _field(reader: Any, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def _config(reader: Any, dtype: str) -> ModelConfig:
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ModelLoadError(f"GGUF architecture {arch!r} is not supported (only 'llama')")
    num_heads = int(_field(reader, f"{arch}.attention.head_count"))
    hidden = int(_field(reader, f"{arch}.embedding_length"))
    tensor_names = {t.name for t in reader.tensors}
    return ModelConfig(
        vocab_size=len(_field(reader, "tokenizer.ggml.tokens")),
        hidden_size=hidden,
        intermediate_size=int(_field(reader, f"{arch}.feed_forward_length")),
        num_layers=int(_field(reader, f"{arch}.block_count")),
        num_heads=num_heads,
        num_kv_heads=int(_field(reader, f"{arch}.attention.head_count_kv", num_heads)),
        head_dim=int(_field(reader, f"{arch}.rope.dimension_count", hidden // num_heads)),
        rms_norm_eps=float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(_field(reader, f"{arch}.rope.freq_base", 10_000.0)),
        max_position_embeddings=int(_field(reader, f"{arch}.context_length", 2048)),
        tie_word_embeddings="output.weight" not in tensor_names,
        eos_token_ids=(int(_field(reader, "tokenizer.ggml.eos_token_id")),),
        dtype=dtype,
    )


def open_gguf(path: Path) -> Any:
    """The file's ``gguf.GGUFReader`` (metadata parsed, tensors not read)."""
    import gguf

    try:
        return gguf.GGUFReader(str(path))
    except Exception as err:  # the reader raises bare ValueError/struct errors on corrupt files
        raise ModelLoadError(f"corrupt or unreadable GGUF file {path}: {err!r}") from err


def load_gguf(path: Path, dtype: str = "float32") -> tuple[ModelConfig, Params, Any]:
    """Returns (config, params, reader); the reader feeds ``tokenizer_from_gguf``."""
    import gguf

    reader = open_gguf(path)
    cfg = _config(reader, dtype)
    by_name = {_hf_name(t.name): t for t in reader.tensors}

    def get(hf_name: str) -> np.ndarray:
        tensor = by_name[hf_name]
        w = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        if hf_name.endswith("q_proj.weight"):
            w = _unpermute_rope_rows(w, cfg.num_heads)
        elif hf_name.endswith("k_proj.weight"):
            w = _unpermute_rope_rows(w, cfg.num_kv_heads)
        return w

    return cfg, params_from_hf_tensors(get, cfg), reader


def tokenizer_from_gguf(reader: Any):
    """A transformers fast tokenizer rebuilt from GGUF metadata (byte-level BPE)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if _field(reader, "tokenizer.ggml.model") != "gpt2":
        raise ModelLoadError("only byte-level BPE ('gpt2') GGUF tokenizers are supported")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    token_types = _field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False)
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    control = [t for t, kind in zip(tokens, token_types) if kind == 3]  # llama.cpp CONTROL tokens
    tok.add_special_tokens(control)

    def token(key: str) -> str | None:
        idx = _field(reader, key)
        return None if idx is None else tokens[int(idx)]

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=token("tokenizer.ggml.bos_token_id"),
        eos_token=token("tokenizer.ggml.eos_token_id"),
        unk_token=token("tokenizer.ggml.unknown_token_id"),
        pad_token=token("tokenizer.ggml.padding_token_id"),
        chat_template=_field(reader, "tokenizer.chat_template"),
    )
