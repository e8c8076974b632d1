"""The OpenAI request bodies the server accepts, as pydantic models, and their sampling parameters.

Only what the engine does is declared; any other field is rejected (``extra="forbid"``) rather than silently
ignored, so a client asking for logprobs or penalties hears that it gets none. Fields beyond OpenAI's, as
vLLM has them: ``top_k``, ``ignore_eos`` and, on completions, ``return_token_ids``; and ``session_id``
(``extra_body={"session_id": ...}`` in the official client), which makes the request a turn of that conversation
so that the next turn reuses its KV; on chat, ``server_tools`` (which of the server's own tools the model may call).
Chat messages keep unknown fields: chat templates may read them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lamps_jax.request import SamplingParams

OPENAI_DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default max_tokens of /v1/completions
MAX_TOP_K = 2**31 - 1  # the runner's sampling inputs: top_k is an int32 ...
MAX_SEED = 2**32 - 1  # ... and a seed a uint32


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class StreamOptions(_Strict):
    include_usage: bool = False


class GenerationRequest(_Strict):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, le=MAX_TOP_K)  # 0 = no limit
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False
    session_id: str | None = Field(None, min_length=1)

    @property
    def requested_max_tokens(self) -> tuple[str, int | None]:
        """The field that limits the output and its value (None: not given)."""
        return "max_tokens", self.max_tokens

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def sampling_params(self, max_tokens: int) -> SamplingParams:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            seed=self.seed,
            stop=stop,
            ignore_eos=self.ignore_eos,
        )


class CompletionRequest(GenerationRequest):
    prompt: str | list[int]
    return_token_ids: bool = False  # vLLM's extension: the prompt's and the output's token ids in the choice


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class FunctionCall(_Strict):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCallParam(_Strict):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallParam] | None = None
    tool_call_id: str | None = None


class FunctionDefinition(_Strict):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict | None = None
    strict: bool | None = None


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedFunction


class ChatCompletionRequest(GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice = "auto"
    server_tools: list[str] | None = None  # which of the server's own tools to offer (None: all of them)

    @property
    def requested_max_tokens(self) -> tuple[str, int | None]:
        if self.max_completion_tokens is not None:
            return "max_completion_tokens", self.max_completion_tokens
        return "max_tokens", self.max_tokens

    @property
    def tool_names(self) -> list[str]:
        return [tool.function.name for tool in self.tools or ()]
