"""One request on the engine, as a handler sees it: opened before the response starts, closed with the client.

``EngineStream.open`` submits the request and waits for its first delta, so that what the engine rejects (a prompt
it cannot serve, a full waiting queue, a stopped engine) becomes an HTTP error instead of a broken stream. Closing
the stream early aborts the request, which frees its pages: a streaming response closes it when the client
disconnects, and ``until_disconnected`` cancels a non-streaming handler whose client went away.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import aclosing
from typing import TypeVar

from fastapi import Request

from lamps_jax.api.tool_use import ToolUse
from lamps_jax.async_llm import AsyncLLM
from lamps_jax.output_processor import RequestDelta
from lamps_jax.request import RequestOutput, SamplingParams
from lamps_jax.server.errors import ApiError, engine_error, unavailable
from lamps_jax.server.metrics import ServerMetrics

T = TypeVar("T")


def _as_api_error(err: Exception) -> Exception:
    mapped = engine_error(err)
    return err if mapped is None else mapped


def _failure(output: RequestOutput) -> ApiError | None:
    """The error a request that ended without finishing its output gives its client, or None."""
    if output.finish_reason == "abort":
        return unavailable("the request was aborted: the server is shutting down", "request_aborted")
    if output.finish_reason == "error":
        return ApiError(500, f"the generation failed: {output.error}", "generation_failed", type="server_error")
    return None


class EngineStream:
    def __init__(self, deltas: AsyncIterator[RequestDelta], first: RequestDelta, metrics: ServerMetrics) -> None:
        self._deltas = deltas
        self._first = first
        self._metrics = metrics
        self._ended = False  # the final delta came, or the request was abandoned

    @classmethod
    async def open(
        cls,
        llm: AsyncLLM,
        prompt_token_ids: Sequence[int],
        params: SamplingParams,
        req_id: str,
        session_id: str | None,
        metrics: ServerMetrics,
        tool_use: ToolUse | None = None,
    ) -> EngineStream:
        """Submits the request; raises ``ApiError`` when the engine does not take it."""
        deltas = llm.generate(list(prompt_token_ids), params, req_id=req_id, session_id=session_id, tool_use=tool_use)
        try:
            first = await anext(deltas)
        except Exception as err:
            await deltas.aclose()
            raise _as_api_error(err) from err
        return cls(deltas, first, metrics)

    async def deltas(self) -> AsyncIterator[RequestDelta]:
        """The request's deltas, the last one with its output; raises ``ApiError`` if it ends without finishing
        (aborted, failed). Closing this iterator before its end aborts the request."""
        delta, last_tokens_at = self._first, None
        try:
            while True:
                if delta.token_ids:
                    now = time.monotonic()
                    if last_tokens_at is not None and not delta.result_spans:  # an API call is no token's latency
                        self._metrics.observe_tokens(now - last_tokens_at, len(delta.token_ids))
                    last_tokens_at = now
                if delta.finished:
                    self._ended = True
                    self._metrics.observe(delta.output)
                    failure = _failure(delta.output)
                    if failure is not None:
                        raise failure
                yield delta
                if delta.finished:
                    return
                try:
                    delta = await anext(self._deltas)
                except Exception as err:
                    raise _as_api_error(err) from err
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Aborts the request unless it has finished; closing twice is harmless."""
        if not self._ended:
            self._ended = True
            self._metrics.count_abandoned()
        await self._deltas.aclose()

    async def output(self) -> RequestOutput:
        """Waits for the request to finish."""
        async with aclosing(self.deltas()) as deltas:
            async for delta in deltas:
                if delta.finished:
                    return delta.output
        raise AssertionError("an engine stream ends with its output")


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Runs ``work``; if the client disconnects first, cancels it (its engine stream closes, which aborts the
    request) and raises a 499 that nobody reads."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if task not in done:
        await asyncio.wait({task})
        raise ApiError(499, "the client disconnected before the response was ready", "client_disconnected")
    return task.result()
