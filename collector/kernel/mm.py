"""Where the crashed kernel keeps struct page: SPARSEMEM sections, from VMCOREINFO.

Each memory section (2^SECTION_SIZE_BITS bytes) has a mem_map. ``section_mem_map`` holds
``mem_map - section_start_pfn`` (in struct pages) with flag bits in its low bits, so the struct
page of any pfn in the section is ``(section_mem_map & SECTION_MAP_MASK) + pfn * SIZE(page)``.
"""

from __future__ import annotations

import struct

from ..source.vmcore import MappedBytes, PhysicalMemory
from ..source.vmcoreinfo import VmcoreInfo
from .memory import KernelMemory, TranslationError

# section_mem_map flag bits: SECTION_MARKED_PRESENT, SECTION_HAS_MEM_MAP, SECTION_IS_ONLINE,
# SECTION_IS_EARLY, SECTION_TAINT_ZONE_DEVICE (5 bits as of Linux 5.12; makedumpfile masks the same).
SECTION_HAS_MEM_MAP = 0x2
SECTION_MAP_MASK = ~0x1F & 0xFFFFFFFFFFFFFFFF


class MemMapError(Exception):
    """The kernel data needed to find struct pages is missing or implausible."""


class SectionMemMap:
    """Finds and reads the struct pages of pfn ranges (SPARSEMEM_EXTREME, 64-bit little-endian)."""

    def __init__(self, kernel: KernelMemory, info: VmcoreInfo, page_size: int) -> None:
        try:
            self.section_bits = info.numbers["SECTION_SIZE_BITS"]
            self.page_struct_size = info.sizes["page"]
            self.section_struct_size = info.sizes["mem_section"]
            self.map_offset = info.offsets["mem_section.section_mem_map"]
            self.roots_address = info.symbols["mem_section"]
            self.nr_roots = info.lengths["mem_section"]
        except KeyError as e:
            raise MemMapError(f"VMCOREINFO lacks {e.args[0]}") from None
        self.kernel = kernel
        page_shift = page_size.bit_length() - 1
        self.pfn_shift = self.section_bits - page_shift
        if not 0 < self.pfn_shift < 40 or not 0 < self.section_struct_size <= page_size:
            raise MemMapError("implausible SECTION_SIZE_BITS or SIZE(mem_section)")
        self.pages_per_section = 1 << self.pfn_shift
        # SPARSEMEM_EXTREME: SYMBOL(mem_section) is the array of root pointers, each root one
        # page of struct mem_section (since Linux 4.15 VMCOREINFO gives the array, not &pointer).
        self.sections_per_root = page_size // self.section_struct_size
        self._roots: dict[int, bytes | None] = {}

    def _root(self, index: int) -> bytes | None:
        if index not in self._roots:
            try:
                pointer = self.kernel.read_u64(self.roots_address + index * 8)
                self._roots[index] = (self.kernel.read(pointer, self.sections_per_root * self.section_struct_size)
                                      if pointer >= self.kernel.kernel_space_start else None)
            except TranslationError:
                self._roots[index] = None
        return self._roots[index]

    def mem_map_base(self, section: int) -> int | None:
        """``section_mem_map`` decoded: add pfn * SIZE(page) for a struct page; None if absent."""
        root_index, slot = divmod(section, self.sections_per_root)
        if root_index >= self.nr_roots:
            return None
        root = self._root(root_index)
        if root is None:
            return None
        (coded,) = struct.unpack_from("<Q", root, slot * self.section_struct_size + self.map_offset)
        if not coded & SECTION_HAS_MEM_MAP:
            return None
        return coded & SECTION_MAP_MASK

    def _struct_pages_vaddr(self, start_pfn: int) -> int:
        base = self.mem_map_base(start_pfn >> self.pfn_shift)
        if base is None:
            raise MemMapError(f"section of pfn {start_pfn:#x} has no mem_map")
        return (base + start_pfn * self.page_struct_size) & 0xFFFFFFFFFFFFFFFF

    def read_struct_pages(self, start_pfn: int, count: int) -> bytes:
        """The struct pages of pfns [start_pfn, start_pfn + count), all in one section."""
        try:
            return self.kernel.read(self._struct_pages_vaddr(start_pfn), count * self.page_struct_size)
        except TranslationError as e:
            raise MemMapError(f"struct pages of pfn {start_pfn:#x}: {e}") from None

    def struct_pages(self, start_pfn: int, count: int) -> MappedBytes:
        """The same bytes as read_struct_pages, mapped from the vmcore without a copy where
        they are physically contiguous in it (vmemmap maps a section's in one 2 MiB page);
        close() the result."""
        vaddr, length = self._struct_pages_vaddr(start_pfn), count * self.page_struct_size
        try:
            paddr, mapped = self.kernel.translate(vaddr)
        except TranslationError as e:
            raise MemMapError(f"struct pages of pfn {start_pfn:#x}: {e}") from None
        memory = self.kernel.memory
        if mapped >= length and isinstance(memory, PhysicalMemory):
            try:
                return memory.view(paddr, length)
            except TranslationError as e:  # a kdump input without that page of struct pages
                raise MemMapError(f"struct pages of pfn {start_pfn:#x}: {e}") from None
        return MappedBytes(memoryview(self.read_struct_pages(start_pfn, count)), None)
