"""Memory waste of each KV strategy for a paused request, and the LAMPS score (pure Python).

In: token counts of the request and of the batch around it, a (predicted) API duration and a
``CostModel``. Out: areas in tokens x seconds: the waste of Preserve / Discard / Swap for one API
call (INFERCEPT's equations: Abhyankar et al., arXiv 2402.01869, as LAMPS uses them in Shahout et
al., arXiv 2410.18248), the cheapest strategy, and the LAMPS ranking score,
the predicted memory-over-time area of a request (smaller runs first).
"""

from __future__ import annotations

from lamps_jax.request import KVStrategy
from lamps_jax.scheduler.cost_model import CostModel


def _check_counts(**counts: float) -> None:
    for name, value in counts.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def preserve_waste(context: int, api_time: float) -> float:
    """W_P = T·C: the request's C tokens sit idle on the device for the whole call of T seconds."""
    _check_counts(context=context, api_time=api_time)
    return api_time * context


def recompute_chunks(context: int, cost: CostModel, running_tokens: int = 0) -> list[int]:
    """Chunk sizes of re-prefilling ``context`` tokens: ``max(1, B - running_tokens)`` each, the last partial."""
    _check_counts(context=context, running_tokens=running_tokens)
    chunk = max(1, cost.token_budget - running_tokens)
    return [min(chunk, context - start) for start in range(0, context, chunk)]


def discard_waste(context: int, other_context: int, cost: CostModel, running_tokens: int = 0) -> float:
    """W_D: the area of recomputing C tokens in chunks, plus the others' memory held meanwhile.

    Iteration j (of n = ceil(C / chunk)) recomputes chunk_j = min(chunk, C - (j-1)·chunk) tokens,
    with chunk = max(1, B - running_tokens), and takes f(chunk_j, R_{j-1}) where R_j = min(j·chunk, C)
    is the count recomputed so far (the chunk attends over the R_{j-1} already rebuilt). During it the
    request holds R_j tokens and the other running requests hold C_other:

        W_D = Σ_{j=1..n} f(chunk_j, R_{j-1}) · (R_j + C_other)

    Only the last chunk can be partial, and it is charged at its own size. With b = 0 and C a multiple
    of the chunk this is the LAMPS paper's Σ f(chunk)·j·chunk + n·f(chunk)·C_other; for C <= chunk (n = 1)
    it is INFERCEPT's unchunked f(C)·C + f(C)·C_other.
    """
    _check_counts(other_context=other_context)
    waste, rebuilt = 0.0, 0
    for size in recompute_chunks(context, cost, running_tokens):
        step_time = cost.iteration_time(size, rebuilt)
        rebuilt += size
        waste += step_time * (rebuilt + other_context)
    return waste


def swap_waste(context: int, batch_context: int, cost: CostModel, overlapped: bool = False) -> float:
    """W_S = 2·g(C)·C_batch: out and back in while the batch stalls; overlapped with compute, 2·g(C)·C."""
    _check_counts(context=context, batch_context=batch_context)
    return 2 * cost.swap_time(context) * (context if overlapped else batch_context)


def cheapest_strategy(
    context: int,
    api_time: float,
    other_context: int,
    batch_context: int,
    cost: CostModel,
    allow_swap: bool = True,
    running_tokens: int = 0,
    swap_overlapped: bool = False,
) -> KVStrategy:
    """The strategy of least waste for a call of ``api_time`` seconds; ties go to Preserve, then Discard, then Swap."""
    wastes = {
        KVStrategy.PRESERVE: preserve_waste(context, api_time),
        KVStrategy.DISCARD: discard_waste(context, other_context, cost, running_tokens),
    }
    if allow_swap:
        wastes[KVStrategy.SWAP] = swap_waste(context, batch_context, cost, swap_overlapped)
    return min(wastes, key=wastes.__getitem__)  # min keeps the first of equal wastes


def decode_area(start_context: int, num_tokens: int, cost: CostModel, step_time: float | None = None) -> float:
    """f·(x·n + n²/2): memory growing from x to x + n tokens over n decode iterations of f seconds each
    (``step_time``; by default f(1), a decode alone)."""
    _check_counts(start_context=start_context, num_tokens=num_tokens)
    step = cost.iteration_time(1) if step_time is None else step_time
    return step * (start_context * num_tokens + num_tokens**2 / 2)


def call_area(context: int, api_time: float, strategy: KVStrategy, cost: CostModel, running_tokens: int = 0) -> float:
    """The area a call adds for a request holding C tokens, by strategy.

    Preserve: C·T (held for the whole call). Discard: nothing during the call, then the chunked
    re-prefill staircase of C on return, Σ_j f(chunk_j, R_{j-1})·R_j (``discard_waste`` with no
    others). Swap: the transfer area 2·g(C)·C (the request's own memory, out and back in).
    """
    if strategy is KVStrategy.PRESERVE:
        return preserve_waste(context, api_time)
    if strategy is KVStrategy.DISCARD:
        return discard_waste(context, 0, cost, running_tokens)
    return swap_waste(context, 0, cost, overlapped=True)


def memory_time_score(
    prompt_tokens: int,
    pre_api_tokens: int,
    api_time: float,
    returned_tokens: int,
    post_api_tokens: int,
    strategy: KVStrategy,
    cost: CostModel,
    running_tokens: int = 0,
    step_time: float | None = None,
) -> float:
    """LAMPS's ranking score: the request's predicted memory-over-time area (tokens x seconds).

    With P = ``prompt_tokens``, n = ``pre_api_tokens``, C = P + n, T = ``api_time``,
    r = ``returned_tokens``, m = ``post_api_tokens`` and f1 = f(1):
      A_pre  = f1·(P·n + n²/2)          decoding n tokens from P (``decode_area``)
      A_call = ``call_area``(C, T)      Preserve C·T | Discard the re-prefill staircase of C | Swap 2·g(C)·C
      A_post = f1·((C + r)·m + m²/2)    decoding m tokens after the result's r tokens are appended
    Score = A_pre + A_call + A_post, with f = ``step_time`` when given (LAMPS's code times every
    iteration as a saturated one, f(B)). ``post_api_tokens`` may cover every remaining segment (later
    calls add no area here). A request without a call (T = 0 and r = 0) scores its decode area
    f1·(P·(n + m) + (n + m)²/2), whatever the strategy.
    """
    _check_counts(api_time=api_time, returned_tokens=returned_tokens)
    context = prompt_tokens + pre_api_tokens
    has_call = api_time > 0 or returned_tokens > 0
    during = call_area(context, api_time, strategy, cost, running_tokens) if has_call else 0.0
    return (
        decode_area(prompt_tokens, pre_api_tokens, cost, step_time)
        + during
        + decode_area(context + returned_tokens, post_api_tokens, cost, step_time)
    )
