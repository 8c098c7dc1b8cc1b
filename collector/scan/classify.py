"""Page classification: which pfns are present in the vmcore and which are dumpable.

Dump level is makedumpfile's bitmask. Zero pages (bit 1) are found while copying, by the page
pipeline; the other classes come from each page's struct page, scanned a section at a time by
the page scanner (_fastcopy.classify_pages). Whatever cannot be decided from sound kernel data
is kept, with one warning naming the reason.
"""

from __future__ import annotations

import contextlib
from array import array
from collections.abc import Callable
from dataclasses import dataclass

from .. import fastcopy
from ..dump_level import DL_ZERO, MAX_DUMP_LEVEL, STRUCT_PAGE_LEVELS
from ..kernel.arch import kernel_memory
from ..kernel.kallsyms import Kallsyms
from ..kernel.memory import TranslationError
from ..kernel.mm import MemMapError, SectionMemMap
from ..kernel.page_encoding import (
    CLASS_NAMES,
    COUNT_BAD_ORDER,
    NUM_COUNTS,
    PARAM_INDEX,
    PageEncoding,
)
from ..kernel.slab import FirstSlabCaches, first_slab_caches
from ..source.vmcore import PhysicalMemory, Vmcore

__all__ = ["DL_ZERO", "MAX_DUMP_LEVEL", "PageClassifier", "PageCounts"]

# pfns per classification window: 4 Mi pfns = 512 KiB per bitmap (makedumpfile allows up to
# 4 MiB of bitmap per cycle). A multiple of the section size, so no window splits a section.
WINDOW_PFNS = 1 << 22
# The bitmaps of the first windows (2nd, slab, first slab) are kept for the page pass, up to
# this much (the pfns of 42 GiB of 4 KiB pages); past it they are built again from the struct
# pages, as makedumpfile's cyclic mode does, so memory stays bounded on any machine.
BITMAP_CACHE_BYTES = 4 << 20


@dataclass
class PageCounts:
    """Pages per class, as reported in the summary and by --info."""

    present: int = 0
    zero: int = 0
    cache: int = 0
    cache_private: int = 0
    user: int = 0
    free: int = 0
    hwpoison: int = 0
    offline: int = 0
    written: int = 0

    def add(self, class_counts: array) -> None:
        for name, n in zip(CLASS_NAMES, class_counts):
            setattr(self, name, getattr(self, name) + n)


class PageClassifier:
    """Builds the 1st (present) and 2nd (dumpable) bitmaps window by window."""

    def __init__(self, vmcore: Vmcore, dump_level: int, warn: Callable[[str], None]) -> None:
        self.memory: PhysicalMemory = vmcore.memory
        self.dump_level = dump_level
        self._warn = warn
        self._warned: set[str] = set()
        self.mem_map: SectionMemMap | None = None
        self.params: array | None = None
        self.first_slabs: FirstSlabCaches | None = None
        # The kernel's symbol table, for the value order too (scan/value.py); None: none usable.
        self.kallsyms: Kallsyms | None = None
        self._cached: dict[tuple[int, int], tuple[bytes, bytes, bytes]] = {}
        self._cached_bytes = 0
        self._setup_struct_pages(vmcore)

    def _setup_struct_pages(self, vmcore: Vmcore) -> None:
        """Struct pages are scanned at every dump level, as makedumpfile does whenever the kernel
        exports PG_hwpoison: hwpoisoned and offline pages are never dumped."""
        kept = "page cache, user and free pages are kept" if self.dump_level & STRUCT_PAGE_LEVELS else ""
        if vmcore.vmcoreinfo is None:
            if kept:
                self.warn_once(f"no VMCOREINFO: {kept}")
            return
        try:
            kernel = kernel_memory(vmcore)
            with contextlib.suppress(TranslationError):  # none (before Linux 6.0), or unreadable
                self.kallsyms = Kallsyms(kernel, vmcore.vmcoreinfo)
            self.mem_map = SectionMemMap(kernel, vmcore.vmcoreinfo, vmcore.page_size)
        except (MemMapError, TranslationError) as e:
            self.warn_once(f"cannot find struct pages ({e}){': ' + kept if kept else ''}")
            return
        encoding = PageEncoding.from_vmcoreinfo(vmcore.vmcoreinfo)
        for bit, reason in sorted(encoding.disabled.items()):
            if self.dump_level & bit:
                self.warn_once(f"dump level bit {bit} not applied: {reason}; those pages are kept")
        self.params = encoding.vector(self.dump_level)
        compound_head = self.params[PARAM_INDEX["off_compound_head"]]
        if compound_head >= 0:
            if self.kallsyms is not None:
                self.first_slabs = first_slab_caches(self.kallsyms, kernel, self.mem_map, vmcore.page_size,
                                                     compound_head)

    def warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            self._warn(f"warning: {message}")

    def windows(self) -> list[tuple[int, int]]:
        total = self.memory.max_mapnr
        return [(start, min(start + WINDOW_PFNS, total)) for start in range(0, total, WINDOW_PFNS)]

    def present_bitmap(self, start: int, end: int) -> bytearray:
        """Bit (pfn - start) set for each pfn in [start, end) that the input has: some PT_LOAD
        holds it, or a kdump input's 1st bitmap names it (makedumpfile copies that bitmap)."""
        return self.memory.present_bitmap(start, end)

    def dumpable_bitmap(self, start: int, end: int, counts: PageCounts | None = None) -> bytearray:
        """Bit set for each pfn in [start, end) the dump keeps (zero pages still included).

        Pages excluded per class are added to ``counts`` when given (once per dump).
        """
        return bytearray(self._classified(start, end, counts)[0])

    def slab_bitmap(self, start: int, end: int) -> bytes:
        """Bit set for each kept pfn in [start, end) that is a slab page (struct page says so)
        but of none of the first slab caches; no bit set where struct pages are not read."""
        return self._classified(start, end, None)[1]

    def first_slab_bitmap(self, start: int, end: int) -> bytes:
        """Bit set for each kept pfn in [start, end) of a slab of the first slab caches
        (kernel/slab.py: task structs and what hangs off them)."""
        return self._classified(start, end, None)[2]

    def _classified(self, start: int, end: int, counts: PageCounts | None) -> tuple[bytes, bytes, bytes]:
        cached = self._cached.get((start, end))
        if cached is not None:
            return cached
        bitmap = self.memory.data_bitmap(start, end)  # only pages whose data the input holds
        slab, first_slab = bytearray(len(bitmap)), bytearray(len(bitmap))
        if self.mem_map is None or self.params is None:
            return bytes(bitmap), bytes(slab), bytes(first_slab)
        first = self.first_slabs
        first_caches, slab_cache_offset = (first.caches, first.slab_cache_offset) if first else (array("Q"), -1)
        class_counts = array("q", bytes(8 * NUM_COUNTS))
        section_pages = self.mem_map.pages_per_section
        for section_start in range(start - start % section_pages, end, section_pages):
            lo, hi = max(section_start, start), min(section_start + section_pages, end)
            if not fastcopy.count_bits(bitmap, lo - start, hi - start):
                continue  # a hole: no page of it is in the dump anyway
            try:
                pages = self.mem_map.struct_pages(lo, hi - lo)
            except MemMapError as e:
                self.warn_once(f"{e}: its pages are kept")
                continue
            try:
                fastcopy.classify_pages(pages.view, hi - lo, self.params, bitmap, lo - start, lo, class_counts,
                                        slab, first_slab, first_caches, slab_cache_offset)
            finally:
                pages.close()
        if class_counts[COUNT_BAD_ORDER]:
            self.warn_once(f"free page block with an implausible order: kept "
                           f"({class_counts[COUNT_BAD_ORDER]} in window {start:#x})")
        if counts is not None:
            counts.add(class_counts)
        result = bytes(bitmap), bytes(slab), bytes(first_slab)
        if self._cached_bytes + 3 * len(bitmap) <= BITMAP_CACHE_BYTES:
            self._cached[(start, end)] = result
            self._cached_bytes += 3 * len(bitmap)
        return result
