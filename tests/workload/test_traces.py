"""Trace loading: the two real INFERCEPT files, both record styles, and the errors for malformed input."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

import pytest

from lamps_jax.workload.spec import WorkloadRequest
from lamps_jax.workload.traces import (
    DEFAULT_TRACES,
    REFERENCE_MAX_TOKENS,
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


def shape(request: WorkloadRequest) -> list[tuple[int, int]]:
    """(decoded, returned) per segment."""
    return [(s.num_tokens, len(s.result_token_ids)) for s in request.segments]


def total_tokens(request: WorkloadRequest) -> int:
    return request.prompt_tokens + sum(decoded + returned for decoded, returned in shape(request))


# Ends on a call whose type (virtual env, 0.08 s) also names the earlier 0.0001 s call.
ENDS_ON_CALL = {
    "e": [
        {"prompt_tokens": 10, "completion_tokens": 3, "api_time": 1e-4, "api_token_length": 2},
        {"prompt_tokens": 15, "completion_tokens": 5, "api_time": 0.08, "api_token_length": 7},
    ]
}


def test_final_call_made_keeps_the_call_and_decodes_one_token(tmp_path: Path) -> None:
    path = write_trace(tmp_path, ENDS_ON_CALL | NUMERIC)
    requests = load_trace(path, final_call="made")
    assert requests == load_trace(path)  # the default: the reference driver's reading
    e, n1, n2 = requests
    assert e.api_types == ("virtual_env", "virtual_env")
    assert shape(e) == [(3, 2), (5, 7), (1, 0)]
    assert e.total_api_time == pytest.approx(0.0801)
    assert shape(n2) == [(4, 2), (1, 0)]
    assert shape(n1) == [(30, 20), (1, 19), (12, 0)]  # a trace that ends without a call is unchanged


def test_final_call_dropped_ends_after_the_last_completion(tmp_path: Path) -> None:
    e, n1, n2 = load_trace(write_trace(tmp_path, ENDS_ON_CALL | NUMERIC), final_call="dropped")
    assert e.api_types == ("virtual_env",)  # typed by all the trace's calls, the dropped one included
    assert shape(e) == [(3, 2), (5, 0)]
    assert e.segments[-1].api_call is None and e.total_api_time == pytest.approx(1e-4)
    assert (n2.api_types, shape(n2), n2.total_api_time) == ((), [(4, 0)], 0.0)
    assert shape(n1) == [(30, 20), (1, 19), (12, 0)]
    (_, t2) = load_trace(write_trace(tmp_path, TEXT), final_call="dropped")
    assert (t2.api_types, shape(t2)) == ((), [(2, 0)])


LONG = {
    "long": [
        {"prompt_tokens": 1000, "completion_tokens": 500, "api_time": 1e-4, "api_token_length": 300},
        {"prompt_tokens": 1800, "completion_tokens": 200, "api_time": 2e-4, "api_token_length": 100},
        {"prompt_tokens": 2100, "completion_tokens": 50},
    ]
}


@pytest.mark.parametrize(
    ("max_model_len", "expected"),
    [
        (None, [(500, 300), (200, 100), (50, 0)]),  # 2150 tokens in all
        (2150, [(500, 300), (200, 100), (50, 0)]),  # fits exactly
        # room 1048: 500 + 300 -> 248 left; 200 + min(100, 248 - 200 - 1) = 47 -> 1 left for the last segment
        (2048, [(500, 300), (200, 47), (1, 0)]),
        # room 600: 500 + min(300, 600 - 500 - 1) = 99 -> 1 left: the second segment is cut to 1 and loses its call
        (1600, [(500, 99), (1, 0)]),
        (1501, [(500, 0), (1, 0)]),  # room 501: the call is made, returning nothing
        (1500, [(500, 0)]),  # room 500: no token left after the call, so the segment loses it
        (1400, [(400, 0)]),  # room 400: the first segment is cut short and ends the request
        (1001, [(1, 0)]),
    ],
)
def test_max_model_len_cuts_a_long_request(tmp_path: Path, max_model_len: int | None, expected: list) -> None:
    (request,) = load_trace(write_trace(tmp_path, LONG), max_model_len=max_model_len)
    assert shape(request) == expected
    assert request.num_api_calls == len(expected) - 1
    assert request.api_types == ("math",) * (len(expected) - 1)
    if max_model_len is not None:
        assert total_tokens(request) <= max_model_len


def test_max_model_len_caps_the_output_at_the_reference_max_tokens(tmp_path: Path) -> None:
    record = [
        {"prompt_tokens": 10, "completion_tokens": 1500, "api_time": 30.0, "api_token_length": 1000},
        {"prompt_tokens": 2510, "completion_tokens": 600},
    ]
    (request,) = load_trace(write_trace(tmp_path, {"r": record}), max_model_len=5000)
    assert REFERENCE_MAX_TOKENS == 2048  # max_tokens = min(2048, 3100): 1500 + min(1000, 2048 - 1500 - 1) + 1
    assert shape(request) == [(1500, 547), (1, 0)]
    assert request.num_output_tokens + len(request.segments[0].result_token_ids) == 2048


def test_max_model_len_with_a_final_call(tmp_path: Path) -> None:
    records = {"f": [{"prompt_tokens": 2000, "completion_tokens": 40, "api_time": 0.5, "api_token_length": 8}]}
    path = write_trace(tmp_path, records)
    (made,) = load_trace(path, max_model_len=2048)
    assert shape(made) == [(40, 7), (1, 0)]  # 2049 uncut: the return loses one token, as in the reference
    (dropped,) = load_trace(path, final_call="dropped", max_model_len=2048)
    assert shape(dropped) == [(40, 0)]


def test_max_model_len_leaves_requests_that_fit_alone(tmp_path: Path) -> None:
    path = write_trace(tmp_path, NUMERIC | TEXT)
    assert load_trace(path, max_model_len=2048) == load_trace(path)


def test_a_prompt_that_fills_max_model_len_is_an_error(tmp_path: Path) -> None:
    path = write_trace(tmp_path, NUMERIC)
    with pytest.raises(TraceError, match=r"request 'n2': a prompt of 1973 tokens .* max_model_len 1973") as info:
        load_trace(path, max_model_len=1973)
    assert str(path) in str(info.value)
    assert shape(load_trace(path, max_model_len=1974)[1]) == [(1, 0)]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"final_call": "skipped"}, "final_call must be one of 'made', 'dropped', got 'skipped'"),
        ({"final_call": "Made"}, "final_call must be one of"),
        ({"final_call": None}, "final_call must be one of"),
        ({"max_model_len": 1}, "max_model_len must be >= 2"),
        ({"max_model_len": -5}, "max_model_len must be >= 2"),
        ({"max_model_len": 2048.0}, "max_model_len must be an integer or None"),
        ({"max_model_len": True}, "max_model_len must be an integer or None"),
    ],
)
def test_bad_trace_options(tmp_path: Path, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_trace(write_trace(tmp_path, NUMERIC), **options)


@needs_traces
@pytest.mark.parametrize(
    ("trace", "final_call", "affected", "calls_removed"),
    [("multi", "made", 57, 15), ("multi", "dropped", 14, 0), ("one", "made", 3, 0), ("one", "dropped", 3, 0)],
)
def test_real_traces_cut_to_2048(trace: str, final_call: str, affected: int, calls_removed: int) -> None:
    full = load_trace(DEFAULT_TRACES[trace], final_call=final_call)
    cut = load_trace(DEFAULT_TRACES[trace], final_call=final_call, max_model_len=2048)
    assert [r.request_id for r in cut] == [r.request_id for r in full]
    assert max(total_tokens(r) for r in cut) == 2048
    changed = [(a, b) for a, b in zip(full, cut) if a != b]
    assert len(changed) == affected == sum(total_tokens(a) > 2048 for a in full)
    assert all(total_tokens(b) == 2048 for _, b in changed)
    assert sum(a.num_api_calls - b.num_api_calls for a, b in changed) == calls_removed


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
