"""Host-side allocator of KV pages (pure Python, no JAX).

Pages are integers in [1, num_pages); page 0 is reserved as the padding page that padded tokens
write to and padded page-table slots point at, so it is never handed out. Pages carry reference
counts so a later prefix cache can share them; a page returns to the free list when its count
drops to zero. Misuse (freeing a free page, allocating more than is free) raises instead of
corrupting the pool.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

PADDING_PAGE = 0


class OutOfPagesError(RuntimeError):
    """More pages were asked for than are free."""


class PagePool:
    def __init__(self, num_pages: int) -> None:
        if num_pages < 2:
            raise ValueError(f"a page pool needs >= 2 pages (page 0 is reserved), got {num_pages}")
        self.num_pages = num_pages
        self._free: deque[int] = deque(range(1, num_pages))
        self._ref_counts = [0] * num_pages

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_usable(self) -> int:
        """Pages a single request could ever hold (all but the padding page)."""
        return self.num_pages - 1

    def can_allocate(self, num: int) -> bool:
        return num <= len(self._free)

    def allocate(self, num: int) -> list[int]:
        if num < 0:
            raise ValueError(f"cannot allocate {num} pages")
        if num > len(self._free):
            raise OutOfPagesError(f"asked for {num} pages, {len(self._free)} free")
        pages = [self._free.popleft() for _ in range(num)]
        for page in pages:
            self._ref_counts[page] = 1
        return pages

    def share(self, pages: Iterable[int]) -> None:
        """Adds an owner to pages that are already allocated."""
        for page in pages:
            self._check_owned(page)
            self._ref_counts[page] += 1

    def free(self, pages: Iterable[int]) -> None:
        """Drops one owner of each page; pages with no owner left return to the free list."""
        for page in pages:
            self._check_owned(page)
            self._ref_counts[page] -= 1
            if self._ref_counts[page] == 0:
                self._free.append(page)

    def ref_count(self, page: int) -> int:
        return self._ref_counts[page]

    def _check_owned(self, page: int) -> None:
        if not 0 < page < self.num_pages:
            raise ValueError(f"page {page} is not an allocatable page of this pool")
        if self._ref_counts[page] == 0:
            raise ValueError(f"page {page} is not allocated (double free?)")

    def check_invariants(self) -> None:
        """Every page is either free (count 0, listed once) or owned (count > 0, not listed)."""
        free = set(self._free)
        if len(free) != len(self._free):
            raise AssertionError("a page is on the free list twice")
        if PADDING_PAGE in free or self._ref_counts[PADDING_PAGE] != 0:
            raise AssertionError("the padding page was handed out")
        for page in range(1, self.num_pages):
            if (self._ref_counts[page] == 0) != (page in free):
                raise AssertionError(f"page {page}: ref count {self._ref_counts[page]} disagrees with free list")
