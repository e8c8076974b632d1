"""ApiExecutor on a virtual clock: simulated calls come back in deadline order, cancels and timeouts hold."""

from __future__ import annotations

import threading
import time

from lamps_jax.api.executor import ApiExecutor
from lamps_jax.clock import VirtualClock, WallClock
from lamps_jax.request import ApiCall


def call(duration: float, *tokens: int, fails: bool = False) -> ApiCall:
    return ApiCall("qa", duration=duration, result_token_ids=tokens, fails=fails)


def test_simulated_calls_complete_in_deadline_order_when_the_clock_passes() -> None:
    clock = VirtualClock()
    executor = ApiExecutor(clock, timeout=None)
    executor.submit("slow", call(3.0, 1))
    executor.submit("fast", call(1.0, 2))
    executor.submit("mid", call(2.0, 3))
    assert executor.next_deadline() == 1.0 and executor.poll() == []
    clock.advance(2.5)
    assert [(r.req_id, r.token_ids) for r in executor.poll()] == [("fast", (2,)), ("mid", (3,))]
    assert executor.num_pending == 1 and executor.next_deadline() == 3.0
    clock.advance(1.0)
    assert [r.req_id for r in executor.poll()] == ["slow"]
    assert executor.next_deadline() is None and executor.num_pending == 0


def test_a_cancelled_call_never_returns_and_its_id_can_call_again() -> None:
    clock = VirtualClock()
    executor = ApiExecutor(clock, timeout=None)
    executor.submit("a", call(1.0, 1))
    executor.submit("b", call(2.0, 2))
    executor.cancel("a")
    assert executor.next_deadline() == 2.0  # the cancelled call's deadline is gone
    executor.submit("a", call(5.0, 9))  # the same request's next call
    clock.advance(3.0)
    assert [r.req_id for r in executor.poll()] == ["b"]
    clock.advance(2.0)
    assert [(r.req_id, r.token_ids) for r in executor.poll()] == [("a", (9,))]


def test_timeouts_failures_and_tools_share_one_deadline_view() -> None:
    clock = VirtualClock()
    executor = ApiExecutor(clock, timeout=4.0)
    release = threading.Event()
    executor.register_tool("wait", lambda: release.wait(10) and "done")
    executor.submit("long", call(10.0, 1))  # times out at 4 s
    executor.submit("broken", call(1.0, fails=True))
    executor.submit("tool", ApiCall("wait", arguments={}))
    executor.submit("unknown", ApiCall("nope"))
    assert [(r.req_id, r.error) for r in executor.poll()] == [("unknown", "unknown tool 'nope'")]
    assert executor.next_deadline() == 1.0
    clock.advance(1.0)
    assert [(r.req_id, r.error) for r in executor.poll()] == [("broken", "API call 'qa' failed")]
    release.set()
    results, give_up = [], time.monotonic() + 10
    while not results and time.monotonic() < give_up:
        results = executor.poll()
    assert [(r.req_id, r.text) for r in results] == [("tool", "done")]
    assert executor.next_deadline() == 4.0
    clock.advance(3.0)
    assert [(r.req_id, r.error) for r in executor.poll()] == [("long", "API call 'qa' timed out after 4.0 s")]
    executor.shutdown()


def test_a_hung_tool_gives_its_slot_back_when_it_times_out() -> None:
    clock = WallClock()
    executor = ApiExecutor(clock, timeout=0.2, max_workers=1)
    release = threading.Event()
    executor.register_tool("hang", lambda: release.wait(30) and "late")
    executor.register_tool("quick", lambda: "fast")

    def result_of(req_id: str, call: ApiCall):
        executor.submit(req_id, call)
        give_up = time.monotonic() + 10
        while time.monotonic() < give_up:
            results = executor.poll()
            if results:
                return results[0]
            time.sleep(0.01)
        raise AssertionError("no result")

    assert "timed out" in result_of("hung", ApiCall("hang", arguments={})).error
    assert executor.tool_runner.num_abandoned == 1  # its thread still runs, unobserved
    after = result_of("next", ApiCall("quick", arguments={}))  # the only slot is free again
    assert (after.error, after.text) == (None, "fast")
    release.set()
    executor.shutdown()


def test_calls_past_the_slot_limit_wait_in_order_and_cancels_release_slots() -> None:
    executor = ApiExecutor(VirtualClock(), timeout=None, max_workers=1)
    gate = threading.Event()
    executor.register_tool("gated", lambda tag: gate.wait(10) and tag)
    for tag in ("a", "b", "c"):
        executor.submit(tag, ApiCall("gated", arguments={"tag": tag}))
    executor.cancel("a")  # abandoned while running: b starts in its slot
    executor.cancel("c")  # cancelled while queued: never starts
    gate.set()
    results, give_up = [], time.monotonic() + 10
    while not results and time.monotonic() < give_up:
        results = executor.poll()
    assert [(r.req_id, r.text) for r in results] == [("b", "b")]
    assert executor.num_pending == 0
