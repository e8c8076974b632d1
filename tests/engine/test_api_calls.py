"""Augmented requests: API calls under Preserve, Discard and Swap, tools, failures and aborts."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time

import numpy as np
import pytest

from lamps_jax.engine import IDLE_WAIT_SECONDS, LLMEngine
from lamps_jax.request import ApiCall, SamplingParams, Segment
from tests.conftest import small_engine_config
from tests.engine.test_paged_vs_dense import dense_greedy

STRATEGIES = ("preserve", "discard", "swap")


def api_engine(model, strategy: str, num_pages: int = 256, num_host_pages: int = 256, **engine_kwargs) -> LLMEngine:
    config = small_engine_config(num_pages=num_pages)
    scheduler = dataclasses.replace(
        config.scheduler, kv_strategy=strategy, num_host_pages=num_host_pages, max_swap_pages_per_step=16
    )
    return LLMEngine(model, dataclasses.replace(config, scheduler=scheduler, **engine_kwargs))


def drain(engine: LLMEngine, max_seconds: float = 60.0) -> dict:
    outputs = {}
    deadline = time.monotonic() + max_seconds
    while engine.has_unfinished_requests():
        assert time.monotonic() < deadline, "the engine did not finish its requests"
        outputs.update({o.req_id: o for o in engine.step()})
        engine.page_pool.check_invariants()
        engine.wait_for_work()
    return outputs


def assert_nothing_leaked(engine: LLMEngine) -> None:
    s = engine.scheduler
    assert s.page_pool.num_free == s.page_pool.num_usable
    if s.host_pool is not None:
        s.host_pool.check_invariants()
        assert s.host_pool.num_free == s.host_pool.num_usable
    assert not engine.api.num_pending
    assert not (s.requests or s.paused or s.swap_in_queue or s.swap_out_queue or s.running or s.waiting)


def scripted_requests(vocab: int, count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    requests = []
    for _ in range(count):
        prompt = [int(t) for t in rng.integers(1, vocab, size=int(rng.integers(3, 30)))]
        segments = []
        for _ in range(int(rng.integers(1, 4))):
            result = tuple(int(t) for t in rng.integers(1, vocab, size=int(rng.integers(1, 20))))
            call = ApiCall("sim", duration=float(rng.uniform(0, 0.02)), result_token_ids=result)
            segments.append(Segment(int(rng.integers(1, 8)), call))
        segments.append(Segment(int(rng.integers(1, 8))))
        requests.append((prompt, segments))
    return requests


def expected_tokens(model, prompt: list[int], segments: list[Segment]) -> list[int]:
    """The same full token sequence with no pause: greedy decode, append results, go on."""
    context = list(prompt)
    for segment in segments:
        context += dense_greedy(model, context, segment.num_tokens)
        if segment.api_call is not None:
            context += list(segment.api_call.result_token_ids)
    return context[len(prompt) :]


def test_api_calls_give_identical_greedy_output_under_every_strategy(tiny_model) -> None:
    requests = scripted_requests(tiny_model.config.vocab_size, count=6)
    outputs = {}
    for strategy in STRATEGIES:
        engine = api_engine(tiny_model, strategy)
        swaps = []
        schedule = engine.scheduler.schedule

        def recording_schedule(schedule=schedule, swaps=swaps):
            out = schedule()
            swaps.extend(out.swap_out + out.swap_in)
            return out

        engine.scheduler.schedule = recording_schedule
        ids = [engine.add_request(p, SamplingParams(ignore_eos=True), segments=s) for p, s in requests]
        done = drain(engine)
        outputs[strategy] = [done[i].token_ids for i in ids]
        assert all(done[i].finish_reason == "stop" for i in ids)
        assert bool(swaps) == (strategy == "swap")
        assert_nothing_leaked(engine)
    assert outputs["preserve"] == outputs["discard"] == outputs["swap"]
    for (prompt, segments), tokens in zip(requests, outputs["preserve"]):
        assert tokens == expected_tokens(tiny_model, prompt, segments)


def test_swaps_under_heavy_page_reuse_keep_greedy_outputs(tiny_model) -> None:
    """15 usable device pages for requests of up to 11: every freed page is handed out again at once."""
    engine = api_engine(tiny_model, "swap", num_pages=16, num_host_pages=64)
    rng = np.random.default_rng(5)
    requests = []
    for _ in range(6):
        prompt = [int(t) for t in rng.integers(1, 256, size=int(rng.integers(6, 13)))]
        segments = [
            Segment(
                int(rng.integers(3, 7)),
                ApiCall("sim", duration=0.005, result_token_ids=tuple(int(t) for t in rng.integers(1, 256, size=4))),
            )
            for _ in range(2)
        ] + [Segment(int(rng.integers(3, 7)))]
        requests.append((prompt, segments))
    swapped_out_pages, reused = set(), set()
    schedule = engine.scheduler.schedule

    def recording_schedule():
        out = schedule()
        reused.update(swapped_out_pages & {p for c in out.scheduled for p in c.request.page_ids})
        reused.update(swapped_out_pages & {p for copy in out.swap_in for p in copy.page_ids})
        swapped_out_pages.update(p for copy in out.swap_out for p in copy.page_ids)
        return out

    engine.scheduler.schedule = recording_schedule
    ids = [engine.add_request(p, SamplingParams(ignore_eos=True), segments=s) for p, s in requests]
    done = drain(engine)
    assert engine.scheduler.strategy_counts["swap"] >= 6 and reused
    for req_id, (prompt, segments) in zip(ids, requests):
        assert done[req_id].token_ids == expected_tokens(tiny_model, prompt, segments)
    assert_nothing_leaked(engine)


def test_swap_round_trip_through_host_pages_is_bit_exact_for_every_layer(tiny_model) -> None:
    engine = api_engine(tiny_model, "swap", num_host_pages=8)
    runner = engine.runner
    rng = np.random.default_rng(0)
    runner.kv.k = [k + rng.normal(size=k.shape).astype(np.float32) for k in runner.kv.k]
    runner.kv.v = [v + rng.normal(size=v.shape).astype(np.float32) for v in runner.kv.v]
    before_k = [np.asarray(k) for k in runner.kv.k]
    before_v = [np.asarray(v) for v in runner.kv.v]
    source, host_pages, target = [9, 3, 17], [8, 2, 5], [40, 41, 5]
    runner.swapper.swap_out(runner.kv, source, host_pages)
    runner.swapper.swap_in(runner.kv, host_pages, target)  # reads the pages before their copy has landed
    for layer in range(tiny_model.config.num_layers):
        for before, after in ((before_k[layer], runner.kv.k[layer]), (before_v[layer], runner.kv.v[layer])):
            after = np.asarray(after)
            assert np.array_equal(after[:, target], before[:, source])
            untouched = [p for p in range(1, before.shape[1]) if p not in target]
            assert np.array_equal(after[:, untouched], before[:, untouched])
    page_bytes = tiny_model.config.kv_bytes_per_token * engine.config.cache.page_size
    assert runner.swapper.nbytes == 9 * page_bytes  # the host pool's 8 pages and the padding page, no more


def test_swap_falls_back_to_discard_when_the_host_pool_is_full(tiny_model) -> None:
    engine = api_engine(tiny_model, "swap", num_host_pages=2)
    (prompt, segments), *_ = scripted_requests(tiny_model.config.vocab_size, count=1, seed=3)
    prompt = list(range(1, 40))  # 10 pages of 4 tokens: more than the host pool holds
    req_id = engine.add_request(prompt, SamplingParams(ignore_eos=True), segments=segments)
    strategies = []
    while engine.has_unfinished_requests():
        engine.step()
        request = engine.scheduler.requests.get(req_id)
        if request is not None and request.strategy is not None:
            strategies.append(request.strategy.value)
    assert "discard" in strategies and "swap" not in strategies
    assert_nothing_leaked(engine)


def where(request) -> str:
    return f"{request.status.value}/{request.strategy.value}" if request.strategy else request.status.value


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_random_calls_failures_timeouts_and_aborts_leak_nothing(tiny_model, strategy: str) -> None:
    engine = api_engine(tiny_model, strategy, num_pages=40, num_host_pages=24, api_timeout=0.03)
    rng = random.Random(7)
    ids = []
    for i, (prompt, segments) in enumerate(scripted_requests(tiny_model.config.vocab_size, count=20, seed=11)):
        segments = [
            dataclasses.replace(
                s,
                api_call=dataclasses.replace(
                    s.api_call, duration=rng.choice([0.0, 0.01, 0.05]), fails=rng.random() < 0.2
                ),
            )
            if s.api_call
            else s
            for s in segments
        ]
        ids.append(engine.add_request(prompt, SamplingParams(ignore_eos=True, max_tokens=40), f"r{i}", segments))
    aborted_where = set()
    outputs = {}
    for _ in range(5000):
        if not engine.has_unfinished_requests():
            break
        outputs.update({o.req_id: o for o in engine.step()})
        engine.page_pool.check_invariants()
        engine.wait_for_work()
        if rng.random() < 0.15:
            live = list(engine.scheduler.requests.values())
            # Prefer a place no abort has hit yet, so every state (waiting, running, mid-call, swapped) is covered.
            fresh = [r for r in live if where(r) not in aborted_where]
            if live:
                victim = rng.choice(fresh or live)
                aborted_where.add(where(victim))
                out = engine.abort_request(victim.req_id)
                outputs[out.req_id] = out
    assert set(outputs) == set(ids), "every request ends exactly once"
    reasons = {o.finish_reason for o in outputs.values()}
    assert "abort" in reasons and "stop" in reasons
    assert_nothing_leaked(engine)
    assert f"paused_api/{strategy}" in aborted_where


def test_errors_end_the_request_under_the_abort_policy(tiny_model) -> None:
    engine = api_engine(tiny_model, "preserve", api_error_policy="abort", api_timeout=0.01)
    failing = engine.add_request(
        [1, 2, 3],
        SamplingParams(ignore_eos=True),
        segments=[Segment(2, ApiCall("x", duration=0.0, fails=True)), Segment(2)],
    )
    slow = engine.add_request(
        [1, 2, 3], SamplingParams(ignore_eos=True), segments=[Segment(2, ApiCall("y", duration=5.0)), Segment(2)]
    )
    done = drain(engine)
    assert done[failing].finish_reason == "error" and "failed" in done[failing].error
    assert done[slow].finish_reason == "error" and "timed out" in done[slow].error
    assert_nothing_leaked(engine)


TOOL_CALL = '<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>'


@pytest.mark.parametrize(
    ("tool_name", "expect", "status"),
    [
        ("add", "5", "ok"),
        ("async_add", "5", "ok"),
        ("boom", "error: tool", "error"),
        ("sleepy", "timed out", "timeout"),
        ("nope", "unknown tool", "unknown_tool"),
    ],
)
def test_detected_tool_call_is_parsed_executed_and_appended(tiny_model, tool_name: str, expect: str, status) -> None:
    engine = api_engine(tiny_model, "preserve", tool_call_tags=("<tool_call>", "</tool_call>"), api_timeout=0.5)

    async def async_add(a: int, b: int) -> str:
        await asyncio.sleep(0.01)
        return str(a + b)

    def boom(a: int, b: int) -> str:
        raise RuntimeError("no")

    tools = {"add": lambda a, b: str(a + b), "async_add": async_add, "boom": boom, "sleepy": lambda a, b: time.sleep(2)}
    if tool_name in tools:
        engine.register_tool(tool_name, tools[tool_name])
    tok = tiny_model.tokenizer
    spelled = tuple(tok.encode(TOOL_CALL.replace('"add"', f'"{tool_name}"'), add_special_tokens=False)) + (33, 34)
    req_id = engine.add_request("Q:", SamplingParams(), segments=[Segment(len(spelled), token_ids=spelled)])
    out = drain(engine)[req_id]
    call_text = TOOL_CALL.replace('"add"', f'"{tool_name}"')
    assert out.text.startswith(call_text)
    assert expect in out.text[len(call_text) :]  # the text keeps what the model saw
    assert out.finish_reason == "stop"
    [call] = out.api_calls  # and a program reads the outcome without parsing text
    assert (call.name, call.status, call.strategy) == (tool_name, status, "preserve")
    assert (call.error is None) == (status == "ok") and (
        call.error is None or expect.removeprefix("error: ") in call.error
    )
    assert call.duration >= (0.5 if status == "timeout" else 0.0)
    assert_nothing_leaked(engine)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_external_pause_and_resume(tiny_model, strategy: str) -> None:
    engine = api_engine(tiny_model, strategy)
    prompt = [5, 6, 7, 8, 9]
    req_id = engine.add_request(prompt, SamplingParams(max_tokens=6, ignore_eos=True))
    for _ in range(3):
        engine.step()
    used = engine.pause_request(req_id)
    assert used.value == strategy
    for _ in range(3):
        assert engine.step() == []  # paused by the caller (a swap-out may still run): nothing to wait for
        engine.wait_for_work()
    assert engine.step() == []
    start = time.monotonic()
    engine.wait_for_work()
    assert time.monotonic() - start >= IDLE_WAIT_SECONDS / 2  # idle: a short wait, not a spin
    engine.resume_request(req_id, [50, 51, 52])
    out = drain(engine)[req_id]
    first = dense_greedy(tiny_model, prompt, 3)
    assert out.token_ids[:6] == first + [50, 51, 52]
    assert out.token_ids[6:] == dense_greedy(tiny_model, prompt + first + [50, 51, 52], 3)
    assert_nothing_leaked(engine)


def test_stop_strings_and_tool_calls_are_read_only_in_what_the_model_generated(tiny_model) -> None:
    engine = api_engine(tiny_model, "preserve", tool_call_tags=("<tool_call>", "</tool_call>"))
    tok = tiny_model.tokenizer
    result_text = "STOP " + TOOL_CALL  # an API result that holds a stop string and a complete tool call

    def spell(text: str) -> tuple[int, ...]:
        return tuple(tok.encode(text, add_special_tokens=False))

    segments = [
        Segment(2, ApiCall("sim", duration=0.0, result_token_ids=spell(result_text)), token_ids=spell("hi")),
        Segment(8, token_ids=spell("abSTOPcd")),
    ]
    req_id = engine.add_request([5, 6, 7], SamplingParams(stop=("STOP",), ignore_eos=True), segments=segments)
    out = drain(engine)[req_id]
    assert out.num_api_calls == 1  # the tool call inside the result was not made
    assert out.finish_reason == "stop" and out.stop_reason == "STOP"
    assert out.text == "hi" + result_text + "ab"  # ends at the generated stop string, the result kept whole
    assert_nothing_leaked(engine)
