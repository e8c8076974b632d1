"""``lamps-jax serve``: loads the model, starts the engine loop and serves the app with uvicorn until SIGINT or
SIGTERM; then in-flight responses get ``graceful_shutdown_s`` seconds to end before the engine shuts down.
An address it cannot listen on fails first, before the model loads."""

from __future__ import annotations

import socket

import uvicorn

from lamps_jax.async_llm import AsyncLLM
from lamps_jax.config import EngineConfig
from lamps_jax.engine import LLMEngine
from lamps_jax.server.app import build_app
from lamps_jax.server.server_tools import load_tools


def check_address(host: str, port: int) -> None:
    """Raises ``ValueError`` when nothing could listen on (host, port) now (in use, or not an address of this host)."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as err:
        raise ValueError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None


def serve(
    model: str,
    config: EngineConfig,
    *,
    dtype: str,
    seed: int,
    host: str,
    port: int,
    served_model_name: str | None,
    tool_call_parser: str | None,
    tools: list[str],
    max_waiting: int,
    graceful_shutdown_s: int,
) -> None:
    """``tools``: ``--tools`` entries (``server_tools.load_tools``), loaded before the model so that a bad one fails
    at once."""
    check_address(host, port)
    server_tools = load_tools(tools)
    if server_tools and tool_call_parser is None:
        raise ValueError("server-side tools (--tools) need --tool-call-parser: the model's calls are read with it")
    engine = LLMEngine.from_model(model, config, dtype=dtype, seed=seed)
    llm = AsyncLLM(engine, max_waiting=max_waiting)
    try:
        app = build_app(llm, served_model_name or model, tool_call_parser, server_tools)
        uvicorn.run(app, host=host, port=port, timeout_graceful_shutdown=graceful_shutdown_s, log_level="info")
    finally:
        llm.shutdown()  # the app's lifespan did it already, unless the server failed to start
