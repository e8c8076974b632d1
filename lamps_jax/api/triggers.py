"""Interception triggers: what turns a running request into a paused one with an API call.

- ``scripted_trigger``: the request's segments say after how many decoded tokens the call happens
  (trace replay).
- ``ToolCallTrigger``: the text generated since the last API result contains a complete
  ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` (tags configurable), found incrementally:
  a close tag is looked for only in the new text (and the few characters before it).
- External pauses (a caller pausing and resuming a request) go through ``LLMEngine.pause_request``.

A trigger is called once per sampled token: ``trigger(request, text, new_text) -> ApiCall | None``,
where ``text`` is the request's ``OutputText`` and ``new_text`` what the token added to it.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from lamps_jax.detokenizer import OutputText
from lamps_jax.request import ApiCall, Request

Trigger = Callable[[Request, OutputText, str], "ApiCall | None"]


def scripted_trigger(request: Request, text: OutputText, new_text: str) -> ApiCall | None:
    return request.scripted_call()


class ToolCallTrigger:
    def __init__(self, open_tag: str = "<tool_call>", close_tag: str = "</tool_call>") -> None:
        if not open_tag or not close_tag:
            raise ValueError("tool-call tags must be non-empty")
        self.open_tag, self.close_tag = open_tag, close_tag

    def __call__(self, request: Request, text: OutputText, new_text: str) -> ApiCall | None:
        if not new_text:
            return None
        output = text.text
        tail = max(text.generated_start, len(output) - len(new_text) - len(self.close_tag) + 1)
        end = output.find(self.close_tag, tail)
        start = output.rfind(self.open_tag, text.generated_start, end) if end >= 0 else -1
        if start < 0:
            return None
        return parse_tool_call(output[start + len(self.open_tag) : end])


def parse_tool_call(body: str) -> ApiCall:
    """``{"name": ..., "arguments": {...}}`` -> ApiCall; malformed bodies name no tool (an error result)."""
    try:
        spec = json.loads(body)
        name, arguments = spec["name"], spec.get("arguments", {})
    except (json.JSONDecodeError, KeyError, TypeError):
        return ApiCall(name="<malformed tool call>", arguments=body.strip())
    return ApiCall(name=str(name), arguments=arguments if isinstance(arguments, dict | str) else str(arguments))
