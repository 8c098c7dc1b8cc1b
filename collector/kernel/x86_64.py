"""x86_64: where the kernel image sits and how the crashed kernel's page tables translate.

The page tables are the crashed kernel's own, found through VMCOREINFO. Direct-map addresses
also translate through PT_LOAD (vaddr, paddr) pairs where the vmcore has them (kexec writes the
direct-map address into p_vaddr; QEMU's dump-guest-memory writes 0).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from functools import lru_cache

from ..source.elf import Segment
from ..source.vmcoreinfo import VmcoreInfo
from .memory import KernelMemory, MemoryImage, TranslationError

# Kernel text and data are mapped at __START_KERNEL_map + (paddr - phys_base).
START_KERNEL_MAP = 0xFFFFFFFF80000000
# Where kernel space starts with 4-level paging: a pointer below it is not to kernel data.
KERNEL_SPACE_START = 0xFFFF800000000000

PTE_PRESENT = 0x1
PTE_PSE = 0x80                  # a PUD or PMD entry that maps a 1 GiB or 2 MiB page
PTE_PFN_MASK = 0x000FFFFFFFFFF000
PAGE_SHIFT = 12
ENTRY_SHIFTS_5_LEVEL = (48, 39, 30, 21, 12)
_U64 = struct.Struct("<Q")


def kernel_image_paddr(vaddr: int, phys_base: int) -> int:
    """Physical address of a kernel-image address (text, data: what SYMBOL() names)."""
    return vaddr - START_KERNEL_MAP + phys_base


def kernel_symbol_paddr(vaddr: int, phys_base: int) -> int | None:
    """kernel_image_paddr of a symbol's address, None if the address is outside the image."""
    return kernel_image_paddr(vaddr, phys_base) if vaddr >= START_KERNEL_MAP else None


def phys_base_of(segments: Sequence[Segment]) -> int:
    """phys_base derived from the kernel-text PT_LOAD (kexec writes one), else 0."""
    for seg in segments:
        if seg.vaddr >= START_KERNEL_MAP:
            return seg.paddr - kernel_image_paddr(seg.vaddr, 0)
    return 0


def vmcoreinfo_repairs(info: VmcoreInfo) -> list[tuple[str, str, str]]:
    """(key, value, where the value comes from) for VMCOREINFO lines readers need and can be
    restored: swapper_pg_dir and init_top_pgt are the same table on x86_64."""
    if "swapper_pg_dir" not in info.symbols and "init_top_pgt" in info.symbols:
        return [("SYMBOL(swapper_pg_dir)", f"{info.symbols['init_top_pgt']:x}", "from SYMBOL(init_top_pgt)")]
    return []


class PageTables(KernelMemory):
    """Reads the crashed kernel's virtual addresses (4- and 5-level paging)."""

    kernel_space_start = KERNEL_SPACE_START

    def __init__(self, image: MemoryImage, info: VmcoreInfo) -> None:
        top = info.symbols.get("init_top_pgt", info.symbols.get("swapper_pg_dir"))
        if top is None:
            raise TranslationError("VMCOREINFO has no SYMBOL(init_top_pgt)")
        self.memory = image.memory
        self.top_table = kernel_image_paddr(top, image.phys_base)
        # 5-level paging (CONFIG_X86_5LEVEL, Linux 4.14+); VMCOREINFO reports it since 4.17.
        self.levels = 5 if info.numbers.get("pgtable_l5_enabled", 0) == 1 else 4
        # AMD SME sets the encryption bit in page table entries (Linux 4.14+).
        self.entry_mask = PTE_PFN_MASK & ~info.numbers.get("sme_mask", 0)
        self.direct_map = sorted(
            (seg.vaddr, seg.vaddr + seg.filesz, seg.paddr) for seg in image.segments
            if seg.vaddr and seg.vaddr < START_KERNEL_MAP)
        # Walks repeat the upper levels' entries; one cache per instance, dropped with it.
        self._entry = lru_cache(maxsize=4096)(self._read_entry)

    def _read_entry(self, table: int, index: int) -> int:
        return int(_U64.unpack(self.memory.read(table + index * 8, 8))[0])

    def translate(self, vaddr: int) -> tuple[int, int]:
        for start, end, paddr in self.direct_map:
            if start <= vaddr < end:
                return paddr + vaddr - start, end - vaddr
        table = self.top_table
        shifts = ENTRY_SHIFTS_5_LEVEL[5 - self.levels:]
        for shift in shifts:
            entry = self._entry(table, (vaddr >> shift) & 0x1FF)
            if not entry & PTE_PRESENT:
                raise TranslationError(f"{vaddr:#x} is not mapped")
            base = entry & self.entry_mask
            leaf = shift == PAGE_SHIFT or (entry & PTE_PSE and shift in (30, 21))
            if leaf:
                size = 1 << shift
                offset = vaddr & (size - 1)
                return (base & ~(size - 1)) + offset, size - offset
            table = base
        raise AssertionError("unreachable: the PTE level is always a leaf")
