"""The page pool never leaks or double-owns a page (property tests)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lamps_jax.paged_kv.page_pool import PADDING_PAGE, OutOfPagesError, PagePool

operations = st.lists(
    st.tuples(st.sampled_from(["alloc", "free", "share"]), st.integers(0, 12), st.integers(0, 10_000)),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(num_pages=st.integers(2, 40), ops=operations)
def test_random_allocate_free_share_keeps_invariants(num_pages: int, ops) -> None:
    pool = PagePool(num_pages)
    owners: list[list[int]] = []  # each entry: the pages one owner holds
    for op, n, pick in ops:
        if op == "alloc":
            if pool.can_allocate(n):
                owners.append(pool.allocate(n))
            else:
                with pytest.raises(OutOfPagesError):
                    pool.allocate(n)
        elif owners:
            held = owners[pick % len(owners)]
            if op == "free":
                pool.free(held)
                owners.remove(held)
            else:
                pool.share(held)
                owners.append(list(held))
        pool.check_invariants()
        counts: dict[int, int] = {}
        for held in owners:
            for page in held:
                counts[page] = counts.get(page, 0) + 1
        assert PADDING_PAGE not in counts
        assert all(pool.ref_count(p) == c for p, c in counts.items())
        assert pool.num_free == pool.num_usable - len(counts)
    for held in owners:
        pool.free(held)
    pool.check_invariants()
    assert pool.num_free == pool.num_usable


def test_double_free_and_foreign_pages_raise() -> None:
    pool = PagePool(4)
    pages = pool.allocate(2)
    pool.free(pages)
    with pytest.raises(ValueError, match="double free"):
        pool.free(pages[:1])
    with pytest.raises(ValueError, match="not an allocatable page"):
        pool.free([PADDING_PAGE])
    with pytest.raises(ValueError, match="not an allocatable page"):
        pool.share([99])
    pool.check_invariants()


def test_padding_page_is_never_handed_out() -> None:
    pool = PagePool(8)
    assert PADDING_PAGE not in pool.allocate(7)
    assert not pool.can_allocate(1)
