"""The server the app tests run against: the tiny model's real engine behind a scriptable ``AsyncLLM``.

A test can script what the next requests write (``ScriptedAsyncLLM.script``): a tool call the random tiny model
would never write, or a long simulated API call that keeps a request in flight while its client goes away. The
fixtures that start it (one uvicorn server on a free 127.0.0.1 port per test module) are in ``conftest.py``.
"""

from __future__ import annotations

import dataclasses
import re
import time

import httpx

from lamps_jax.async_llm import AsyncLLM
from lamps_jax.engine import LLMEngine
from lamps_jax.request import ApiCall, Segment
from lamps_jax.server.server_tools import BUILTIN_TOOLS, ServerTool
from tests.server.harness import wait_for

MODEL = "tiny"
MAX_MODEL_LEN = 512
GREEDY = {"temperature": 0.0, "extra_body": {"ignore_eos": True}}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
TOOL_CALL_TEXT = 'Let me look.<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'


def long_call(tokenizer) -> tuple[Segment, ...]:
    """A script that writes "ok", then waits for a minute-long API call."""
    tokens = tuple(tokenizer.encode("ok", add_special_tokens=False))
    return Segment(len(tokens), ApiCall("slow", duration=60.0), token_ids=tokens), Segment(1)


class ScriptedAsyncLLM(AsyncLLM):
    """The real engine loop; while ``script`` is set, requests follow it instead of sampling: a text (its tokens
    are prescribed) or segments (``Segment``: prescribed lengths and simulated API calls)."""

    script: str | tuple[Segment, ...] | None = None

    def generate(self, prompt, sampling_params=None, req_id=None, segments=(), session_id=None, tool_use=None):
        if isinstance(self.script, str):
            tokens = tuple(self.engine.tokenizer.encode(self.script, add_special_tokens=False))
            segments = (Segment(len(tokens), token_ids=tokens),)
        elif self.script is not None:
            segments = self.script
        return super().generate(prompt, sampling_params, req_id, segments, session_id, tool_use)


@dataclasses.dataclass
class Served:
    url: str
    llm: ScriptedAsyncLLM

    @property
    def engine(self) -> LLMEngine:
        return self.llm.engine

    def metric(self, name: str, labels: str = "") -> float:
        """A sample's value on /metrics (0 when absent), e.g. ``metric("lamps_jax_computed_tokens_total",
        'position="prompt"')``."""
        text = httpx.get(f"{self.url}/metrics").text
        pattern = rf"^{re.escape(name)}{re.escape('{' + labels + '}') if labels else ''} (\S+)$"
        match = re.search(pattern, text, flags=re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    def wait_until_idle(self) -> None:
        """Until no request is in the engine (not waiting, running, paused); parked sessions may stay."""
        wait_for(lambda: not self.engine.scheduler.requests and not self.llm.num_waiting)

    def pages_outside_sessions(self) -> int:
        """Device pages in use that no parked session holds (read while the engine is idle)."""
        pool = self.engine.page_pool
        parked = sum(len(p.page_ids) for p in self.engine.scheduler.parked.values())
        return pool.num_usable - pool.num_free - parked


API_TIMEOUT = 5.0  # seconds before a tool call (or a simulated API call) counts as timed out


def failing_tool(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(reason)


def hanging_tool() -> str:
    """Never answers in time."""
    time.sleep(10 * API_TIMEOUT)
    return "too late"


SERVER_TOOLS = BUILTIN_TOOLS | {fn.__name__: ServerTool.from_function(fn) for fn in (failing_tool, hanging_tool)}


def chat_body(**fields) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "x"}]} | fields


def tool_with_parameters(parameters: dict) -> dict:
    return {"type": "function", "function": {"name": "f", "parameters": parameters}}


def weather_call(call_id: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
