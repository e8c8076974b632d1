"""Interception triggers: what turns a running request into a paused one with an API call.

- ``scripted_trigger``: the request's segments say after how many decoded tokens the call happens
  (trace replay).
- ``ToolCallTrigger``: the text generated since the last API result contains a complete
  ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` (tags configurable).
- External pauses (a caller pausing and resuming a request) go through ``LLMEngine.pause_request``.

A trigger is called once per sampled token: ``trigger(request, decode) -> ApiCall | None``, where
``decode(token_ids) -> str`` is the engine's detokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from lamps_jax.request import ApiCall, Request

Decode = Callable[[list[int]], str]
Trigger = Callable[[Request, Decode], "ApiCall | None"]


def scripted_trigger(request: Request, decode: Decode) -> ApiCall | None:
    return request.scripted_call()


class ToolCallTrigger:
    def __init__(self, open_tag: str = "<tool_call>", close_tag: str = "</tool_call>") -> None:
        if not open_tag or not close_tag:
            raise ValueError("tool-call tags must be non-empty")
        self.open_tag, self.close_tag = open_tag, close_tag

    def __call__(self, request: Request, decode: Decode) -> ApiCall | None:
        if self.close_tag[-1] not in decode(request.output_token_ids[-1:]):
            return None  # cheap pre-check: the last token cannot have closed a tag
        text = decode(request.output_token_ids[request.result_end :])
        end = text.find(self.close_tag)
        start = text.rfind(self.open_tag, 0, end)
        if end < 0 or start < 0:
            return None
        return parse_tool_call(text[start + len(self.open_tag) : end])


def parse_tool_call(body: str) -> ApiCall:
    """``{"name": ..., "arguments": {...}}`` -> ApiCall; malformed bodies name no tool (an error result)."""
    try:
        spec = json.loads(body)
        name, arguments = spec["name"], spec.get("arguments", {})
    except (json.JSONDecodeError, KeyError, TypeError):
        return ApiCall(name="<malformed tool call>", arguments=body.strip())
    return ApiCall(name=str(name), arguments=arguments if isinstance(arguments, dict | str) else str(arguments))
