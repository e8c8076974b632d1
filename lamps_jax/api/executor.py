"""ApiExecutor: runs API calls against the engine's clock and reports the ones that finished.

Two kinds of call: simulated ones (a duration and the tokens they return, as in trace replay)
complete when the clock passes their end; registered Python tools (sync or async functions) run on
their own threads (``ToolRunner``), concurrently with decoding. A call that raises, is unknown, or
runs past the timeout (counted from its submission, queueing for a slot included) completes with an
error; a timed-out tool's thread is abandoned, never waited on, and gives its slot back, so neither
the engine nor later calls can hang on it. ``poll()`` is the only place results come back, on the
engine thread.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from lamps_jax.api.tool_runner import ToolRunner
from lamps_jax.clock import Clock
from lamps_jax.request import ApiCall


@dataclass(frozen=True)
class ApiResult:
    req_id: str
    call: ApiCall
    token_ids: tuple[int, ...] = ()  # a simulated call's answer, or a tool's when it returns token ids
    text: str | None = None  # a tool's answer, tokenized by the engine
    error: str | None = None
    status: str = "ok"  # ok | error (raised or failed) | timeout | unknown_tool


@dataclass
class _Pending:
    call: ApiCall
    deadline: float  # when it completes (simulated) or times out
    future: Future | None = None  # tools only


class ApiExecutor:
    def __init__(self, clock: Clock, timeout: float | None = 60.0, max_workers: int = 8) -> None:
        self.clock = clock
        self.timeout = timeout
        self.tools: dict[str, Callable] = {}
        self._pending: dict[str, _Pending] = {}
        self._simulated: list[tuple[float, str]] = []  # heap of (deadline, req_id); cancelled entries linger
        self._tools: dict[str, _Pending] = {}  # calls with a future (or an unknown tool)
        self.tool_runner = ToolRunner(max_concurrent=max_workers)

    def register_tool(self, name: str, fn: Callable) -> None:
        if not callable(fn):
            raise TypeError(f"tool {name!r} must be callable")
        self.tools[name] = fn

    @property
    def num_pending(self) -> int:
        return len(self._pending)

    def submit(self, req_id: str, call: ApiCall) -> None:
        now = self.clock.now()
        limit = float("inf") if self.timeout is None else self.timeout
        if call.is_simulated:
            pending = _Pending(call, now + min(call.duration, limit))
            heapq.heappush(self._simulated, (pending.deadline, req_id))
        else:
            future = None
            if call.name in self.tools:
                future = self.tool_runner.submit(self.tools[call.name], call.arguments)
            pending = self._tools[req_id] = _Pending(call, now + limit, future)
        self._pending[req_id] = pending

    def cancel(self, req_id: str) -> None:
        """Forgets a call (its request was aborted); a running tool finishes unobserved, without its slot."""
        pending = self._pending.pop(req_id, None)
        self._tools.pop(req_id, None)
        if pending is not None and pending.future is not None:
            self.tool_runner.release(pending.future)

    def _live_head(self) -> tuple[float, str] | None:
        """The simulated call due first, dropping heap entries of cancelled or re-submitted calls."""
        while self._simulated:
            deadline, req_id = self._simulated[0]
            pending = self._pending.get(req_id)
            if pending is not None and pending.call.is_simulated and pending.deadline == deadline:
                return deadline, req_id
            heapq.heappop(self._simulated)
        return None

    def next_deadline(self) -> float | None:
        """The earliest time a simulated call completes or any call times out."""
        head = self._live_head()
        return min([p.deadline for p in self._tools.values()] + ([head[0]] if head else []), default=None)

    def poll(self) -> list[ApiResult]:
        """Results of the calls done by now: simulated ones in deadline order, then tools."""
        now = self.clock.now()
        done = []
        while (head := self._live_head()) is not None and head[0] <= now:
            heapq.heappop(self._simulated)
            req_id = head[1]
            done.append(self._result(req_id, self._pending.pop(req_id), now))
        for req_id, pending in list(self._tools.items()):
            result = self._result(req_id, pending, now)
            if result is not None:
                del self._pending[req_id], self._tools[req_id]
                if pending.future is not None:
                    self.tool_runner.release(pending.future)
                done.append(result)
        return done

    def _result(self, req_id: str, pending: _Pending, now: float) -> ApiResult | None:
        call = pending.call
        if call.is_simulated:
            if now < pending.deadline:
                return None
            if call.duration > (self.timeout or float("inf")):
                return ApiResult(
                    req_id, call, error=f"API call {call.name!r} timed out after {self.timeout} s", status="timeout"
                )
            if call.fails:
                return ApiResult(req_id, call, error=f"API call {call.name!r} failed", status="error")
            return ApiResult(req_id, call, token_ids=call.result_token_ids)
        if pending.future is None:
            return ApiResult(req_id, call, error=f"unknown tool {call.name!r}", status="unknown_tool")
        if not pending.future.done():
            if now >= pending.deadline:
                return ApiResult(
                    req_id, call, error=f"tool {call.name!r} timed out after {self.timeout} s", status="timeout"
                )
            return None
        try:
            value = pending.future.result()
        except Exception as err:  # a tool's own failure becomes the call's error result
            error = f"tool {call.name!r} raised {type(err).__name__}: {err}"
            return ApiResult(req_id, call, error=error, status="error")
        if isinstance(value, list | tuple) and all(isinstance(t, int) for t in value):
            return ApiResult(req_id, call, token_ids=tuple(value))
        return ApiResult(req_id, call, text=str(value))

    def shutdown(self) -> None:
        self.tool_runner.shutdown()
