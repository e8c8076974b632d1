"""Loads the INFERCEPT augmented-LLM traces (a JSON object: request id -> segments) into ``WorkloadRequest``s.

Both record styles of the trace README are read. Numeric records carry token counts; text records carry
raw text, counted as ``len(tokenizer.encode(text))`` when a tokenizer is given (pass one that adds no
special tokens for exact counts), else as ``ceil(len(text) / chars_per_token)``. Only segment 0's prompt
is used: later prompts repeat the context. Each call gets an API type (see ``classify_numeric_request``
and ``classify_text_call``). A segment decodes at least one token (an empty completion counts as one); a
negative ``api_token_length`` reads as 0. Malformed input raises ``TraceError`` naming the file, request,
segment and field.

A trace's final call (its last segment has one) follows the reference benchmark driver by default, WukLab/InferCept
``benchmarks/final_tput_bench_real.py`` (``get_new_sampling_params``, lines 67-124, with ``max_tokens`` at line 114
and the empty segment after the last at lines 86-87; the output total at lines 218-246): the last segment gets
``api_max_calls=1``, so the call **is made**; its return is cut by about one token to fit ``max_tokens = min(2048,
sum of completion_tokens + api_token_length)`` (the stop tokens count as output), then one token is decoded and
the request ends. ``final_call="made"`` keeps that call and adds a one-token segment after it
(``TRAILING_DECODE_TOKENS``) with the return kept whole: the same number of output tokens. ``final_call="dropped"``
is the other reading of the trace: the call is not made and the request ends after its last completion tokens.

``max_model_len`` (None: no cap) cuts a request as that driver does with GPT-J's 2048-token context: the prompt
plus the decoded plus the returned tokens never exceed ``max_model_len``, and the output (decoded plus returned)
never exceeds ``min(REFERENCE_MAX_TOKENS, the request's uncut output)``. Segments are walked in order. A call is
kept only if its segment decodes all its tokens and still leaves room for one more token (the decode after the
call); its returned tokens are cut to the room left, less that token. A segment without that room is cut to what
fits, loses its call and ends the request. A prompt of ``max_model_len`` tokens or more raises ``TraceError``.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from lamps_jax.workload.spec import DEFAULT_FILLER_TOKEN_ID, CallSpec, WorkloadRequest, build_request

TRACES_ENV = "LAMPS_JAX_TRACES"  # a folder that replaces the default traces folder
TRACE_FILES = {"multi": "infercept_multi_api.json", "one": "infercept_one_api.json"}

# Numeric records: a request uses one tool; its longest call tells which. This reproduces the call counts of the
# trace README's table exactly (math 276, QA 151, virtual env 289); by prompt size instead (~400 / ~930 / 1973
# tokens) one QA-sized request whose only call took 0 s would move from math to QA (275 / 152 / 289).
MATH_MAX_SECONDS = 0.01  # calculator calls take at most 0.6 ms
VIRTUAL_ENV_MAX_SECONDS = 0.2  # ALFWorld steps take 52-111 ms; Wikipedia lookups 0.28-1.03 s (or 0)
# Text records: the API text says which call it is; any other text is the human's chat reply.
TTS_TEXT = "Convert this to text to speech."
IMAGE_TEXT = "Generate an image about this."
TRAILING_DECODE_TOKENS = 1  # decoded after a request's last call when the trace ends on a call
FINAL_CALLS = ("made", "dropped")  # what ``load_trace`` does with a trace's final call
REFERENCE_MAX_TOKENS = 2048  # the reference driver's output cap: max_tokens = min(2048, output)


class TraceError(ValueError):
    """A trace file or record that does not follow the trace format."""


class Tokenizer(Protocol):
    def encode(self, text: str) -> Sequence[int]: ...


def traces_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The traces folder: ``$LAMPS_JAX_TRACES`` if set, else ``shared/data/traces`` beside the repository."""
    if environ.get(TRACES_ENV):
        return Path(environ[TRACES_ENV])
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "traces"


DEFAULT_TRACES: dict[str, Path] = {name: traces_dir() / filename for name, filename in TRACE_FILES.items()}


def load_trace(
    path: str | os.PathLike[str],
    tokenizer: Tokenizer | None = None,
    chars_per_token: float = 4.0,
    filler_token_id: int = DEFAULT_FILLER_TOKEN_ID,
    *,
    final_call: str = "made",
    max_model_len: int | None = None,
) -> list[WorkloadRequest]:
    """The trace's requests in file order, all arriving at time 0.

    ``final_call``: "made" (the reference driver's reading) makes a trace's final call and decodes one token
    after it; "dropped" ends the request after its last completion tokens. ``max_model_len``: None keeps every
    token; a value cuts each request to fit it, as the module docstring says.
    """
    if final_call not in FINAL_CALLS:
        raise ValueError(f"final_call must be one of {', '.join(map(repr, FINAL_CALLS))}, got {final_call!r}")
    if max_model_len is not None and (isinstance(max_model_len, bool) or not isinstance(max_model_len, int)):
        raise ValueError(f"max_model_len must be an integer or None, got {max_model_len!r}")
    if max_model_len is not None and max_model_len < 2:
        raise ValueError(f"max_model_len must be >= 2 (a prompt token and a decoded one), got {max_model_len}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trace file {path} not found (set {TRACES_ENV} to the folder holding the traces)")
    count_tokens = _token_counter(tokenizer, chars_per_token)
    try:
        records = _read_records(path)
        return [
            _parse_request(rid, raw, count_tokens, filler_token_id, final_call, max_model_len)
            for rid, raw in records.items()
        ]
    except TraceError as err:
        raise TraceError(f"{path}: {err}") from None


def classify_numeric_request(call_seconds: Sequence[float]) -> str:
    """math, virtual_env or qa, by the request's longest call."""
    longest = max(call_seconds)
    if longest < MATH_MAX_SECONDS:
        return "math"
    return "virtual_env" if longest < VIRTUAL_ENV_MAX_SECONDS else "qa"


def classify_text_call(api_text: str) -> str:
    """tts, image or chat, by the call's text."""
    text = api_text.lstrip()
    if text.startswith(TTS_TEXT):
        return "tts"
    return "image" if text.startswith(IMAGE_TEXT) else "chat"


def _token_counter(tokenizer: Tokenizer | None, chars_per_token: float) -> Callable[[str], int]:
    if tokenizer is not None:
        return lambda text: len(tokenizer.encode(text))
    if not chars_per_token > 0:
        raise ValueError(f"chars_per_token must be > 0, got {chars_per_token}")
    return lambda text: math.ceil(len(text) / chars_per_token)


def _read_records(path: Path) -> dict[str, Any]:
    try:
        records = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_reject_duplicates)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TraceError(f"not valid JSON ({err})") from None
    if not isinstance(records, dict):
        raise TraceError(f"expected a JSON object of request id -> segments, got {type(records).__name__}")
    if not records:
        raise TraceError("the trace holds no requests")
    return records


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) < len(pairs):
        duplicate = next(key for key, count in Counter(key for key, _ in pairs).items() if count > 1)
        raise TraceError(f"duplicate key {duplicate!r}")
    return record


def _parse_request(
    request_id: str,
    raw: Any,
    count_tokens: Callable[[str], int],
    filler_token_id: int,
    final_call: str = "made",
    max_model_len: int | None = None,
) -> WorkloadRequest:
    if not request_id:
        raise TraceError("a request has an empty id")
    if not isinstance(raw, list) or not raw:
        raise TraceError(f"request {request_id!r}: expected a non-empty list of segments")
    for index, segment in enumerate(raw):
        if not isinstance(segment, dict):
            raise TraceError(
                f"request {request_id!r}, segment {index}: expected an object, got {type(segment).__name__}"
            )
    if "prompt_tokens" in raw[0] or "completion_tokens" in raw[0]:
        prompt_tokens, decode_tokens, calls = _parse_numeric(request_id, raw)
    elif "prompt" in raw[0] or "completion" in raw[0]:
        prompt_tokens, decode_tokens, calls = _parse_text(request_id, raw, count_tokens)
    else:
        raise TraceError(f"request {request_id!r}, segment 0: neither numeric nor text fields")
    if len(decode_tokens) == len(calls):  # the trace ends on a call
        if final_call == "made":
            decode_tokens.append(TRAILING_DECODE_TOKENS)
        else:
            calls.pop()
    prompt_tokens = max(1, prompt_tokens)
    if max_model_len is not None:
        decode_tokens, calls = _cap(request_id, prompt_tokens, decode_tokens, calls, max_model_len)
    return build_request(request_id, prompt_tokens, decode_tokens, calls, filler_token_id)


def _cap(
    request_id: str, prompt_tokens: int, decode_tokens: list[int], calls: list[CallSpec], max_model_len: int
) -> tuple[list[int], list[CallSpec]]:
    """The segments cut to fit ``max_model_len`` tokens in all and ``REFERENCE_MAX_TOKENS`` of output.

    ``room`` is what the request may still add. A call is kept only when its segment's tokens leave room for one
    token after it (the request's last decode); its returned tokens are cut to the room left, less that token.
    """
    if prompt_tokens >= max_model_len:
        raise TraceError(
            f"request {request_id!r}: a prompt of {prompt_tokens} tokens leaves no room to decode within "
            f"max_model_len {max_model_len}"
        )
    output_tokens = sum(decode_tokens) + sum(call.num_result_tokens for call in calls)
    room = min(max_model_len - prompt_tokens, REFERENCE_MAX_TOKENS, output_tokens)
    kept_decode: list[int] = []
    kept_calls: list[CallSpec] = []
    for index, tokens in enumerate(decode_tokens):
        if index == len(calls) or tokens >= room:  # the last segment, or one cut short: it ends the request
            kept_decode.append(min(tokens, room))
            break
        returned = min(calls[index].num_result_tokens, room - tokens - 1)
        kept_decode.append(tokens)
        kept_calls.append(replace(calls[index], num_result_tokens=returned))
        room -= tokens + returned
    return kept_decode, kept_calls


def _parse_numeric(request_id: str, raw: list[dict[str, Any]]) -> tuple[int, list[int], list[CallSpec]]:
    prompt_tokens = _count(f"request {request_id!r}, segment 0", raw[0], "prompt_tokens")
    decode_tokens, seconds, num_results = [], [], []
    for index, segment in enumerate(raw):
        where = f"request {request_id!r}, segment {index}"
        _count(where, segment, "prompt_tokens")  # later prompts repeat the context: checked, unused
        decode_tokens.append(max(1, _count(where, segment, "completion_tokens")))
        if "api_time" in segment or "api_token_length" in segment:
            seconds.append(_seconds(where, segment))
            num_results.append(_returned_tokens(where, segment))
    if not seconds:
        return prompt_tokens, decode_tokens, []
    api_type = classify_numeric_request(seconds)
    return prompt_tokens, decode_tokens, [CallSpec(api_type, s, n) for s, n in zip(seconds, num_results)]


def _parse_text(
    request_id: str, raw: list[dict[str, Any]], count_tokens: Callable[[str], int]
) -> tuple[int, list[int], list[CallSpec]]:
    prompt_tokens = count_tokens(_text(f"request {request_id!r}, segment 0", raw[0], "prompt"))
    decode_tokens, calls = [], []
    for index, segment in enumerate(raw):
        where = f"request {request_id!r}, segment {index}"
        _text(where, segment, "prompt")  # later prompts repeat the context: checked, unused
        decode_tokens.append(max(1, count_tokens(_text(where, segment, "completion"))))
        if "api_time" in segment or "api_token" in segment:
            api_text = _text(where, segment, "api_token")
            calls.append(CallSpec(classify_text_call(api_text), _seconds(where, segment), count_tokens(api_text)))
    return prompt_tokens, decode_tokens, calls


def _field(where: str, segment: dict[str, Any], name: str) -> Any:
    if name not in segment:
        raise TraceError(f"{where}: missing field {name!r}")
    return segment[name]


def _int(where: str, segment: dict[str, Any], name: str) -> int:
    value = _field(where, segment, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TraceError(f"{where}: field {name!r} must be an integer, got {value!r}")
    return value


def _count(where: str, segment: dict[str, Any], name: str) -> int:
    value = _int(where, segment, name)
    if value < 0:
        raise TraceError(f"{where}: field {name!r} is negative ({value})")
    return value


def _returned_tokens(where: str, segment: dict[str, Any]) -> int:
    """``api_token_length``, where a negative count reads as 0: four ALFWorld calls of the multi trace
    say -2, at the 2047-token context where the upstream run hit its 2048-token limit."""
    return max(0, _int(where, segment, "api_token_length"))


def _seconds(where: str, segment: dict[str, Any]) -> float:
    value = _field(where, segment, "api_time")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TraceError(f"{where}: field 'api_time' must be a finite number, got {value!r}")
    if value < 0:
        raise TraceError(f"{where}: field 'api_time' is negative ({value})")
    return float(value)


def _text(where: str, segment: dict[str, Any], name: str) -> str:
    value = _field(where, segment, name)
    if not isinstance(value, str):
        raise TraceError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
    return value
