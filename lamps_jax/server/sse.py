"""Server-sent events as OpenAI streams them: ``data: <json>`` events, an error event, then ``data: [DONE]``.

``EventStreamResponse`` closes its events and calls ``on_close`` when the response ends for any reason, a client
that disconnects included, so that the request behind it is aborted at once rather than when its iterator is
collected.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from lamps_jax.server.errors import ApiError

DONE = "data: [DONE]\n\n"


def event(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def with_error_event(events: AsyncIterator[str]) -> AsyncIterator[str]:
    """The events, then ``[DONE]``; an ``ApiError`` raised midway (the headers are sent) becomes an error event."""
    try:
        async for text in events:
            yield text
    except ApiError as err:
        yield event(err.body())
    yield DONE


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[str], on_close: Callable[[], Awaitable[None]]) -> None:
        super().__init__(with_error_event(events), headers={"Cache-Control": "no-cache"})
        self._events = events
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()
            await self._events.aclose()
            await self._on_close()
