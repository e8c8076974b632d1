"""``lamps-jax bench-serve``: its conversations are the in-process requests turn by turn, its servers get the
in-process engine's config, a run against a server gives a complete table, and bad inputs fail clearly."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import math
import sys
import time

import pytest

from lamps_jax.async_llm import AsyncLLM
from lamps_jax.bench.bench_serve import add_bench_serve_arguments, run_bench_serve, serve_command
from lamps_jax.bench.comparison import _real_config, real_comparison
from lamps_jax.bench.harness import run_workload
from lamps_jax.bench.serve_load import (
    REAL_MAX_PROMPT,
    REAL_MAX_SEGMENT,
    REAL_TIME_SCALE,
    EngineSettings,
    TraceSlice,
    conversations,
)
from lamps_jax.bench.serve_report import METRICS, in_process_summary
from lamps_jax.bench.server_process import BenchServeError, spawned_server
from lamps_jax.cli import _serve_engine_config
from lamps_jax.cli_parser import build_parser
from lamps_jax.engine import LLMEngine
from lamps_jax.server.app import build_app
from lamps_jax.workload.traces import load_trace
from tests.server.harness import free_socket, running

SETTINGS = EngineSettings(
    page_size=16, kv_memory_mib=2, max_num_seqs=4, max_num_batched_tokens=16, max_model_len=128, host_kv_pages=16
)
TRACE = {  # numeric records: two calls, one call, none (API times in seconds before scaling)
    "a": [
        {"prompt_tokens": 30, "completion_tokens": 5, "api_time": 1.0, "api_token_length": 4},
        {"prompt_tokens": 0, "completion_tokens": 3, "api_time": 0.5, "api_token_length": 2},
        {"prompt_tokens": 0, "completion_tokens": 4},
    ],
    "b": [
        {"prompt_tokens": 12, "completion_tokens": 6, "api_time": 2.0, "api_token_length": 9},
        {"prompt_tokens": 0, "completion_tokens": 2},
    ],
    "c": [{"prompt_tokens": 8, "completion_tokens": 5}],
}
SMALL = ["--max-prompt-tokens", "16", "--max-segment-tokens", "4"]


@pytest.fixture
def trace(tmp_path) -> str:
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(TRACE))
    return str(path)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_bench_serve_arguments(parser)
    return parser.parse_args(argv)


def test_the_defaults_are_bench_real_modes() -> None:
    defaults = inspect.signature(real_comparison).parameters
    assert tuple(defaults[name].default for name in ("time_scale", "max_prompt", "max_segment")) == (
        REAL_TIME_SCALE,
        REAL_MAX_PROMPT,
        REAL_MAX_SEGMENT,
    )
    settings = EngineSettings()
    for policy in ("vllm", "infercept", "lamps"):  # the session TTL: sessions exist only over HTTP
        assert settings.config(policy) == dataclasses.replace(
            _real_config(policy, None), session_ttl=settings.session_ttl
        )


def test_a_spawned_server_builds_the_engine_config_of_the_in_process_run() -> None:
    command = serve_command("tiny", "infercept", 8123, SETTINGS)
    assert command[:4] == [sys.executable, "-m", "lamps_jax.cli", "serve"]
    args = build_parser().parse_args(command[3:])
    assert _serve_engine_config(args) == SETTINGS.config("infercept")
    assert (args.model, args.host, args.port, args.dtype) == ("tiny", "127.0.0.1", 8123, "float32")


def test_the_conversations_are_the_in_process_requests_turn_by_turn_and_measured_alike(tiny_model, trace) -> None:
    slice_ = TraceSlice(trace, num_requests=6, max_prompt=16, max_segment=4)
    workload = slice_.arrivals(rate=8.0, seed=0)
    convs = conversations(workload, tiny_model.config.vocab_size)
    assert [c.arrival_time for c in convs] == sorted(r.arrival_time for r in workload)
    raw = {r.request_id: r for r in load_trace(trace)}
    result = run_workload(LLMEngine(tiny_model, SETTINGS.config("lamps")), workload, progress=False)
    outputs = {o.req_id: o for o in result.outputs}
    for conv in convs:
        source = raw[conv.request_id.split("-", 1)[1]].segments
        assert [t.max_tokens for t in conv.turns] == [min(s.num_tokens, 4) for s in source]
        calls = [s.api_call for s in source if s.api_call is not None]
        assert [t.api_seconds for t in conv.turns[:-1]] == [c.duration * REAL_TIME_SCALE for c in calls]
        assert [t.result_token_ids for t in conv.turns[:-1]] == [c.result_token_ids[:4] for c in calls]
        assert conv.turns[-1].api_seconds is None
        # in-process, the output is each turn's tokens then its call's result: the context the next turn sends
        output = outputs[conv.request_id]
        assert output.finish_reason == "stop" and tuple(output.prompt_token_ids) == conv.prompt_token_ids
        end = 0
        for turn in conv.turns:
            end += turn.max_tokens + len(turn.result_token_ids)
            assert tuple(output.token_ids[end - len(turn.result_token_ids) : end]) == turn.result_token_ids
        assert end == len(output.token_ids)
        assert output.num_generated_tokens == sum(t.max_tokens for t in conv.turns)
        assert len(output.api_calls) == len(calls)
    ours, theirs = in_process_summary(result, len(workload)), result.metrics()  # the metrics of bench --mode real
    assert ours["itl_mean"] == theirs["tpot_mean"] and ours["finished"] == theirs["finished"] == 6
    assert all(ours[key] == theirs[key] for key in ("ttft_mean", "ttft_p99", "e2e_mean", "e2e_p99"))
    assert not ours["cut_short"]


def test_a_run_against_a_server_gives_a_complete_table(tiny_model, trace, tmp_path) -> None:
    llm = AsyncLLM(LLMEngine(tiny_model, SETTINGS.config("lamps")))
    with running(build_app(llm, "tiny")) as url:
        args = parse(
            *("--url", url, "--model", "tiny", "--trace", trace, "--policies", "lamps", "--rates", "8"),
            *("--num-requests", "6", "--time-limit", "60", "--output", str(tmp_path / "out"), *SMALL),
            *SETTINGS.serve_flags(),
        )
        run_bench_serve(args)
    results = json.loads((tmp_path / "out" / "serve_comparison.json").read_text())
    (row,) = results["rows"]
    assert (row["policy"], row["rate"], row["requests"]) == ("lamps", 8.0, 6)
    assert row["http_finished"] == row["in_process_finished"] == 6 and row["http_errors"] == 0
    assert not row["http_cut_short"] and not row["in_process_cut_short"]
    for key, _ in METRICS:
        assert all(math.isfinite(row[f"{side}_{key}"]) and row[f"{side}_{key}"] > 0 for side in ("http", "in_process"))
    workload = TraceSlice(trace, 6, max_prompt=16, max_segment=4).arrivals(8.0, 0)
    assert row["http_later_turns"] == sum(len(r.segments) - 1 for r in workload)
    assert 0 <= row["http_kv_reused_turns"] <= row["http_later_turns"]
    assert results["setting"]["max_num_seqs"] == 4 and results["setting"]["server"].startswith(url)
    table = (tmp_path / "out" / "serve_comparison.md").read_text().splitlines()
    assert table[0].startswith("Table 1. lamps: the workload over HTTP") and table[1].startswith("Setting: model=tiny;")
    assert table[3] == "| metric | 8 req/s HTTP | 8 req/s in-process | 8 req/s HTTP / in-process |"
    assert "| finished | 6 of 6 | 6 of 6 |  |" in table


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--policies", "lamps,fifo"), "unknown scheduling policy 'fifo'"),
        (("--url", "http://127.0.0.1:9", "--policies", "vllm,lamps"), "--url loads one server"),
        (("--url", "http://10.0.0.1:8000", "--policies", "lamps"), "loopback"),
        (("--rates", "0"), "request rates must be numbers > 0"),
        (("--model", "no-such-model"), "unknown model 'no-such-model'"),
    ],
)
def test_bad_inputs_fail_before_anything_loads(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_bench_serve(parse("--model", "tiny", *argv))


def test_a_url_nothing_answers_at_is_named() -> None:
    with free_socket() as sock:  # bound, not listening: connections are refused
        url = "http://{}:{}".format(*sock.getsockname())
        with pytest.raises(BenchServeError, match=f"cannot reach the server at --url {url}"):
            run_bench_serve(parse("--model", "tiny", "--url", url, "--policies", "lamps"))


def test_a_session_ttl_shorter_than_an_api_call_is_refused(trace) -> None:
    with pytest.raises(ValueError, match=r"--session-ttl 0.03 s does not outlast the workload's longest API call"):
        run_bench_serve(parse("--model", "tiny", "--trace", trace, "--session-ttl", "0.03", *SMALL))


def test_a_server_that_never_answers_health_is_stopped_and_named() -> None:
    with free_socket() as sock:
        url = "http://{}:{}".format(*sock.getsockname())
    start = time.monotonic()
    # SIGINT as uvicorn takes it, even where this test runs with SIGINT ignored (a background job)
    stand_in = "import signal, time; signal.signal(signal.SIGINT, signal.default_int_handler); "
    command = [sys.executable, "-c", stand_in + "print('loading weights', flush=True); time.sleep(60)"]
    expected = r"did not answer /health within 1 s:\nloading weights"
    with pytest.raises(BenchServeError, match=expected), spawned_server(command, url, health_timeout=1.0):
        pytest.fail("the server is not healthy")
    assert time.monotonic() - start < 20  # stopped by SIGINT, not waited for


def test_a_server_that_exits_at_start_is_named_with_its_output() -> None:
    command = [sys.executable, "-c", "import sys; print('lamps-jax: error: no weights'); sys.exit(2)"]
    expected = r"exited with code 2 before answering /health:\nlamps-jax: error: no weights"
    with pytest.raises(BenchServeError, match=expected), spawned_server(command, "http://127.0.0.1:9", 30.0):
        pytest.fail("the server exited")
