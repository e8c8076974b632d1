"""AsyncLLM: many threads and event loops share one engine loop; streams end exactly once; aborts,
overload, bad requests and shutdown leave every pool empty."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from lamps_jax.async_llm import AsyncLLM, EngineOverloadedError
from lamps_jax.engine import InvalidRequestError, LLMEngine
from lamps_jax.request import SamplingParams
from tests.conftest import small_engine_config
from tests.engine.test_paged_vs_dense import dense_greedy


@pytest.fixture
def async_llm(tiny_model):
    llm = AsyncLLM(LLMEngine(tiny_model, small_engine_config(num_pages=64, max_num_seqs=8)))
    yield llm
    llm.shutdown()
    assert_pools_empty(llm.engine)


def assert_pools_empty(engine: LLMEngine) -> None:
    assert engine.page_pool.num_free == engine.page_pool.num_usable
    assert not engine.scheduler.requests and not engine.api.num_pending


async def collect(llm: AsyncLLM, prompt, params: SamplingParams, **kwargs):
    deltas = [delta async for delta in llm.generate(prompt, params, **kwargs)]
    return deltas


def test_32_threads_each_get_exactly_their_greedy_tokens(async_llm: AsyncLLM, tiny_model) -> None:
    prompts = [[(7 * i + j) % 400 + 1 for j in range(3 + i % 5)] for i in range(32)]
    results: dict[int, list] = {}

    def client(i: int) -> None:  # its own thread, its own event loop
        results[i] = asyncio.run(collect(async_llm, prompts[i], SamplingParams(max_tokens=6, ignore_eos=True)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(results) == list(range(32))
    for i, deltas in results.items():
        assert [d.finished for d in deltas].count(True) == 1 and deltas[-1].finished  # ends once, at the end
        tokens = [t for d in deltas for t in d.token_ids]
        assert tokens == deltas[-1].output.token_ids == dense_greedy(tiny_model, prompts[i], 6)


def test_abort_from_another_thread_ends_the_stream(async_llm: AsyncLLM) -> None:
    async def run() -> list:
        deltas = []
        async for delta in async_llm.generate([5, 6, 7], SamplingParams(max_tokens=100, ignore_eos=True), "long"):
            deltas.append(delta)
            if len(deltas) == 3:
                threading.Thread(target=async_llm.abort, args=("long",)).start()
        return deltas

    deltas = asyncio.run(run())
    assert deltas[-1].output.finish_reason == "abort" and len(deltas[-1].output.token_ids) < 100


def test_a_stream_closed_early_aborts_its_request(async_llm: AsyncLLM) -> None:
    async def run() -> None:
        stream = async_llm.generate([5, 6], SamplingParams(max_tokens=100, ignore_eos=True), "dropped")
        async for _ in stream:
            break
        await stream.aclose()  # a client that went away

    asyncio.run(run())
    give_up = time.monotonic() + 30
    while async_llm.engine.scheduler.requests and time.monotonic() < give_up:
        time.sleep(0.01)
    assert not async_llm.engine.scheduler.requests


def test_a_bad_request_fails_on_its_own_stream_only(async_llm: AsyncLLM) -> None:
    async def run():
        with pytest.raises(InvalidRequestError, match="empty"):
            await collect(async_llm, [], SamplingParams())
        return await collect(async_llm, [5], SamplingParams(max_tokens=2))

    assert asyncio.run(run())[-1].output.finish_reason in ("stop", "length")


def test_past_the_waiting_limit_generate_says_overloaded(tiny_model) -> None:
    llm = AsyncLLM(LLMEngine(tiny_model, small_engine_config(num_pages=64, max_num_seqs=1)), max_waiting=1)

    async def run():
        params = SamplingParams(max_tokens=120, ignore_eos=True)
        scheduler = llm.engine.scheduler
        running = asyncio.ensure_future(collect(llm, [5], params, req_id="running"))  # the only running slot
        while not scheduler.running:
            await asyncio.sleep(0.001)
        waiting = asyncio.ensure_future(collect(llm, [6], params, req_id="waiting"))
        while not scheduler.waiting:
            await asyncio.sleep(0.001)
        with pytest.raises(EngineOverloadedError, match=r"overloaded: the waiting queue is full \(1 of 1\)"):
            await collect(llm, [7], params, req_id="refused")
        return await asyncio.gather(running, waiting)

    for deltas in asyncio.run(run()):
        assert deltas[-1].output.finish_reason == "length"
    llm.shutdown()
    assert_pools_empty(llm.engine)


def test_shutdown_ends_every_stream_and_empties_the_pools(tiny_model) -> None:
    llm = AsyncLLM(LLMEngine(tiny_model, small_engine_config(num_pages=64)))

    async def run():
        tasks = [
            asyncio.ensure_future(collect(llm, [5, i + 1], SamplingParams(max_tokens=1000, ignore_eos=True)))
            for i in range(4)
        ]
        await asyncio.sleep(0.3)
        await asyncio.get_running_loop().run_in_executor(None, llm.shutdown)
        return await asyncio.gather(*tasks, return_exceptions=True)

    for result in asyncio.run(run()):
        assert isinstance(result, list) and result[-1].output.finish_reason == "abort"
    assert_pools_empty(llm.engine)


def test_a_session_turn_through_the_async_front_reuses_the_parked_kv(async_llm: AsyncLLM, tiny_model) -> None:
    """The second turn extends the first: its greedy tokens equal a cold run; shutdown releases the parked KV."""
    params = SamplingParams(max_tokens=4, ignore_eos=True)
    first = asyncio.run(collect(async_llm, [5, 6, 7, 8, 9], params, session_id="chat"))[-1].output
    prompt = [5, 6, 7, 8, 9, *first.token_ids, 11, 12]
    second = asyncio.run(collect(async_llm, prompt, params, session_id="chat"))[-1].output
    assert second.token_ids == dense_greedy(tiny_model, prompt, 4)
    assert async_llm.engine.session_tokens("chat") == prompt + second.token_ids
