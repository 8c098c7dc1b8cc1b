"""x86_64: where the kernel image sits and how the crashed kernel's page tables translate.

The page tables are the crashed kernel's own, found through VMCOREINFO. Direct-map addresses
also translate through PT_LOAD (vaddr, paddr) pairs where the vmcore has them (kexec writes the
direct-map address into p_vaddr; QEMU's dump-guest-memory writes 0).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
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


def kernel_symbol_paddr(vaddr: int, phys_base: int, info: VmcoreInfo | None) -> int | None:
    """kernel_image_paddr of a symbol's address, None if the address is outside the image."""
    return kernel_image_paddr(vaddr, phys_base) if vaddr >= START_KERNEL_MAP else None


def phys_base_of(segments: Sequence[Segment], info: VmcoreInfo | None) -> int:
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


# What a dump cut short needs first (scan/value.py) --------------------------------------------

PTE_RW = 0x2
PTE_NX = 1 << 63
# THREAD_SIZE: 16 KiB (THREAD_SIZE_ORDER 2) unless KASAN doubles it; a CPU's stack pointer
# lies in one such aligned block (the task's stack, or an IRQ/exception stack).
THREAD_SIZE = 16 << 10
# The NT_PRSTATUS register (kernel/triage.py's names for struct user_regs_struct) a CPU's stack is found by.
STACK_POINTER = "rsp"
# The kernel image's mapping, __START_KERNEL_map + KERNEL_IMAGE_SIZE (1 GiB with KASLR).
KERNEL_IMAGE_END = START_KERNEL_MAP + (1 << 30)


@dataclass
class KernelPages:
    """Pages found through the crashed kernel's page tables: the kernel half's page-table pages
    and the kernel image's pages by how the kernel itself maps them (CONFIG_STRICT_KERNEL_RWX:
    text executable, rodata read-only, data and bss writable)."""

    tables: list[int] = field(default_factory=list)
    image_writable: list[int] = field(default_factory=list)
    image_read_only: list[int] = field(default_factory=list)
    image_text: list[int] = field(default_factory=list)


def kernel_pages(tables: KernelMemory) -> KernelPages:
    """Walk the kernel half of the top table (the user half is per process and not needed to
    read the kernel)."""
    if not isinstance(tables, PageTables):
        raise TranslationError("not x86_64 page tables")
    found = KernelPages()
    shifts = ENTRY_SHIFTS_5_LEVEL[5 - tables.levels:]
    table_entries = struct.Struct("<512Q")

    seen: set[int] = set()

    def walk(table: int, depth: int, vaddr: int, writable: bool, executable: bool) -> None:
        if table in seen and depth:  # upper levels share tables (the image's, the fixmap's)
            return
        seen.add(table)
        found.tables.append(table >> PAGE_SHIFT)
        shift = shifts[depth]
        last = depth + 1 == len(shifts)
        if depth == 0:
            vaddr = 0xFFFF << 48 if tables.levels == 4 else 0xFF << 56
        span = 512 << shift
        if last and not (vaddr < KERNEL_IMAGE_END and vaddr + span > START_KERNEL_MAP):
            return  # a table of 4 KiB pages outside the image: the table itself is what counts
        entries = table_entries.unpack(tables.memory.read(table, 4096))
        first = 256 if depth == 0 else 0
        in_image = vaddr < KERNEL_IMAGE_END and vaddr + span > START_KERNEL_MAP
        for index in range(first, 512) if in_image else [i for i in range(first, 512)
                                                         if entries[i] & PTE_PRESENT and not entries[i] & PTE_PSE]:
            entry = entries[index]
            if not entry & PTE_PRESENT:
                continue
            address = vaddr | index << shift
            rw, x = writable and bool(entry & PTE_RW), executable and not entry & PTE_NX
            base = entry & tables.entry_mask
            if last or (entry & PTE_PSE and shift in (30, 21)):
                if START_KERNEL_MAP <= address < KERNEL_IMAGE_END:
                    pages = range(base >> PAGE_SHIFT, (base + (1 << shift)) >> PAGE_SHIFT)
                    (found.image_text if x else found.image_writable if rw else found.image_read_only).extend(pages)
                continue
            walk(base, depth + 1, address, rw, x)

    walk(tables.top_table, 0, 0, True, True)
    return found


def code_address(word: int, info: VmcoreInfo) -> int:
    """A code address as a stack holds it: as it is on x86_64."""
    return word


def stack_pages(tables: KernelMemory, stack_pointer: int) -> list[int]:
    """The pfns of the THREAD_SIZE block holding ``stack_pointer`` that are mapped."""
    base = stack_pointer & ~(THREAD_SIZE - 1)
    return sorted(tables.mapped_pfns(base, base + THREAD_SIZE, 1 << PAGE_SHIFT))
