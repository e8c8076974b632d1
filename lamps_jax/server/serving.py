"""What every endpoint shares: the engine, the served model's name, the metrics, the tool-call parser, the server's
own tools, and the checks a request passes before it reaches the engine (model name, n, context length), each a 4xx
of its own."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from lamps_jax.api.tool_use import ToolUse
from lamps_jax.async_llm import AsyncLLM
from lamps_jax.request import RequestOutput
from lamps_jax.server.engine_stream import EngineStream
from lamps_jax.server.errors import ApiError, bad_request
from lamps_jax.server.metrics import ServerMetrics
from lamps_jax.server.protocol import GenerationRequest
from lamps_jax.server.server_tools import ServerTool
from lamps_jax.server.tool_parsers import ToolCallParser


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    """OpenAI's ``created``: Unix seconds."""
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


@dataclass(frozen=True)
class ServingContext:
    llm: AsyncLLM
    model_name: str
    metrics: ServerMetrics
    tool_parser: ToolCallParser | None = None
    server_tools: dict[str, ServerTool] = field(default_factory=dict)

    @property
    def tokenizer(self):
        return self.llm.engine.tokenizer

    @property
    def max_model_len(self) -> int:
        return self.llm.engine.max_model_len

    def check(self, request: GenerationRequest) -> None:
        """What can be refused before the prompt is read: another model's name, several choices."""
        if request.model != self.model_name:
            raise ApiError(
                404,
                f"the model {request.model!r} does not exist: this server serves {self.model_name!r}",
                "model_not_found",
                "model",
            )
        if request.n != 1:
            raise bad_request(f"n={request.n} is not supported: one choice per request (n=1)", "unsupported_value", "n")

    def tokenize(self, text: str, param: str) -> list[int]:
        if self.tokenizer is None:
            raise bad_request("this model has no tokenizer: send the prompt as token ids", "no_tokenizer", param)
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def max_tokens(self, request: GenerationRequest, prompt_tokens: int, prompt_param: str, default: int) -> int:
        """The output limit, checked against the context; ``default`` when the request gives none, at most what
        the context leaves."""
        room = self.max_model_len - prompt_tokens
        if room < 1:
            raise bad_request(
                f"the prompt has {prompt_tokens} tokens; this model's context is {self.max_model_len} tokens and "
                "must leave room for at least one generated token",
                "context_length_exceeded",
                prompt_param,
            )
        param, max_tokens = request.requested_max_tokens
        if max_tokens is None:
            return min(default, room)
        if max_tokens > room:
            raise bad_request(
                f"{param}={max_tokens} does not fit: this model's context is {self.max_model_len} tokens and the "
                f"prompt has {prompt_tokens}, which leaves at most {room}",
                "context_length_exceeded",
                param,
            )
        return max_tokens

    async def open(
        self,
        req_id: str,
        prompt_token_ids: Sequence[int],
        request: GenerationRequest,
        max_tokens: int,
        tool_use: ToolUse | None = None,
    ) -> EngineStream:
        try:
            params = request.sampling_params(max_tokens)
        except ValueError as err:
            raise bad_request(str(err), "invalid_value") from err
        return await EngineStream.open(
            self.llm, prompt_token_ids, params, req_id, request.session_id, self.metrics, tool_use
        )

    async def generate(
        self,
        req_id: str,
        prompt_token_ids: Sequence[int],
        request: GenerationRequest,
        max_tokens: int,
        tool_use: ToolUse | None = None,
    ) -> RequestOutput:
        """The whole output (a cancelled call aborts the request)."""
        stream = await self.open(req_id, prompt_token_ids, request, max_tokens, tool_use)
        return await stream.output()
