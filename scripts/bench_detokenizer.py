"""Per-token cost of turning output tokens into text: incremental (``OutputText``) vs decoding the whole
output at every token, at 100 and 4,000 generated tokens, side by side in one run.

    python scripts/bench_detokenizer.py [--model smollm2-135m|tiny]

Prints a captioned Markdown table: microseconds per token over the last 100 tokens of each length.
"""

from __future__ import annotations

import argparse
import random
import time

from lamps_jax.detokenizer import OutputText
from lamps_jax.model.registry import load_model

LENGTHS = (100, 4000)
MEASURED = 100  # the last tokens of each output are timed


def incremental_us(decode, token_ids: list[int]) -> float:
    text, output = OutputText(decode, stops=("</s>",)), []  # the output grows in place, as a request's does
    for token in token_ids[:-MEASURED]:
        output.append(token)
        text.update(output, 0)
    start = time.perf_counter()
    for token in token_ids[-MEASURED:]:
        output.append(token)
        text.update(output, 0)
    return (time.perf_counter() - start) / MEASURED * 1e6


def whole_decode_us(decode, token_ids: list[int]) -> float:
    start = time.perf_counter()
    for end in range(len(token_ids) - MEASURED + 1, len(token_ids) + 1):
        "</s>" in decode(token_ids[:end])  # noqa: B015 - the search is part of what is timed
    return (time.perf_counter() - start) / MEASURED * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="whose tokenizer decodes")
    args = parser.parse_args()
    tokenizer = load_model(args.model).tokenizer

    def decode(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=True)

    rng = random.Random(0)
    words = [
        "the",
        "a",
        "model",
        "token",
        "scheduler",
        "memory",
        "swap",
        "page",
        "call",
        "result",
        "漢字",
        "naïve",
        "🙂",
    ]
    text = " ".join(rng.choice(words) for _ in range(6000))
    all_ids = tokenizer.encode(text, add_special_tokens=False)
    print(f"Per-token detokenizing cost, {args.model} tokenizer, microseconds per token (last {MEASURED} tokens)\n")
    print("| generated tokens | incremental | whole output decoded per token |")
    print("|---:|---:|---:|")
    for length in LENGTHS:
        ids = all_ids[:length]
        print(f"| {length:,} | {incremental_us(decode, ids):.1f} | {whole_decode_us(decode, ids):.1f} |")


if __name__ == "__main__":
    main()
