"""Workloads for augmented LLMs: the INFERCEPT traces, a seeded generator, and arrival processes.

Everything here is pure Python and numpy and produces ``WorkloadRequest``s (a prompt length plus
scripted ``Segment``s with simulated API calls); the engine, the simulator and the benchmarks consume them.
"""

from lamps_jax.workload.arrivals import poisson_arrivals, replay_arrivals
from lamps_jax.workload.spec import API_TYPES, CallSpec, WorkloadRequest, build_request
from lamps_jax.workload.synthetic import REQUEST_MIX, REQUEST_TYPES, generate
from lamps_jax.workload.traces import DEFAULT_TRACES, TraceError, load_trace

__all__ = [
    "API_TYPES",
    "DEFAULT_TRACES",
    "REQUEST_MIX",
    "REQUEST_TYPES",
    "CallSpec",
    "TraceError",
    "WorkloadRequest",
    "build_request",
    "generate",
    "load_trace",
    "poisson_arrivals",
    "replay_arrivals",
]
