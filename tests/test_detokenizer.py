"""Incremental detokenizing: deltas add up to the whole decode, multi-byte characters and stop strings
split across tokens, API results never stop a request (byte tokenizer: every byte is a token)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lamps_jax.detokenizer import OutputText
from lamps_jax.model.tokenizer import byte_tokenizer

TOKENIZER = byte_tokenizer(512)


def decode(token_ids: list[int]) -> str:
    return TOKENIZER.decode(token_ids, skip_special_tokens=True)


def encode(text: str) -> list[int]:
    return TOKENIZER.encode(text, add_special_tokens=False)


def stream(pieces: list[list[int]], stops: tuple[str, ...] = (), results: dict[int, list[int]] | None = None):
    """Feeds ``pieces`` one step at a time (``results[i]``: an API result appended before piece i) and
    streams what ``stream_end`` allows after each, the rest at the end, as the output processor does."""
    text, token_ids, result_end, deltas, sent = OutputText(decode, stops), [], 0, [], 0
    for i, piece in enumerate(pieces):
        if results and i in results:
            token_ids += results[i]
            result_end = len(token_ids)
        token_ids += piece
        text.update(token_ids, result_end)
        deltas.append(text.text[sent : text.stream_end()])
        sent += len(deltas[-1])
        if text.stop_at is not None:
            break
    text.finish(token_ids)
    deltas.append(text.final_text[sent:])
    return text, token_ids, deltas


MULTI_BYTE = "héllo 漢字 🙂 naïve"


def test_multi_byte_characters_split_over_tokens_come_out_whole() -> None:
    token_ids = encode(MULTI_BYTE)
    assert len(token_ids) > len(MULTI_BYTE)  # several bytes per character
    text, _, deltas = stream([[t] for t in token_ids])
    assert "".join(deltas) == text.final_text == MULTI_BYTE
    assert all("\ufffd" not in d for d in deltas)  # never half a character


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=40), st.lists(st.integers(1, 4), min_size=1, max_size=40))
def test_deltas_concatenate_to_the_whole_decode(text: str, sizes: list[int]) -> None:
    token_ids = encode(text)
    pieces, at = [], 0
    for size in sizes * (len(token_ids) // len(sizes) + 1):
        if at >= len(token_ids):
            break
        pieces.append(token_ids[at : at + size])
        at += size
    out, fed, deltas = stream(pieces)
    assert "".join(deltas) == out.final_text == decode(fed) == text


def test_a_stop_string_split_across_tokens_ends_the_text_before_it() -> None:
    token_ids = encode("abc STOP def")
    text, _, deltas = stream([[t] for t in token_ids], stops=("STOP", "zzz"))
    assert text.stop_string == "STOP" and text.final_text == "abc " == "".join(deltas)


def test_the_earliest_of_several_stop_strings_wins() -> None:
    text, _, _ = stream([encode("one two three")], stops=("three", "two"))
    assert (text.stop_string, text.final_text) == ("two", "one ")


def test_a_stop_string_inside_an_api_result_does_not_stop() -> None:
    pieces = [encode("x"), encode("y"), encode("zSTOPw")]
    text, _, deltas = stream(pieces, stops=("STOP",), results={1: encode("[STOP result]")})
    assert "".join(deltas[:2]) == "x[STOP result]"  # the result streams whole; "y" could begin a stop string
    assert text.stop_at is not None and text.final_text == "x[STOP result]yz"
    assert text.text.count("STOP") == 2


def test_a_stop_string_straddling_the_end_of_a_result_is_not_the_models() -> None:
    pieces = [encode("a"), encode("OP and more")]
    text, _, _ = stream(pieces, stops=("STOP",), results={1: encode("ST")})
    assert text.stop_at is None and text.final_text == "aSTOP and more"
