"""Coding-agent sessions (TraceLab, ``shared/data/agent_sessions``) as workload requests: one request per session.

A session is a chain of rounds (LLM invocations). Its request's prompt is the first round's input; round i is
a segment that decodes the round's output tokens, then makes a call: a tool call named after the tool kind
("shell", "edit", "read", "plan", "agent", "web", "other") lasting the tool latency, or, before a round that
starts from a user message, a "human" call lasting the human's wait. The call returns the next round's fresh
tokens: its context growth less the output already in the context (not its raw append, whose mean of 6.5k
tokens re-sends outputs and re-prefills contexts after cache misses: 3.8 times the growth). The last round
makes no call.

``generate`` samples sessions from ``tracelab_spec.json`` (read by ``agent_session_spec``): each quantity is drawn
by the spec's convention (piecewise-linear in log value between quantile points, the end segments' slopes outside,
clipped to a stated min/max). User- and tool-initiated rounds per session share one draw (the spec's own
comonotone reading); the first round starts from a user message and the other user turns fall on uniformly chosen
rounds. A round's output and its context growth share one draw too (the growth holds the output), and a round
makes one call, of a kind drawn by the kinds' call counts. Every round grows by the tool-result growth quantiles
(the user-round ones go below 0, which a log scale cannot take), and the first input is ``FIRST_INPUT_TOKENS``
(the spec states none). ``agent_session_examples.load_examples`` reads real rounds in ``example_sessions.jsonl``'s
schema the same way.

Token counts are multiplied by ``token_scale`` (default ``DEFAULT_TOKEN_SCALE``, 1/32: frontier contexts of
100k+ tokens shrink to a few thousand); durations by ``time_scale`` (default 1). Then a session keeps at most
``max_rounds`` rounds and ends before the first round whose input plus output would pass ``max_context_tokens``
(pass it as the engine's ``max_model_len``); the cut sessions and dropped rounds are counted in ``cuts``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lamps_jax.workload.agent_session_spec import DEFAULT_SPEC, SessionSpec, load_spec
from lamps_jax.workload.arrivals import replay_arrivals
from lamps_jax.workload.spec import DEFAULT_FILLER_TOKEN_ID, CallSpec, WorkloadRequest, build_request

# gptj-6b-a100 holds 60,817 KV tokens: at 1/32 a session capped at 8,192 tokens (262k real: Codex's ~256k window,
# the spec's p90 round prefix of ~247k) leaves room for 7 such sessions at once.
DEFAULT_TOKEN_SCALE = 1 / 32
DEFAULT_MAX_CONTEXT_TOKENS = 8192
# Past the spec's p90 of ~152 rounds (p99 ~1,236); at the defaults the context cap binds first (136-213 rounds).
DEFAULT_MAX_ROUNDS = 256
HUMAN = "human"  # the call before a round that starts from a user message
# The geometric mean of the example sessions' first inputs (32,272 and 9,324 tokens); the spec states none.
FIRST_INPUT_TOKENS = 17_347
# What ``SessionWorkload.cuts`` counts: a cut session counts once, under the cap that binds (context on a tie).
CUT_COUNTS = ("sessions_cut_by_rounds", "rounds_cut_by_rounds", "sessions_cut_by_context", "rounds_cut_by_context")


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
    return session_workload(sessions, source, token_scale, time_scale, max_rounds, max_context_tokens, filler_token_id)


def sample_sessions(num_sessions: int, spec: SessionSpec, seed: int = 0) -> list[Session]:
    """``num_sessions`` sessions ("session-<i>") drawn from ``spec``, in real tokens and seconds."""
    if num_sessions < 0:
        raise ValueError(f"num_sessions must be >= 0, got {num_sessions}")
    rng = np.random.default_rng(seed)
    return [_sample_session(f"session-{i}", spec, rng) for i in range(num_sessions)]


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


def session_workload(
    sessions: list[Session],
    source: dict[str, Any],
    token_scale: float,
    time_scale: float,
    max_rounds: int | None,
    max_context_tokens: int | None,
    filler_token_id: int,
) -> SessionWorkload:
    """One request per session, its tokens and call times scaled, its rounds capped (the cuts counted in the
    workload's setting, with ``source``): generated sessions and example sessions alike."""
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
