"""Prefix caching for one request: chained page hashes, taking cached pages, registering full ones.

A page's hash covers its tokens and, through its parent's hash, every token before it (and a salt
naming the model), so equal hashes mean equal KV. Hashes are computed once per page and kept on the
request (``page_hashes``): a request's tokens only grow, so they stay valid across discards,
preemptions and swaps. Only pages whose every token has been computed are registered.
"""

from __future__ import annotations

from lamps_jax.paged_kv.page_pool import PagePool
from lamps_jax.request import Request


def extend_page_hashes(request: Request, num_pages: int, page_size: int, salt: int) -> None:
    """Hashes of the request's first ``num_pages`` full pages (computed once, kept on the request)."""
    hashes = request.page_hashes
    for index in range(len(hashes), num_pages):
        parent = hashes[-1] if hashes else salt
        hashes.append(hash((parent, tuple(request.tokens(index * page_size, (index + 1) * page_size)))))


def take_cached_prefix(pool: PagePool, request: Request, page_size: int, salt: int) -> int:
    """Gives a request that holds nothing the cached pages of its longest cached prefix (at least its
    last token is left to compute: it yields the next one); returns how many full pages it looked up."""
    num_pages = (request.num_tokens - 1) // page_size
    extend_page_hashes(request, num_pages, page_size, salt)
    request.page_ids = pool.take_cached(request.page_hashes[:num_pages])
    request.num_registered_pages = len(request.page_ids)
    request.num_computed_tokens = len(request.page_ids) * page_size
    return num_pages


def register_full_pages(pool: PagePool, request: Request, page_size: int, salt: int) -> None:
    """Registers the request's pages that became full and computed since the last call."""
    num_full = min(request.num_computed_tokens // page_size, len(request.page_ids))
    if num_full <= request.num_registered_pages:
        return
    extend_page_hashes(request, num_full, page_size, salt)
    for index in range(request.num_registered_pages, num_full):
        pool.register(request.page_ids[index], request.page_hashes[index])
    request.num_registered_pages = num_full
