"""What one ragged call per step (the engine issue's lever 2) could take off a mixed step on this CPU.

A step that prefills a prompt's chunk while other requests decode makes two calls today: the decode rows' (Q = 1)
and the chunk's rows (Q = the query block), and each reads every weight. One ragged call would read them once and
cost about what the chunk's call costs with B more tokens in it. This serves B requests that decode while prompts of
P tokens arrive one after another (each generating one token; P + B within the step budget, so that each prompt is
prefilled in one mixed step) and times:

- decode step: a step of the B decode rows alone (median);
- mixed step: the step that prefills the prompt while the B rows decode (median);
- prompt call: that step's prefill call run again alone through its executable (same arrays; median);

so "mixed - prompt call" is what the decode rows add to a mixed step today: the most a ragged call could save, of
which the B rows' own attention and sampling would stay.

python scripts/bench_mixed_step.py [--dtype int8] [--batch-sizes 1,8,32] [--prompt-tokens 256] [--prompts 6]

Prints a captioned Markdown table; ``--output FILE`` also writes it there.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import jax

from lamps_jax.bench.decode_throughput import _build_engine, long_prompt_token_ids, prompt_token_ids
from lamps_jax.bench.report import print_table
from lamps_jax.model.registry import load_model
from lamps_jax.request import SamplingParams


def _timed_step(engine, calls: list) -> tuple[float, list]:
    """(seconds, the step's call arrays) of one engine step."""
    calls.clear()
    start = time.perf_counter()
    engine.step()
    return time.perf_counter() - start, list(calls)


def _call_alone(runner, arrays) -> float:
    """Seconds of one call of ``arrays`` through its executable, waited for."""
    call = runner._executables.ready[arrays[0].token_ids.shape]
    start = time.perf_counter()
    outputs = call(runner.params, runner.kv.k, runner.kv.v, *arrays)
    runner.kv.k, runner.kv.v = outputs[2], outputs[3]
    jax.block_until_ready(outputs[0])
    return time.perf_counter() - start


def measure(model, batch: int, prompt_tokens: int, num_prompts: int) -> dict[str, float]:
    """Median ms of decode steps, mixed steps and their prompt calls alone, for ``batch`` decoding requests."""
    engine = _build_engine(model, batch + 1, prompt_tokens + 64 * num_prompts + 64)
    runner = engine.runner
    calls: list = []
    run = runner._call
    runner._call = lambda arrays: calls.append(arrays) or run(arrays)
    for prompt in prompt_token_ids(model.tokenizer, batch):
        engine.add_request(prompt, SamplingParams(max_tokens=64 * num_prompts + 32, ignore_eos=True))
    while any(r.num_generated_tokens == 0 for r in engine.scheduler.running) or engine.scheduler.waiting:
        engine.step()  # every decoding request past its prefill
    long_prompts = long_prompt_token_ids(model.tokenizer, num_prompts, prompt_tokens)
    decode, mixed, alone = [], [], []
    for prompt in long_prompts:
        for _ in range(4):
            decode.append(_timed_step(engine, calls)[0])
        engine.add_request(prompt, SamplingParams(max_tokens=1, ignore_eos=True))
        seconds, step_calls = _timed_step(engine, calls)
        query_lengths = sorted(arrays[0].token_ids.shape[1] for arrays in step_calls)
        if len(query_lengths) != 2 or query_lengths[0] != 1:
            raise RuntimeError(
                f"expected a decode call and a prefill call in the step, got query lengths {query_lengths}"
            )
        mixed.append(seconds)
        alone.append(_call_alone(runner, next(a for a in step_calls if a[0].token_ids.shape[1] > 1)))
    runner._call = run
    medians = {"decode": decode, "mixed": mixed, "alone": alone}
    return {name: 1e3 * statistics.median(times) for name, times in medians.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtype", default="int8")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--prompt-tokens", type=int, default=256, help="length of each arriving prompt")
    parser.add_argument("--prompts", type=int, default=6, help="prompts arriving per batch size")
    parser.add_argument("--output", type=Path, help="also write the Markdown table to this file")
    args = parser.parse_args()
    model = load_model(args.model, dtype=args.dtype)
    lines = [
        f"Mixed steps of {args.model} ({args.dtype}) on {os.cpu_count()} CPU cores, 1-minute load "
        f"{os.getloadavg()[0]:.1f} at the start: B requests decode while {args.prompts} prompts of "
        f"{args.prompt_tokens} tokens arrive one at a time (the engine setting of bench-engine: a 512-token step "
        "budget); median ms. decode share = (mixed - prompt call) / mixed: the most one ragged call per step could "
        "save of a mixed step.",
        "",
        "| B | decode step | mixed step | prompt call alone | mixed - prompt call | decode share |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        ms = measure(model, batch, args.prompt_tokens, args.prompts)
        added = ms["mixed"] - ms["alone"]
        lines.append(
            f"| {batch} | {ms['decode']:.1f} | {ms['mixed']:.1f} | {ms['alone']:.1f} | {added:.1f} | "
            f"{100 * added / ms['mixed']:.0f}% |"
        )
        print(lines[-1], flush=True)
    print_table(lines, args.output)


if __name__ == "__main__":
    main()
