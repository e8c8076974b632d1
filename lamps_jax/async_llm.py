"""AsyncLLM: an asyncio front over one background engine loop, the only thread that touches the engine.

Callers on any thread and any event loop call ``generate`` (an async stream of ``RequestDelta``s that
ends with the request's ``RequestOutput``) and ``abort``. Their commands go through a thread-safe inbox
that the loop drains at the start of every step; deltas come back to each caller's own event loop.
A stream closed early (a client that disconnects, a cancelled task) aborts its request.

Back-pressure: at most ``max_waiting`` requests may wait for admission (queued in the inbox or in the
scheduler's waiting queue); past it, ``generate`` raises ``EngineOverloadedError`` at once instead of
queueing without bound. ``shutdown`` aborts what is in flight, ends every stream and stops the loop,
leaving every page pool empty.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from lamps_jax.api.tool_use import ToolUse
from lamps_jax.engine import IDLE_WAIT_SECONDS, LLMEngine
from lamps_jax.output_processor import RequestDelta
from lamps_jax.request import SamplingParams, Segment

IDLE_POLL_SECONDS = 0.1  # how long an empty loop sleeps on its inbox before checking for shutdown


class EngineOverloadedError(RuntimeError):
    """Too many requests are waiting; the caller should retry later (HTTP 503 in a server)."""


class EngineDeadError(RuntimeError):
    """The engine loop stopped (shut down, or failed): no request can be served any more."""


@dataclass
class _Stream:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue  # RequestDelta items, or an exception that ends the stream

    def put(self, item: RequestDelta | BaseException) -> None:
        if not self.loop.is_closed():  # a closed loop: its caller is gone, nobody listens
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class AsyncLLM:
    def __init__(self, engine: LLMEngine, max_waiting: int = 1024) -> None:
        if max_waiting < 1:
            raise ValueError(f"max_waiting must be >= 1, got {max_waiting}")
        self.engine = engine
        self.max_waiting = max_waiting
        self._inbox: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()  # guards _streams and the admission count
        self._num_queued = 0  # added to the inbox, not yet handed to the engine
        self._ids = itertools.count()
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="lamps-jax-engine", daemon=True)
        self._thread.start()

    # ---- callers' side (any thread) ------------------------------------------------------------
    async def generate(
        self,
        prompt: str | Sequence[int],
        sampling_params: SamplingParams | None = None,
        req_id: str | None = None,
        segments: Sequence[Segment] = (),
        session_id: str | None = None,
        tool_use: ToolUse | None = None,
    ) -> AsyncIterator[RequestDelta]:
        """Streams the request's deltas; the last one carries its ``RequestOutput`` (``delta.output``).
        ``session_id``: a turn of that conversation; ``tool_use``: its own tool calling (``LLMEngine.add_request``)."""
        req_id = req_id if req_id is not None else f"async-{next(self._ids)}"
        stream = _Stream(asyncio.get_running_loop(), asyncio.Queue())
        self._admit(req_id, stream)
        self._inbox.put(lambda: self._add(req_id, prompt, sampling_params, segments, session_id, tool_use))
        finished = False
        try:
            while not finished:
                item = await stream.queue.get()
                if isinstance(item, BaseException):
                    raise item
                finished = item.finished
                yield item
        finally:
            if not finished:  # the caller stopped listening: nobody wants the rest
                self.abort(req_id)

    def abort(self, req_id: str) -> None:
        """Ends the request wherever it is; its stream gets a last delta with finish_reason "abort"."""
        self._inbox.put(lambda: self._abort(req_id))

    def shutdown(self, timeout: float = 30.0) -> None:
        """Aborts every request in flight, ends every stream and stops the loop."""
        self._stopping.set()
        self._inbox.put(lambda: None)  # wakes an idle loop
        self._thread.join(timeout)

    @property
    def num_waiting(self) -> int:
        return self._num_queued + len(self.engine.scheduler.waiting)

    def _admit(self, req_id: str, stream: _Stream) -> None:
        with self._lock:
            if self._stopping.is_set() or self._error is not None:
                raise EngineDeadError("the engine loop has stopped") from self._error
            if self.num_waiting >= self.max_waiting:
                raise EngineOverloadedError(
                    f"overloaded: the waiting queue is full ({self.num_waiting} of {self.max_waiting}); retry later"
                )
            if req_id in self._streams:
                raise ValueError(f"request id {req_id!r} is already in use")
            self._streams[req_id] = stream
            self._num_queued += 1

    # ---- the engine loop (its own thread) ------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._drain_inbox()
                self._publish(self.engine.step_deltas())
        except BaseException as err:  # the loop is dead: every caller must hear it
            self._error = err
        finally:
            self._close()

    def _drain_inbox(self, wait: bool = True) -> None:
        """Runs every queued command; first waits for one while the engine has nothing it can run."""
        timeout = None
        if wait and not self.engine.has_unfinished_requests():
            timeout = IDLE_POLL_SECONDS
        elif wait and self.engine.is_idle:  # only API calls in flight: poll them often
            timeout = IDLE_WAIT_SECONDS
        try:
            command = self._inbox.get_nowait() if timeout is None else self._inbox.get(timeout=timeout)
            while True:
                command()
                command = self._inbox.get_nowait()
        except queue.Empty:
            return

    def _add(
        self,
        req_id: str,
        prompt,
        params: SamplingParams | None,
        segments: Sequence[Segment],
        session_id: str | None,
        tool_use: ToolUse | None,
    ) -> None:
        with self._lock:
            self._num_queued -= 1
        try:
            self.engine.add_request(
                prompt, params, req_id=req_id, segments=segments, session_id=session_id, tool_use=tool_use
            )
        except Exception as err:  # a bad request fails alone, on its own stream
            self._end_stream(req_id, err)

    def _abort(self, req_id: str) -> None:
        output = self.engine.abort_request(req_id)
        if output is not None:
            self._publish([RequestDelta(req_id, [], "", output)])

    def _publish(self, deltas: list[RequestDelta]) -> None:
        for delta in deltas:
            if delta.finished:
                self._end_stream(delta.req_id, delta)
            elif (stream := self._streams.get(delta.req_id)) is not None:
                stream.put(delta)

    def _end_stream(self, req_id: str, last: RequestDelta | BaseException) -> None:
        with self._lock:
            stream = self._streams.pop(req_id, None)
        if stream is not None:
            stream.put(last)

    def _close(self) -> None:
        """Aborts what the engine still holds, releases parked sessions and ends every stream (also the ones
        never added)."""
        try:
            self._drain_inbox(wait=False)
            for req_id in list(self.engine.scheduler.requests):
                self._abort(req_id)
            for session_id in list(self.engine.scheduler.parked):
                self.engine.release_session(session_id)
        finally:
            with self._lock:
                streams, self._streams = self._streams, {}
            for stream in streams.values():
                stream.put(EngineDeadError("the engine loop has stopped"))
            self.engine.close()
