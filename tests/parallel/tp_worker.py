"""Runs tensor-parallel engines in a fresh process (fake CPU devices must be set before JAX starts).

``python -m tests.parallel.tp_worker engines --tp 1,2,4``: one runner per tp on 8 fake devices, each
serving the same scripted requests under Swap and under Discard; prints one JSON line with the tokens,
the shardings seen and the compile counts.
``python -m tests.parallel.tp_worker process --address 127.0.0.1:PORT --process-id I``: one of two processes
of a multi-controller run (one CPU device each, tp = 2); process 0 prints the tokens as one JSON line.
Each run ends itself after ``TIME_LIMIT_S`` seconds (``faulthandler`` dumps the stacks and exits).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import sys
import time

TIME_LIMIT_S = 240
CHUNK = 8  # the query block and token budget: a 20-token prompt is prefilled in three chunks


def model_config():
    from lamps_jax.config import ModelConfig

    return ModelConfig(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        num_layers=2,
        num_heads=8,
        num_kv_heads=4,
        head_dim=16,
        eos_token_ids=(0,),
    )


def engine_config(tensor_parallel: int, strategy: str):
    from lamps_jax.config import CacheConfig, EngineConfig, SchedulerConfig

    return EngineConfig(
        cache=CacheConfig(page_size=8, num_pages=24),
        scheduler=SchedulerConfig(
            max_num_seqs=1,  # one row per step: one compiled shape for decodes, one for prefill chunks
            max_num_batched_tokens=CHUNK,
            kv_strategy=strategy,
            num_host_pages=16,
        ),
        max_model_len=32,
        query_block=CHUNK,
        kv_block_tokens=16,
        tensor_parallel=tensor_parallel,
    )


def requests():
    """Three prompts (one longer than a chunk), each pausing once for a short scripted API call."""
    from lamps_jax.request import ApiCall, Segment

    prompts = [[(7 * i + j) % 500 + 1 for j in range(length)] for i, length in enumerate((20, 5, 11))]
    call = ApiCall("sim", duration=0.01, result_token_ids=(3, 4, 5))
    return [(prompt, (Segment(3, call), Segment(4))) for prompt in prompts]


def serve(engine) -> dict:
    """Serves ``requests()``; returns tokens per request and the swaps and recomputes the steps ran."""
    counts = {"swap_out_pages": 0, "swap_in_pages": 0, "recomputed_tokens": 0}
    execute = engine.runner.execute

    def counting(sched_out):
        counts["swap_out_pages"] += sum(len(c.page_ids) for c in sched_out.swap_out)
        counts["swap_in_pages"] += sum(len(c.page_ids) for c in sched_out.swap_in)
        counts["recomputed_tokens"] += sum(
            c.num_new_tokens for c in sched_out.scheduled if c.request.num_generated_tokens and c.num_new_tokens > 1
        )
        return execute(sched_out)

    engine.runner.execute = counting
    ids = [engine.add_request(prompt, segments=segments) for prompt, segments in requests()]
    outputs = {}
    while engine.has_unfinished_requests():
        outputs.update({o.req_id: o.token_ids for o in engine.step()})
        engine.wait_for_work()
    engine.runner.execute = execute
    return {"tokens": [outputs[i] for i in ids], **counts}


def _shards(array) -> dict:
    spec = getattr(array.sharding, "spec", None)  # None: one device (tp = 1)
    return {"spec": None if spec is None else list(spec), "shard_shape": list(array.addressable_shards[0].data.shape)}


def run_engines(tensor_parallels: list[int]) -> dict:
    import jax

    from lamps_jax.engine import LLMEngine
    from lamps_jax.model.registry import LoadedModel
    from lamps_jax.model.weights import init_params
    from lamps_jax.runner import num_compilations

    cfg = model_config()
    model = LoadedModel(cfg, init_params(cfg, seed=0), None)
    results = {}
    for tp in tensor_parallels:
        swap = LLMEngine(model, engine_config(tp, "swap"))
        warm = num_compilations()
        runner = swap.runner
        result = {"swap": serve(swap)}
        result["discard"] = serve(LLMEngine(model, engine_config(tp, "discard"), runner=runner))
        result["compiles_after_warmup"] = num_compilations() - warm
        result["num_pages"] = runner.kv.k[0].shape[1]
        on_device_0 = [x.addressable_shards[0].data for x in jax.tree.leaves((runner.params, runner.kv.k, runner.kv.v))]
        result["param_bytes_per_device"] = sum(x.nbytes for x in on_device_0[: len(jax.tree.leaves(runner.params))])
        result["kv_bytes_per_device"] = sum(x.nbytes for x in on_device_0[len(jax.tree.leaves(runner.params)) :])
        result["kv"] = _shards(runner.kv.k[0])
        layer = runner.params["layers"][0]
        result["params"] = {name: _shards(layer[name]) for name in ("wqkv", "wo", "w_gate_up", "w_down", "attn_norm")}
        result["params"] |= {name: _shards(runner.params[name]) for name in ("embed", "lm_head")}
        results[str(tp)] = result
    return results


def run_process(address: str, process_id: int) -> dict | None:
    from lamps_jax import distributed
    from lamps_jax.engine import LLMEngine
    from lamps_jax.model.registry import LoadedModel
    from lamps_jax.model.weights import init_params

    distributed.initialize(address, num_processes=2, process_id=process_id)
    cfg = model_config()
    engine = LLMEngine(LoadedModel(cfg, init_params(cfg, seed=0), None), engine_config(2, "swap"))
    if not distributed.is_leader():
        distributed.follow(engine.runner)
        return None
    try:
        return serve(engine)
    finally:
        distributed.release_followers()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["engines", "process"])
    parser.add_argument("--tp", default="1,2,4")
    parser.add_argument("--address")
    parser.add_argument("--process-id", type=int, default=0)
    args = parser.parse_args()
    faulthandler.dump_traceback_later(TIME_LIMIT_S, exit=True)
    if args.mode == "engines":
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax

    jax.config.update("jax_platforms", "cpu")
    start = time.perf_counter()
    if args.mode == "engines":
        result = run_engines([int(tp) for tp in args.tp.split(",")])
    else:
        result = run_process(args.address, args.process_id)
    if result is not None:
        print(json.dumps({"result": result, "seconds": time.perf_counter() - start}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
