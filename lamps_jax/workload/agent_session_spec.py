"""Coding-agent session specs in ``tracelab_spec.json``'s layout: the quantities the session generator draws, each
a distribution by quantile points, and the tool kinds by their call counts and latencies.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "agent_sessions"
DEFAULT_SPEC = DATA_DIR / "tracelab_spec.json"
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
