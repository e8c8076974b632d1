"""Coding-agent sessions (TraceLab, ``shared/data/agent_sessions``) as workload requests: one request per session.

A session is a chain of rounds (LLM invocations). Its request's prompt is the first round's input; round i is
a segment that decodes the round's output tokens, then makes a call: a tool call named after the tool kind
("shell", "edit", "read", "plan", "agent", "web", "other") lasting the tool latency, or, before a round that
starts from a user message, a "human" call lasting the human's wait. The call returns the next round's fresh
tokens: its context growth less the output already in the context (not its raw append, whose mean of 6.5k
tokens re-sends outputs and re-prefills contexts after cache misses: 3.8 times the growth). The last round
makes no call.

``generate`` samples sessions from ``tracelab_spec.json``: each quantity is drawn by the spec's convention
(piecewise-linear in log value between quantile points, the end segments' slopes outside, clipped to a stated
min/max). User- and tool-initiated rounds per session share one draw (the spec's own comonotone reading); the
first round starts from a user message and the other user turns fall on uniformly chosen rounds. A round's
output and its context growth share one draw too (the growth holds the output), and a round makes one call, of
a kind drawn by the kinds' call counts. Every round grows by the tool-result growth quantiles (the user-round
ones go below 0, which a log scale cannot take), and the first input is ``FIRST_INPUT_TOKENS`` (the spec
states none). ``load_examples`` reads real rounds in ``example_sessions.jsonl``'s schema the same way.

Token counts are multiplied by ``token_scale`` (default ``DEFAULT_TOKEN_SCALE``, 1/32: frontier contexts of
100k+ tokens shrink to a few thousand); durations by ``time_scale`` (default 1). Then a session keeps at most
``max_rounds`` rounds and ends before the first round whose input plus output would pass ``max_context_tokens``
(pass it as the engine's ``max_model_len``); the cut sessions and dropped rounds are counted in ``cuts``.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from lamps_jax.workload.arrivals import replay_arrivals
from lamps_jax.workload.spec import DEFAULT_FILLER_TOKEN_ID, CallSpec, WorkloadRequest, build_request

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "agent_sessions"
DEFAULT_SPEC = DATA_DIR / "tracelab_spec.json"
DEFAULT_EXAMPLES = DATA_DIR / "example_sessions.jsonl"

# gptj-6b-a100 holds 60,817 KV tokens: at 1/32 a session capped at 8,192 tokens (262k real: Codex's ~256k window,
# the spec's p90 round prefix of ~247k) leaves room for 7 such sessions at once.
DEFAULT_TOKEN_SCALE = 1 / 32
DEFAULT_MAX_CONTEXT_TOKENS = 8192
# Past the spec's p90 of ~152 rounds (p99 ~1,236); at the defaults the context cap binds first (136-213 rounds).
DEFAULT_MAX_ROUNDS = 256
HUMAN = "human"  # the call before a round that starts from a user message
# The geometric mean of the example sessions' first inputs (32,272 and 9,324 tokens); the spec states none.
FIRST_INPUT_TOKENS = 17_347
# The spec's tool categories ("tool_calls.mixture_by_kind.categories") by call name; others keep their own.
KIND_NAMES = {
    "shell_command": "shell",
    "file_edit_patch": "edit",
    "file_read_search": "read",
    "planning": "plan",
    "agent_task": "agent",
    "web_lookup": "web",
    "other": "other",
}
OTHER_KIND = "other"  # the kind of a tool no category lists
# What ``SessionWorkload.cuts`` counts: a cut session counts once, under the cap that binds (context on a tie).
CUT_COUNTS = ("sessions_cut_by_rounds", "rounds_cut_by_rounds", "sessions_cut_by_context", "rounds_cut_by_context")


class AgentSessionError(ValueError):
    """A spec or example file that does not hold what the generator or the loader reads."""


@dataclass(frozen=True)
class Quantiles:
    """A distribution by quantile points, sampled by the spec's convention: log value piecewise linear in the
    probability, the end segments extended beyond the first and last points, clipped to [minimum, maximum]."""

    probabilities: tuple[float, ...]
    values: tuple[float, ...]
    minimum: float = 0.0
    maximum: float = math.inf

    def __post_init__(self) -> None:
        p, v = self.probabilities, self.values
        if len(p) < 2 or len(p) != len(v):
            raise ValueError(f"need at least two quantile points, got probabilities {p} and values {v}")
        if not all(0 < a < b < 1 for a, b in itertools.pairwise(p)):
            raise ValueError(f"quantile probabilities must rise strictly within (0, 1), got {p}")
        if not all(math.isfinite(x) and 0 < x <= y for x, y in itertools.pairwise(v)) or not math.isfinite(v[-1]):
            raise ValueError(f"quantile values must be finite, > 0 and non-decreasing, got {v}")

    def at(self, u: np.ndarray) -> np.ndarray:
        """The values at probabilities ``u``."""
        p, log_v = np.array(self.probabilities), np.log(self.values)
        low_slope = (log_v[1] - log_v[0]) / (p[1] - p[0])
        high_slope = (log_v[-1] - log_v[-2]) / (p[-1] - p[-2])
        log_x = np.interp(u, p, log_v)
        log_x = np.where(u < p[0], log_v[0] + low_slope * (u - p[0]), log_x)
        log_x = np.where(u > p[-1], log_v[-1] + high_slope * (u - p[-1]), log_x)
        return np.clip(np.exp(log_x), self.minimum, self.maximum)


@dataclass(frozen=True)
class ToolKind:
    calls: int  # calls of this kind in the trace: its weight in the mix
    seconds: Quantiles  # latency of a call with a positive latency
    tools: tuple[str, ...]  # the tool names of the kind


@dataclass(frozen=True)
class SessionSpec:
    """The quantities ``generate`` draws, read from the spec file (keys in ``load_spec``)."""

    user_rounds: Quantiles  # rounds per session that start from a user message
    tool_rounds: Quantiles  # rounds per session that start from tool results
    output_tokens: Quantiles  # per round
    context_growth: Quantiles  # tokens a round's input adds over the previous round's input
    human_wait: Quantiles  # seconds before a user message
    kinds: dict[str, ToolKind]  # call name -> kind

    def kind_of(self, tool_name: str) -> str:
        return next((name for name, kind in self.kinds.items() if tool_name in kind.tools), OTHER_KIND)


@dataclass(frozen=True)
class Session:
    """A session in real tokens and seconds: the first input, each round's output, the call after each round
    but the last (its result is the next round's fresh tokens)."""

    session_id: str
    first_input_tokens: int
    output_tokens: tuple[int, ...]
    calls: tuple[CallSpec, ...]


@dataclass(frozen=True)
class SessionWorkload:
    requests: list[WorkloadRequest]  # one per session, all arriving at 0 (see ``session_arrivals``)
    setting: dict[str, Any]  # the source and every knob: token_scale, time_scale, max_rounds, max_context_tokens
    cuts: dict[str, int]  # sessions cut and rounds dropped by each cap (keys: ``CUT_COUNTS``)


def load_spec(path: str | Path = DEFAULT_SPEC) -> SessionSpec:
    """The generator's quantities from a spec file in ``tracelab_spec.json``'s layout."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AgentSessionError(f"spec {path}: cannot read it ({err})") from None
    try:
        categories = _entry(raw, "tool_calls.mixture_by_kind.categories")
        if not isinstance(categories, dict) or not categories:
            raise AgentSessionError("'tool_calls.mixture_by_kind.categories' must be a non-empty object")
        kinds = {KIND_NAMES.get(name, name): _tool_kind(categories, name) for name in categories}
        if sum(kind.calls for kind in kinds.values()) == 0:
            raise AgentSessionError("the tool categories count no calls")
        return SessionSpec(
            user_rounds=_quantiles(raw, "session.user_initiated_steps_per_session"),
            tool_rounds=_quantiles(raw, "session.tool_initiated_steps_per_session"),
            output_tokens=_quantiles(raw, "step.output_tokens.merged"),
            context_growth=_quantiles(raw, "step.context_growth_per_step.tool_result_older_snapshot"),
            human_wait=_quantiles(raw, "human_in_the_loop.human_input_wait_positive"),
            kinds=kinds,
        )
    except AgentSessionError as err:
        raise AgentSessionError(f"spec {path}: {err}") from None


def generate(
    num_sessions: int,
    seed: int = 0,
    *,
    token_scale: float = DEFAULT_TOKEN_SCALE,
    time_scale: float = 1.0,
    max_rounds: int | None = DEFAULT_MAX_ROUNDS,
    max_context_tokens: int | None = DEFAULT_MAX_CONTEXT_TOKENS,
    spec_path: str | Path = DEFAULT_SPEC,
    filler_token_id: int = DEFAULT_FILLER_TOKEN_ID,
) -> SessionWorkload:
    """``num_sessions`` sessions ("session-<i>") drawn from the spec, scaled and capped (None: no cap)."""
    sessions = sample_sessions(num_sessions, load_spec(spec_path), seed)
    source = {"source": f"generated from {Path(spec_path).name}", "seed": seed, "num_sessions": num_sessions}
    return _workload(sessions, source, token_scale, time_scale, max_rounds, max_context_tokens, filler_token_id)


def sample_sessions(num_sessions: int, spec: SessionSpec, seed: int = 0) -> list[Session]:
    """``num_sessions`` sessions ("session-<i>") drawn from ``spec``, in real tokens and seconds."""
    if num_sessions < 0:
        raise ValueError(f"num_sessions must be >= 0, got {num_sessions}")
    rng = np.random.default_rng(seed)
    return [_sample_session(f"session-{i}", spec, rng) for i in range(num_sessions)]


def load_examples(
    path: str | Path = DEFAULT_EXAMPLES,
    *,
    token_scale: float = DEFAULT_TOKEN_SCALE,
    time_scale: float = 1.0,
    max_rounds: int | None = DEFAULT_MAX_ROUNDS,
    max_context_tokens: int | None = DEFAULT_MAX_CONTEXT_TOKENS,
    spec_path: str | Path = DEFAULT_SPEC,
    filler_token_id: int = DEFAULT_FILLER_TOKEN_ID,
) -> SessionWorkload:
    """The real sessions of a file in ``example_sessions.jsonl``'s schema, in order of first appearance.

    The first input is round 0's ``input_tokens_total``. A round before a ``user_message`` round makes a human call
    lasting from its latest event (a tool result included) to that message; any other round makes one tool call of
    the kind (by the spec's tool lists) of its slowest tool, lasting from its first tool call to its last result.
    Fresh tokens are the next input less this input and output, read as 0 when the context shrank.
    """
    spec = load_spec(spec_path)
    rounds_by_session: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for number, row in _read_rows(Path(path)):
        where = f"{path}, line {number}"
        rounds_by_session.setdefault(_typed(where, row, "session_id", str), []).append((where, row))
    sessions = [_example_session(session_id, rounds, spec) for session_id, rounds in rounds_by_session.items()]
    source = {"source": Path(path).name, "num_sessions": len(sessions)}
    return _workload(sessions, source, token_scale, time_scale, max_rounds, max_context_tokens, filler_token_id)


def session_arrivals(requests: Sequence[WorkloadRequest], rate: float, seed: int = 0) -> list[WorkloadRequest]:
    """Each session once, at the times of a Poisson process of ``rate`` sessions/s from time 0.

    (``poisson_arrivals`` instead draws sessions with replacement over a time window.)"""
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"a session rate must be a number > 0 (sessions/s), got {rate}")
    gaps = np.random.default_rng(seed).exponential(1 / rate, size=len(requests))
    return replay_arrivals(requests, np.cumsum(gaps).tolist())


def _sample_session(session_id: str, spec: SessionSpec, rng: np.random.Generator) -> Session:
    u = rng.random()
    user_rounds = max(1, round(float(spec.user_rounds.at(u))))
    num_rounds = user_rounds + max(0, round(float(spec.tool_rounds.at(u))))
    v = rng.random(num_rounds)
    outputs = np.maximum(1, np.rint(spec.output_tokens.at(v))).astype(int)
    fresh = np.maximum(0, np.rint(spec.context_growth.at(v)).astype(int) - outputs)
    names = _call_names(spec, user_rounds, num_rounds, rng)
    seconds = _call_seconds(spec, names, rng)
    calls = (CallSpec(str(n), float(s), int(f)) for n, s, f in zip(names, seconds, fresh))
    return Session(session_id, FIRST_INPUT_TOKENS, tuple(outputs.tolist()), tuple(calls))


def _call_names(spec: SessionSpec, user_rounds: int, num_rounds: int, rng: np.random.Generator) -> np.ndarray:
    """The call after each round but the last: "human" before each user turn but the first (round 0), on
    uniformly chosen rounds; else a tool kind drawn by the kinds' call counts."""
    kinds = list(spec.kinds)
    weights = np.array([spec.kinds[kind].calls for kind in kinds], dtype=float)
    picks = rng.choice(len(kinds), size=num_rounds - 1, p=weights / weights.sum())
    names = np.array(kinds, dtype=object)[picks]
    names[rng.choice(num_rounds - 1, size=user_rounds - 1, replace=False)] = HUMAN
    return names


def _call_seconds(spec: SessionSpec, names: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    u = rng.random(len(names))
    seconds = np.empty(len(names))
    for name, quantiles in [(HUMAN, spec.human_wait), *((name, kind.seconds) for name, kind in spec.kinds.items())]:
        drawn = names == name
        seconds[drawn] = quantiles.at(u[drawn])
    return seconds


def _example_session(session_id: str, rounds: list[tuple[str, dict[str, Any]]], spec: SessionSpec) -> Session:
    rounds = sorted(rounds, key=lambda pair: _count(*pair, "round_index"))
    indices = [row["round_index"] for _, row in rounds]
    if indices != list(range(len(rounds))):
        raise AgentSessionError(f"session {session_id!r}: round indices {indices} are not 0, 1, 2, ...")
    inputs = [_count(where, row, "input_tokens_total") for where, row in rounds]
    outputs = [max(1, _count(where, row, "output_tokens")) for where, row in rounds]
    calls = [
        _example_call(current, following, spec, max(0, inputs[i + 1] - inputs[i] - outputs[i]))
        for i, (current, following) in enumerate(itertools.pairwise(rounds))
    ]
    return Session(session_id, inputs[0], tuple(outputs), tuple(calls))


def _example_call(
    current: tuple[str, dict[str, Any]], following: tuple[str, dict[str, Any]], spec: SessionSpec, fresh: int
) -> CallSpec:
    (where, row), (next_where, next_row) = current, following
    tools = _typed(where, row, "tools", list)
    starts_from = next_row.get("first_input_event_type")
    if starts_from == "user_message":
        messages = [e for e in _typed(next_where, next_row, "timing_events", list) if _event_type(e) == starts_from]
        if not messages:
            raise AgentSessionError(f"{next_where}: starts from a user message but has no user_message event")
        events = [_time(where, e, "timestamp") for e in _typed(where, row, "timing_events", list)]
        events += [_time(where, tool, "result_at") for tool in tools]
        if not events:
            raise AgentSessionError(f"{where}: no timing events to time the human's wait after this round from")
        latest = max(events)
        return CallSpec(HUMAN, max(0.0, _time(next_where, messages[0], "timestamp") - latest), fresh)
    if starts_from != "tool_result" or not tools:
        raise AgentSessionError(
            f"{next_where}: a round that does not start from a user message must start from a tool result and "
            f"follow a round with tool calls (first_input_event_type {starts_from!r}, {len(tools)} tool calls before)"
        )
    emitted = [_time(where, tool, "emitted_at") for tool in tools]
    returned = [_time(where, tool, "result_at") for tool in tools]
    slowest = max(range(len(tools)), key=lambda i: returned[i] - emitted[i])
    kind = spec.kind_of(_typed(where, tools[slowest], "tool_name", str))
    return CallSpec(kind, max(returned) - min(emitted), fresh)


def _workload(
    sessions: list[Session],
    source: dict[str, Any],
    token_scale: float,
    time_scale: float,
    max_rounds: int | None,
    max_context_tokens: int | None,
    filler_token_id: int,
) -> SessionWorkload:
    if not (math.isfinite(token_scale) and token_scale > 0 and math.isfinite(time_scale) and time_scale > 0):
        raise ValueError(f"token_scale and time_scale must be finite and > 0, got {token_scale}, {time_scale}")
    if max_rounds is not None and max_rounds < 1:
        raise ValueError(f"max_rounds must be >= 1 or None, got {max_rounds}")
    if max_context_tokens is not None and max_context_tokens < 2:
        raise ValueError(
            f"max_context_tokens must be >= 2 (a prompt and a decoded token) or None, got {max_context_tokens}"
        )
    cuts = dict.fromkeys(CUT_COUNTS, 0)
    requests = []
    for session in sessions:
        prompt, outputs, calls = _scaled(session, token_scale, time_scale)
        by_context = len(outputs)
        if max_context_tokens is not None:
            by_context = _rounds_within(session.session_id, prompt, outputs, calls, max_context_tokens)
        kept = min(by_context, max_rounds or by_context)
        if kept < len(outputs):
            cap = "context" if kept == by_context else "rounds"
            cuts[f"sessions_cut_by_{cap}"] += 1
            cuts[f"rounds_cut_by_{cap}"] += len(outputs) - kept
        requests.append(build_request(session.session_id, prompt, outputs[:kept], calls[: kept - 1], filler_token_id))
    setting = source | {
        "token_scale": token_scale,
        "time_scale": time_scale,
        "max_rounds": max_rounds,
        "max_context_tokens": max_context_tokens,
    }
    return SessionWorkload(requests, setting, cuts)


def _scaled(session: Session, token_scale: float, time_scale: float) -> tuple[int, list[int], list[CallSpec]]:
    prompt = max(1, round(session.first_input_tokens * token_scale))
    outputs = [max(1, round(tokens * token_scale)) for tokens in session.output_tokens]
    calls = [
        CallSpec(call.api_type, call.duration * time_scale, round(call.num_result_tokens * token_scale))
        for call in session.calls
    ]
    return prompt, outputs, calls


def _rounds_within(session_id: str, prompt: int, outputs: list[int], calls: list[CallSpec], limit: int) -> int:
    """How many leading rounds fit ``limit`` tokens: each round's input plus its output."""
    context = prompt + outputs[0]
    if context > limit:
        raise ValueError(
            f"session {session_id!r}: its first round takes {context} tokens (after scaling), more than "
            f"max_context_tokens {limit}: raise max_context_tokens or lower token_scale"
        )
    for i, call in enumerate(calls):
        context += call.num_result_tokens + outputs[i + 1]
        if context > limit:
            return i + 1
    return len(outputs)


def _entry(raw: Any, dotted: str) -> Any:
    value = raw
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise AgentSessionError(f"missing {dotted!r}")
        value = value[key]
    return value


def _quantiles(raw: Any, dotted: str, unit_factor: float = 1.0) -> Quantiles:
    group = _entry(raw, dotted)
    if not isinstance(group, dict):
        raise AgentSessionError(f"{dotted!r} must be an object of quantile points, got {type(group).__name__}")
    points = sorted((int(m[1]), value) for key, value in group.items() if (m := re.fullmatch(r"p(\d{1,2})", key)))
    bounds = {key: group[key] for key in ("min", "max") if key in group}
    numbers = [value for _, value in points] + list(bounds.values())
    if any(isinstance(x, bool) or not isinstance(x, int | float) for x in numbers):
        raise AgentSessionError(f"{dotted!r}: quantile points and min/max must be numbers, got {group}")
    try:
        return Quantiles(
            tuple(p / 100 for p, _ in points),
            tuple(value * unit_factor for _, value in points),
            bounds.get("min", 0.0) * unit_factor,
            bounds.get("max", math.inf) * unit_factor,
        )
    except ValueError as err:
        raise AgentSessionError(f"{dotted!r}: {err}") from None


def _tool_kind(categories: dict[str, Any], name: str) -> ToolKind:
    try:
        calls, tools = _entry(categories[name], "calls"), _entry(categories[name], "tools")
        if isinstance(calls, bool) or not isinstance(calls, int) or calls < 0:
            raise AgentSessionError(f"'calls' must be a count >= 0, got {calls!r}")
        if not isinstance(tools, list) or not all(isinstance(tool, str) for tool in tools):
            raise AgentSessionError(f"'tools' must be a list of tool names, got {tools!r}")
        return ToolKind(calls, _quantiles(categories[name], "latency_ms", unit_factor=1e-3), tuple(tools))
    except AgentSessionError as err:
        raise AgentSessionError(f"tool category {name!r}: {err}") from None


def _read_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise AgentSessionError(f"examples {path}: cannot read them ({err})") from None
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise AgentSessionError(f"{path}, line {number}: not valid JSON ({err})") from None
        if not isinstance(row, dict):
            raise AgentSessionError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}")
        rows.append((number, row))
    if not rows:
        raise AgentSessionError(f"{path}: no rounds")
    return rows


def _typed(where: str, record: dict[str, Any], name: str, kind: type) -> Any:
    if name not in record:
        raise AgentSessionError(f"{where}: missing field {name!r}")
    value = record[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise AgentSessionError(f"{where}: field {name!r} must be a {kind.__name__}, got {value!r}")
    return value


def _count(where: str, record: dict[str, Any], name: str) -> int:
    value = _typed(where, record, name, int)
    if value < 0:
        raise AgentSessionError(f"{where}: field {name!r} is negative ({value})")
    return value


def _event_type(event: Any) -> Any:
    return event.get("event_type") if isinstance(event, dict) else None


def _time(where: str, record: Any, name: str) -> float:
    """An ISO 8601 timestamp field, in seconds since the epoch."""
    if not isinstance(record, dict):
        raise AgentSessionError(f"{where}: expected an object with a {name!r} timestamp, got {record!r}")
    value = _typed(where, record, name, str)
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise AgentSessionError(f"{where}: field {name!r} is not an ISO 8601 timestamp ({value!r})") from None
