"""Tokenizers for every model source, all as transformers fast tokenizers (no torch at run time).

transformers is imported where a tokenizer is made, not with this module: its import takes most of a second, which a
start spends on a thread of its own while the weights load (``converted_cache.py``).

- Hugging Face directories: their own tokenizer files.
- GGUF files: rebuilt from metadata (``gguf_loader.tokenizer_from_gguf``).
- Random-init presets: a byte-level tokenizer whose 256 byte tokens, end-of-text token and
  reserved specials fill the preset's vocabulary exactly, so any sampled id decodes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
_BYTE_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def byte_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level tokenizer with id 0 = end-of-text, ids 1..256 = bytes, the rest reserved."""
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 257:
        raise ValueError(f"a byte tokenizer needs vocab_size >= 257, got {vocab_size}")
    byte_symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {EOS_TOKEN: 0} | {sym: i + 1 for i, sym in enumerate(byte_symbols)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    reserved = [f"<|reserved_{i}|>" for i in range(vocab_size - 257)]
    tok.add_special_tokens([EOS_TOKEN, *reserved])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN, chat_template=_BYTE_CHAT_TEMPLATE
    )


def load_hf_tokenizer(path: Path) -> PreTrainedTokenizerBase | None:
    """The directory's tokenizer, or None when it has none (token-id prompts still work)."""
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        return None
    from transformers import AutoTokenizer  # imports torch when it is installed: only for directories that need it

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
