"""The engine loop's host cost, and what resuming a session saves, side by side in one run.

1. Per-token host overhead of the loop (schedule + update + output processing with the model's tokenizer,
   stop strings searched) at 1, 32 and 256 running requests with outputs of 100 and 4,000 tokens. The model's
   forward is replaced by a runner that returns at once, so what is timed is everything around it.
2. Turn-2 time to first token of a conversation whose history is ~4,000 tokens, on the real model: a cold
   turn (the whole history prefilled) against a resumed session (only the new tokens).

    python scripts/bench_loop.py [--model smollm2-135m] [--output bench_results/loop]

Writes a captioned Markdown table and the JSON it comes from, and names both.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from lamps_jax.clock import WallClock
from lamps_jax.config import CacheConfig, EngineConfig, SchedulerConfig
from lamps_jax.engine import LLMEngine
from lamps_jax.model.registry import LoadedModel, load_model
from lamps_jax.request import SamplingParams
from lamps_jax.scheduler.output import RunnerOutput, SchedulerOutput

RUNNING = (1, 32, 256)
LENGTHS = (100, 4000)
HISTORY_TOKENS = 4000


class InstantRunner:
    """Samples a fixed cycle of ordinary tokens and takes no time: the loop around the model is all that runs."""

    def __init__(self, token_ids: list[int]) -> None:
        self.token_ids = token_ids
        self.calls = 0

    def warmup(self) -> None:
        """Nothing to compile."""

    def execute(self, sched_out: SchedulerOutput) -> RunnerOutput:
        self.calls += 1
        ids = [c.req_id for c in sched_out.scheduled if c.samples]
        token = self.token_ids[self.calls % len(self.token_ids)]
        return RunnerOutput(ids, [token] * len(ids), 0.0)


def loop_overhead(model: LoadedModel, running: int, length: int) -> dict:
    words = model.tokenizer.encode(" the scheduler keeps memory pages for every call", add_special_tokens=False)
    pages = running * (length + 64) // 16 + 2
    config = EngineConfig(
        cache=CacheConfig(page_size=16, num_pages=pages),
        scheduler=SchedulerConfig(max_num_seqs=running, max_num_batched_tokens=max(256, running)),
        max_model_len=length + 64,
        api_timeout=None,
    )
    stand_in = LoadedModel(model.config.replace(max_position_embeddings=length + 64), None, model.tokenizer)
    engine = LLMEngine(stand_in, config, WallClock(), runner=InstantRunner(words))
    params = SamplingParams(max_tokens=length, ignore_eos=True, stop=("never appears",))
    for i in range(running):
        engine.add_request(words * 2 + [words[i % len(words)]], params)
    tokens, start = 0, time.perf_counter()
    while engine.has_unfinished_requests():
        tokens += sum(len(delta.token_ids) for delta in engine.step_deltas())
    seconds = time.perf_counter() - start
    return {"running": running, "output_tokens": length, "tokens": tokens, "us_per_token": seconds / tokens * 1e6}


def turn2_ttft(model: LoadedModel, resume: bool) -> dict:
    rng = random.Random(0)
    history = [rng.randrange(100, model.config.vocab_size) for _ in range(HISTORY_TOKENS)]
    config = EngineConfig(
        cache=CacheConfig(page_size=16, num_pages=2 * (HISTORY_TOKENS + 256) // 16 + 2),
        scheduler=SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=512),
        max_model_len=HISTORY_TOKENS + 256,
        api_timeout=None,
    )
    engine = LLMEngine(model, config)
    engine.runner.warmup()
    params = SamplingParams(max_tokens=8, ignore_eos=True)
    session = "conversation" if resume else None
    engine.add_request(history, params, session_id=session)
    finished = []
    while engine.has_unfinished_requests():
        finished += engine.step()
    (first,) = finished
    tool_result = [rng.randrange(100, model.config.vocab_size) for _ in range(40)]
    prompt = history + list(first.token_ids) + tool_result
    start = time.perf_counter()
    req_id = engine.add_request(prompt, params, session_id=session)
    while not any(delta.token_ids for delta in engine.step_deltas() if delta.req_id == req_id):
        pass
    seconds = time.perf_counter() - start
    return {"turn2": "session resumed" if resume else "cold", "prompt_tokens": len(prompt), "ttft_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="a model whose context holds 4,256 tokens")
    parser.add_argument("--output", type=Path, default=Path("bench_results/loop"))
    args = parser.parse_args()
    model = load_model(args.model)
    overhead = [loop_overhead(model, running, length) for running in RUNNING for length in LENGTHS]
    ttft = [turn2_ttft(model, resume) for resume in (False, True)]
    lines = [
        f"Table 1. Host cost of the engine loop per generated token (schedule + update + output processing with "
        f"{args.model}'s tokenizer and a stop string), the model's forward replaced by an instant runner; one run.",
        "",
        "| running | output tokens | tokens | us/token |",
        "|---|---|---|---|",
        *(f"| {r['running']} | {r['output_tokens']} | {r['tokens']} | {r['us_per_token']:.1f} |" for r in overhead),
        "",
        f"Table 2. Time to first token of turn 2 on {args.model} (CPU), history of {HISTORY_TOKENS} tokens plus "
        "turn 1's output and a 40-token tool result; compiled shapes warmed first.",
        "",
        "| turn 2 | prompt tokens | TTFT s |",
        "|---|---|---|",
        *(f"| {r['turn2']} | {r['prompt_tokens']} | {r['ttft_s']:.3f} |" for r in ttft),
    ]
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "loop.md").write_text("\n".join(lines) + "\n")
    (args.output / "loop.json").write_text(json.dumps({"overhead": overhead, "turn2": ttft}, indent=2) + "\n")
    print("\n".join(lines))
    print(f"wrote {args.output / 'loop.md'}\nwrote {args.output / 'loop.json'}")


if __name__ == "__main__":
    main()
