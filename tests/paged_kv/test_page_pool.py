"""The page pool never leaks or double-owns a page (property tests)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lamps_jax.paged_kv.page_pool import PADDING_PAGE, OutOfPagesError, PagePool


def check_owners(pool: PagePool, owners: list[list[int]]) -> None:
    """The pool's invariants hold and every page's ref count is its number of owners."""
    pool.check_invariants()
    counts = Counter(page for held in owners for page in held)
    assert PADDING_PAGE not in counts
    assert all(pool.ref_count(p) == c for p, c in counts.items())
    assert pool.num_free == pool.num_usable - len(counts)


def free_all(pool: PagePool, owners: list[list[int]]) -> None:
    for held in owners:
        pool.free(held)
    pool.check_invariants()
    assert pool.num_free == pool.num_usable


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
        check_owners(pool, owners)
    free_all(pool, owners)


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


cache_operations = st.lists(
    st.tuples(
        st.sampled_from(["alloc", "free", "share", "register", "take"]),
        st.integers(0, 6),
        st.integers(0, 10_000),
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(num_pages=st.integers(2, 24), ops=cache_operations)
def test_prefix_cache_never_leaks_double_owns_or_evicts_a_page_in_use(num_pages: int, ops) -> None:
    pool = PagePool(num_pages)
    owners: list[list[int]] = []
    contents: dict[int, int] = {}  # page -> the hash it was registered under (what it holds)
    for op, n, pick in ops:
        if op == "alloc" and pool.can_allocate(n):
            pages = pool.allocate(n)
            for page in pages:
                contents.pop(page, None)  # overwritten
            owners.append(pages)
        elif op == "take":
            wanted = [pick % 7 + i for i in range(n)]  # hashes of a chained prefix
            pages = pool.take_cached(wanted)
            assert all(contents[p] == h for p, h in zip(pages, wanted))  # a hit holds exactly those tokens
            owners.append(pages)
        elif owners:
            held = owners[pick % len(owners)]
            if op == "free":
                pool.free(held)
                owners.remove(held)
            elif op == "share":
                pool.share(held)
                owners.append(list(held))
            elif held:
                page = held[pick % len(held)]
                if page not in contents and (pick % 7) not in contents.values():
                    pool.register(page, pick % 7)
                    contents[page] = pick % 7
        check_owners(pool, owners)
    free_all(pool, owners)


def test_uncached_pages_are_reused_before_cached_ones_and_the_oldest_cached_first() -> None:
    pool = PagePool(6)  # pages 1..5
    a, b, c = pool.allocate(1), pool.allocate(1), pool.allocate(1)
    pool.register(a[0], 10)
    pool.register(b[0], 20)
    pool.free(a)
    pool.free(b)
    pool.free(c)  # uncached: first in line
    assert pool.allocate(3) == [c[0], 4, 5]
    assert pool.take_cached([10]) == a  # still cached
    assert pool.allocate(1) == b  # the only free page: evicted, its hash forgotten
    assert pool.take_cached([20]) == [] and pool.num_cached == 1
