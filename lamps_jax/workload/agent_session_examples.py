"""Real coding-agent sessions from a file in ``example_sessions.jsonl``'s schema, as workload requests: one request
per session, scaled and capped as generated sessions are.
"""

from __future__ import annotations

import itertools
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from lamps_jax.workload.agent_session_spec import DATA_DIR, DEFAULT_SPEC, AgentSessionError, SessionSpec, load_spec
from lamps_jax.workload.agent_sessions import (
    DEFAULT_MAX_CONTEXT_TOKENS,
    DEFAULT_MAX_ROUNDS,
    DEFAULT_TOKEN_SCALE,
    HUMAN,
    Session,
    SessionWorkload,
    session_workload,
)
from lamps_jax.workload.spec import DEFAULT_FILLER_TOKEN_ID, CallSpec

DEFAULT_EXAMPLES = DATA_DIR / "example_sessions.jsonl"


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
    return session_workload(sessions, source, token_scale, time_scale, max_rounds, max_context_tokens, filler_token_id)


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
