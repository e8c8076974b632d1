"""Per-step deltas from the engine: they add up to each request's final output, exactly one ends it."""

from __future__ import annotations

from collections import Counter, defaultdict

from lamps_jax.request import ApiCall, SamplingParams, Segment
from tests.engine.test_api_calls import api_engine


def test_streamed_deltas_add_up_to_the_final_outputs(tiny_model) -> None:
    engine = api_engine(tiny_model, "swap", tool_call_tags=None)
    tok = tiny_model.tokenizer

    def spell(text: str) -> tuple[int, ...]:
        return tuple(tok.encode(text, add_special_tokens=False))

    first, result, second = "héllo 漢", " [an API result with STOP in it] ", "字 🙂 enSTOPx"
    segments = [
        Segment(len(spell(first)), ApiCall("sim", duration=0.0, result_token_ids=spell(result)), spell(first)),
        Segment(len(spell(second)), token_ids=spell(second)),
    ]
    scripted = engine.add_request([5, 6], SamplingParams(stop=("STOP",), ignore_eos=True), segments=segments)
    sampled = engine.add_request([7, 8, 9], SamplingParams(max_tokens=12, ignore_eos=True, temperature=1.0, seed=3))
    texts, token_ids, outputs, ends = defaultdict(str), defaultdict(list), {}, Counter()
    while engine.has_unfinished_requests():
        for delta in engine.step_deltas():
            texts[delta.req_id] += delta.text
            token_ids[delta.req_id] += delta.token_ids
            if delta.finished:
                outputs[delta.req_id] = delta.output
                ends[delta.req_id] += 1
        engine.wait_for_work()
    assert ends == {scripted: 1, sampled: 1}
    assert texts[scripted] == outputs[scripted].text == first + result + "字 🙂 en"
    assert outputs[scripted].stop_reason == "STOP" and outputs[scripted].num_api_calls == 1
    for req_id in (scripted, sampled):
        assert token_ids[req_id] == outputs[req_id].token_ids
    assert texts[sampled] == outputs[sampled].text and len(outputs[sampled].token_ids) == 12
