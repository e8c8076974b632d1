"""Trace loading: the two real INFERCEPT files, both record styles, and the errors for malformed input."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

import pytest

from lamps_jax.workload.traces import (
    DEFAULT_TRACES,
    TRACES_ENV,
    TraceError,
    classify_numeric_request,
    classify_text_call,
    load_trace,
    traces_dir,
)

needs_traces = pytest.mark.skipif(
    not all(path.is_file() for path in DEFAULT_TRACES.values()), reason=f"traces not found (set {TRACES_ENV})"
)

# Calls per type in the trace README's table: the classification rule reproduces them exactly.
README_CALLS = {"math": 276, "qa": 151, "virtual_env": 289, "chat": 675, "tts": 225, "image": 225}
README_MEAN_SECONDS = {"math": 8.3e-5, "qa": 0.71, "virtual_env": 0.085, "chat": 28.2, "tts": 6.1, "image": 11.5}


def write_trace(tmp_path: Path, records: object) -> Path:
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(records))
    return path


NUMERIC = {
    "n1": [
        {"prompt_tokens": 400, "completion_tokens": 30, "api_time": 8e-5, "api_token_length": 20},
        {"prompt_tokens": 450, "completion_tokens": 0, "api_time": 2e-5, "api_token_length": 19},
        {"prompt_tokens": 470, "completion_tokens": 12},
    ],
    "n2": [{"prompt_tokens": 1973, "completion_tokens": 4, "api_time": 0.08, "api_token_length": 2}],
}
TEXT = {
    "t1": [
        {"prompt": "x" * 10, "completion": "y" * 9, "api_token": "Convert this to text to speech. ", "api_time": 6.0},
        {"prompt": "ignored", "completion": "Here is the converted file. ", "api_token": "z" * 40, "api_time": 30.0},
        {"prompt": "ignored", "completion": ""},
    ],
    "t2": [{"prompt": "hi", "completion": "a" * 8, "api_token": "Generate an image about this. ", "api_time": 11.0}],
}


@needs_traces
def test_multi_api_trace_matches_the_readme() -> None:
    requests = load_trace(DEFAULT_TRACES["multi"])
    assert len(requests) == 397
    assert sum(r.num_api_calls for r in requests) == 1841
    assert max(r.num_api_calls for r in requests) == 16
    assert Counter(t for r in requests for t in r.api_types) == README_CALLS  # exact
    for api_type, mean in README_MEAN_SECONDS.items():
        seconds = [
            s.api_call.duration for r in requests for s in r.segments if s.api_call and s.api_call.name == api_type
        ]
        assert statistics.fmean(seconds) == pytest.approx(mean, rel=0.03), api_type


@needs_traces
def test_one_api_trace() -> None:
    requests = load_trace(DEFAULT_TRACES["one"])
    assert len(requests) == 397
    assert all(r.num_api_calls == 1 for r in requests)
    assert Counter(r.api_types[0] for r in requests) == {
        "math": 103, "qa": 45, "virtual_env": 54, "chat": 65, "tts": 65, "image": 65
    }  # fmt: skip


@needs_traces
def test_real_trace_segments_are_consistent() -> None:
    requests = load_trace(DEFAULT_TRACES["multi"], filler_token_id=5)
    first = requests[0]  # "0a84bcdff8434b23971032489f44b90a": four calculator calls
    assert first.prompt_tokens == 392
    assert [s.num_tokens for s in first.segments] == [127, 47, 48, 82, 76]
    assert first.segments[0].result_token_ids == (5,) * 21
    by_id = {r.request_id: r for r in requests}
    assert by_id["7_2"].segments[5].result_token_ids == ()  # api_token_length -2 in the file
    chat_tts = by_id["0_1"]  # ten segments, the last one ending on the human's reply
    assert chat_tts.api_types == ("tts", "chat") * 5
    assert chat_tts.segments[-1].num_tokens == 1


def test_numeric_records(tmp_path: Path) -> None:
    n1, n2 = load_trace(write_trace(tmp_path, NUMERIC))
    assert (n1.request_id, n1.prompt_tokens, n1.api_types) == ("n1", 400, ("math", "math"))
    assert [s.num_tokens for s in n1.segments] == [30, 1, 12]  # a 0-token completion decodes 1 token
    assert [len(s.result_token_ids) for s in n1.segments] == [20, 19, 0]
    assert n1.total_api_time == pytest.approx(1e-4)
    assert n2.api_types == ("virtual_env",)
    assert [s.num_tokens for s in n2.segments] == [4, 1]  # a trailing call is followed by one decoded token


def test_text_records_count_characters(tmp_path: Path) -> None:
    t1, t2 = load_trace(write_trace(tmp_path, TEXT), chars_per_token=4.0)
    assert t1.prompt_tokens == 3  # ceil(10 / 4); later prompts are ignored
    assert t1.api_types == ("tts", "chat")
    assert [s.num_tokens for s in t1.segments] == [3, 7, 1]  # ceil(9/4), ceil(28/4), empty -> 1
    assert [len(s.result_token_ids) for s in t1.segments] == [8, 10, 0]
    assert t1.segments[0].api_call.duration == 6.0
    assert t2.api_types == ("image",) and t2.prompt_tokens == 1
    assert [s.num_tokens for s in t2.segments] == [2, 1]


def test_text_records_use_the_tokenizer(tmp_path: Path) -> None:
    class WordTokenizer:
        def encode(self, text: str) -> list[int]:
            return [0] * len(text.split())

    (t1, _) = load_trace(write_trace(tmp_path, TEXT), tokenizer=WordTokenizer())
    assert t1.prompt_tokens == 1
    assert [s.num_tokens for s in t1.segments] == [1, 5, 1]
    assert [len(s.result_token_ids) for s in t1.segments] == [6, 1, 0]


def test_negative_returned_tokens_read_as_zero(tmp_path: Path) -> None:
    record = {"prompt_tokens": 2047, "completion_tokens": 4, "api_time": 0.08, "api_token_length": -2}
    (request,) = load_trace(write_trace(tmp_path, {"v": [record, {"prompt_tokens": 2049, "completion_tokens": 1}]}))
    assert request.segments[0].result_token_ids == ()


def test_classification_rules() -> None:
    assert classify_numeric_request([8e-5, 0.0]) == "math"
    assert classify_numeric_request([0.0, 0.09]) == "virtual_env"
    assert classify_numeric_request([0.0, 0.7]) == "qa"
    assert classify_text_call(" Convert this to text to speech. ") == "tts"
    assert classify_text_call("Generate an image about this. ") == "image"
    assert classify_text_call("Generate an image of a cat") == "chat"


SEGMENT = {"prompt_tokens": 10, "completion_tokens": 3, "api_time": 0.5, "api_token_length": 4}


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([1, 2], "expected a JSON object"),
        ({}, "no requests"),
        ({"bad": {"prompt_tokens": 1}}, "request 'bad': expected a non-empty list"),
        ({"bad": []}, "request 'bad': expected a non-empty list"),
        ({"bad": ["text"]}, "request 'bad', segment 0: expected an object, got str"),
        ({"bad": [{"foo": 1}]}, "request 'bad', segment 0: neither numeric nor text"),
        ({"bad": [SEGMENT, {"prompt_tokens": 20}]}, "request 'bad', segment 1: missing field 'completion_tokens'"),
        ({"bad": [{"completion_tokens": 3}]}, "request 'bad', segment 0: missing field 'prompt_tokens'"),
        ({"bad": [SEGMENT | {"api_time": None}, {**SEGMENT}]}, "'api_time' must be a"),
        ({"bad": [{k: v for k, v in SEGMENT.items() if k != "api_time"}]}, "segment 0: missing field 'api_time'"),
        ({"bad": [{k: v for k, v in SEGMENT.items() if k != "api_token_length"}]}, "missing field 'api_token_length'"),
        ({"bad": [SEGMENT | {"completion_tokens": -1}]}, "'completion_tokens' is negative"),
        ({"bad": [SEGMENT | {"prompt_tokens": -5}]}, "'prompt_tokens' is negative"),
        ({"bad": [SEGMENT | {"api_time": -0.5}]}, "segment 0: field 'api_time' is negative"),
        ({"bad": [SEGMENT | {"completion_tokens": 2.5}]}, "'completion_tokens' must be an integer"),
        ({"bad": [SEGMENT | {"completion_tokens": True}]}, "'completion_tokens' must be an integer"),
        ({"bad": [{"prompt": "p", "completion": 3}]}, "request 'bad', segment 0: field 'completion' must be a string"),
        ({"bad": [{"prompt": "p", "completion": "c", "api_time": 1.0}, {}]}, "missing field 'api_token'"),
        ({"bad": [{"prompt": "p", "completion": "c", "api_token": "x"}]}, "missing field 'api_time'"),
        ({"": [SEGMENT]}, "empty id"),
    ],
)
def test_malformed_records_name_the_record(tmp_path: Path, records: object, message: str) -> None:
    path = write_trace(tmp_path, records)
    with pytest.raises(TraceError, match=message) as info:
        load_trace(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [('{"a": [', "not valid JSON"), ('{"a": [{"prompt": "p", "completion": "c"}], "a": []}', "duplicate key 'a'")],
)
def test_malformed_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "trace.json"
    path.write_text(text)
    with pytest.raises(TraceError, match=message):
        load_trace(path)


def test_missing_file_says_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=TRACES_ENV):
        load_trace(tmp_path / "absent.json")


def test_bad_chars_per_token(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="chars_per_token"):
        load_trace(write_trace(tmp_path, TEXT), chars_per_token=0)


def test_traces_dir_default_and_override(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    assert traces_dir({}) == repo.parent / "shared" / "data" / "traces"
    assert traces_dir({TRACES_ENV: str(tmp_path)}) == tmp_path
    assert DEFAULT_TRACES["multi"].name == "infercept_multi_api.json"
    assert DEFAULT_TRACES["one"].name == "infercept_one_api.json"
