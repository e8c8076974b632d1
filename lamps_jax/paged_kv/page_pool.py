"""Host-side allocator of KV pages with reference counts and a prefix cache (pure Python, no JAX).

Pages are integers in [1, num_pages); page 0 is reserved as the padding page that padded tokens
write to and padded page-table slots point at, so it is never handed out. A page is owned by every
request holding it (its reference count); at count zero it is free.

Prefix caching: a full page whose tokens are known can be registered under a hash of its tokens and
of every page before it (``register``). When freed, such a page keeps its contents and its hash, and
a later request whose tokens hash the same takes it back (``take_cached``) instead of recomputing.
Free pages form one queue in eviction order: uncached pages first, then cached ones from the least
recently freed; ``allocate`` takes from the front and forgets the hash of a cached page it reuses.
A page in use is never evicted. Misuse (freeing a free page, allocating more than is free) raises
instead of corrupting the pool.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

PADDING_PAGE = 0


class OutOfPagesError(RuntimeError):
    """More pages were asked for than are free."""


class PagePool:
    def __init__(self, num_pages: int) -> None:
        if num_pages < 2:
            raise ValueError(f"a page pool needs >= 2 pages (page 0 is reserved), got {num_pages}")
        self.num_pages = num_pages
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(1, num_pages))  # front = evicted first
        self._ref_counts = [0] * num_pages
        self._page_of_hash: dict[int, int] = {}
        self._hash_of_page: dict[int, int] = {}

    @property
    def num_free(self) -> int:
        """Pages that can be allocated now (cached free pages included: they are evicted on demand)."""
        return len(self._free)

    @property
    def num_usable(self) -> int:
        """Pages a single request could ever hold (all but the padding page)."""
        return self.num_pages - 1

    @property
    def num_cached(self) -> int:
        return len(self._page_of_hash)

    def can_allocate(self, num: int) -> bool:
        return num <= len(self._free)

    def allocate(self, num: int) -> list[int]:
        if num < 0:
            raise ValueError(f"cannot allocate {num} pages")
        if num > len(self._free):
            raise OutOfPagesError(f"asked for {num} pages, {len(self._free)} free")
        pages = []
        for _ in range(num):
            page, _ = self._free.popitem(last=False)
            self._forget(page)  # evicted: its contents are about to be overwritten
            self._ref_counts[page] = 1
            pages.append(page)
        return pages

    def share(self, pages: Iterable[int]) -> None:
        """Adds an owner to pages that are already allocated."""
        for page in pages:
            self._check_owned(page)
            self._ref_counts[page] += 1

    def free(self, pages: Iterable[int]) -> None:
        """Drops one owner of each page; a page with no owner left becomes free (cached ones keep their hash)."""
        for page in pages:
            self._check_owned(page)
            self._ref_counts[page] -= 1
            if self._ref_counts[page] == 0:
                self._free[page] = None
                if page not in self._hash_of_page:
                    self._free.move_to_end(page, last=False)  # nothing to keep: reused first

    def ref_count(self, page: int) -> int:
        return self._ref_counts[page]

    # ---- prefix cache ---------------------------------------------------------------------------
    def register(self, page: int, page_hash: int) -> None:
        """Marks an owned, full page as holding the tokens ``page_hash`` stands for (first page wins)."""
        self._check_owned(page)
        if page_hash not in self._page_of_hash and page not in self._hash_of_page:
            self._page_of_hash[page_hash] = page
            self._hash_of_page[page] = page_hash

    def take_cached(self, page_hashes: Iterable[int]) -> list[int]:
        """Takes (adds an owner to) the cached pages of the longest prefix of ``page_hashes``."""
        pages = []
        for page_hash in page_hashes:
            page = self._page_of_hash.get(page_hash)
            if page is None:
                break
            if self._ref_counts[page] == 0:
                del self._free[page]
            self._ref_counts[page] += 1
            pages.append(page)
        return pages

    def _forget(self, page: int) -> None:
        page_hash = self._hash_of_page.pop(page, None)
        if page_hash is not None:
            del self._page_of_hash[page_hash]

    # ---- checks ---------------------------------------------------------------------------------
    def _check_owned(self, page: int) -> None:
        if not 0 < page < self.num_pages:
            raise ValueError(f"page {page} is not an allocatable page of this pool")
        if self._ref_counts[page] == 0:
            raise ValueError(f"page {page} is not allocated (double free?)")

    def check_invariants(self) -> None:
        """Every page is either free (count 0, queued once) or owned (count > 0, not queued); the cache
        maps hashes and pages one to one."""
        if PADDING_PAGE in self._free or self._ref_counts[PADDING_PAGE] != 0:
            raise AssertionError("the padding page was handed out")
        for page in range(1, self.num_pages):
            if (self._ref_counts[page] == 0) != (page in self._free):
                raise AssertionError(f"page {page}: ref count {self._ref_counts[page]} disagrees with free list")
        if any(self._hash_of_page.get(page) != h for h, page in self._page_of_hash.items()):
            raise AssertionError("the prefix cache's hash and page maps disagree")
        if len(self._hash_of_page) != len(self._page_of_hash):
            raise AssertionError("a page is cached under two hashes")
