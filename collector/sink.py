"""Where format writers put bytes. Formats see only this; targets implement it."""

from __future__ import annotations

from typing import Protocol


class Sink(Protocol):
    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write all of ``data`` at ``offset``; raises OSError (ENOSPC, EIO, ...) on failure.

        The caller never changes ``data`` afterwards: the manifest's hashing (integrity.py)
        keeps a view of it until its chunk is hashed (tests/test_integrity.py checks the
        writers keep to this)."""

    def reserve(self, offset: int, length: int) -> None:
        """Best-effort: allocate space for [offset, offset+length) now, so that metadata written
        there later does not fail when the target fills up with page data."""
