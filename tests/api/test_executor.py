"""ApiExecutor on a virtual clock: simulated calls come back in deadline order, cancels and timeouts hold."""

from __future__ import annotations

import threading
import time

from lamps_jax.api.executor import ApiExecutor
from lamps_jax.clock import VirtualClock
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
