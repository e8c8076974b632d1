"""Wording of what the benchmarks print: counted nouns, and the files a command wrote."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def plural(count: int, noun: str, plural_noun: str | None = None) -> str:
    """``1 request``, ``2 requests`` (``plural_noun`` for irregular forms)."""
    return f"{count} {noun if count == 1 else plural_noun or noun + 's'}"


def print_written(paths: Iterable[Path]) -> None:
    """One ``wrote <path>`` line per file written."""
    for path in paths:
        print(f"wrote {path}")
