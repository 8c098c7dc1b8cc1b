"""Page classification: which pfns are present in the vmcore and which are dumpable.

Dump level is makedumpfile's bitmask. Zero pages (bit 1) are found while copying, by the page
pipeline; the other classes need struct page data from the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .vmcore import PhysicalMemory

DL_ZERO = 1
DL_CACHE = 2
DL_CACHE_PRIVATE = 4
DL_USER = 8
DL_FREE = 16
MAX_DUMP_LEVEL = 31

# pfns per classification window: 4 Mi pfns = 512 KiB per bitmap (makedumpfile allows up to
# 4 MiB of bitmap per cycle). Windows are multiples of 8 so each bitmap window is whole bytes.
WINDOW_PFNS = 1 << 22


@dataclass
class PageCounts:
    """Pages per class, as reported in the summary and by --info."""

    present: int = 0
    zero: int = 0
    cache: int = 0
    cache_private: int = 0
    user: int = 0
    free: int = 0
    written: int = 0
    notes: list[str] = field(default_factory=list)


class PageClassifier:
    """Builds the 1st (present) and 2nd (dumpable) bitmaps window by window."""

    def __init__(self, memory: PhysicalMemory, dump_level: int) -> None:
        self.memory = memory
        self.dump_level = dump_level
        self.unapplied_levels = dump_level & ~DL_ZERO

    def windows(self) -> list[tuple[int, int]]:
        total = self.memory.max_mapnr
        return [(start, min(start + WINDOW_PFNS, total)) for start in range(0, total, WINDOW_PFNS)]

    def present_bitmap(self, start: int, end: int) -> bytearray:
        """Bit (pfn - start) set for each pfn in [start, end) that some PT_LOAD holds."""
        bitmap = bytearray((end - start + 7) // 8)
        for run in self.memory.runs:
            lo, hi = max(run.start_pfn, start), min(run.end_pfn, end)
            if lo < hi:
                _set_bits(bitmap, lo - start, hi - start)
        for pfn in self.memory.partial_pfns:
            if start <= pfn < end:
                _set_bits(bitmap, pfn - start, pfn - start + 1)
        return bitmap

    def dumpable_bitmap(self, start: int, end: int) -> bytearray:
        """Bit set for each pfn in [start, end) the dump keeps (zero pages still included)."""
        return self.present_bitmap(start, end)


def _set_bits(bitmap: bytearray, lo: int, hi: int) -> None:
    """Set bits [lo, hi) of an LSB-first bitmap, whole bytes at a time in the middle."""
    while lo < hi and lo & 7:
        bitmap[lo >> 3] |= 1 << (lo & 7)
        lo += 1
    full_end = hi & ~7
    if lo < full_end:
        bitmap[lo >> 3:full_end >> 3] = b"\xff" * ((full_end - lo) >> 3)
        lo = full_end
    while lo < hi:
        bitmap[lo >> 3] |= 1 << (lo & 7)
        lo += 1
