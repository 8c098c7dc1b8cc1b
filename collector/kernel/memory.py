"""Kernel virtual memory of the crashed kernel: x86_64 address translation over the vmcore.

The page tables are the crashed kernel's own, found through VMCOREINFO. Direct-map addresses
also translate through PT_LOAD (vaddr, paddr) pairs where the vmcore has them (kexec writes the
direct-map address into p_vaddr; QEMU's dump-guest-memory writes 0).
"""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import Protocol, Sequence

from ..source.elf import EM_X86_64
from ..source.vmcore import X86_64_START_KERNEL_MAP, Segment, kernel_image_paddr
from ..source.vmcoreinfo import VmcoreInfo

PTE_PRESENT = 0x1
PTE_PSE = 0x80                  # a PUD or PMD entry that maps a 1 GiB or 2 MiB page
PTE_PFN_MASK = 0x000FFFFFFFFFF000
PAGE_SHIFT = 12
ENTRY_SHIFTS_5_LEVEL = (48, 39, 30, 21, 12)
_U64 = struct.Struct("<Q")


class TranslationError(Exception):
    """A kernel virtual address that the crashed kernel's page tables do not map."""


class PhysicalReader(Protocol):
    def read(self, paddr: int, length: int) -> bytes:
        """Bytes of physical memory. A kdump file raises for pages it left out (excluded by the
        dump level): zeros there would look like real kernel data."""


class MemoryImage(Protocol):
    """What kernel address translation needs from a dump: an ELF vmcore (vmcore.Vmcore) or a
    kdump-compressed file (formats.kdump_image.KdumpImage)."""

    vmcoreinfo: VmcoreInfo | None
    e_machine: int
    memory: PhysicalReader

    @property
    def segments(self) -> Sequence[Segment]:
        """PT_LOADs whose p_vaddr gives direct-map translations; empty if the dump has none."""

    @property
    def phys_base(self) -> int: ...


class KernelMemory:
    """Reads the crashed kernel's virtual addresses (x86_64, 4- and 5-level paging)."""

    def __init__(self, vmcore: MemoryImage) -> None:
        info = vmcore.vmcoreinfo
        if info is None or vmcore.e_machine != EM_X86_64:
            raise TranslationError("kernel address translation needs VMCOREINFO of an x86_64 kernel")
        top = info.symbols.get("init_top_pgt", info.symbols.get("swapper_pg_dir"))
        if top is None:
            raise TranslationError("VMCOREINFO has no SYMBOL(init_top_pgt)")
        self.memory = vmcore.memory
        self.top_table = kernel_image_paddr(top, vmcore.phys_base)
        # 5-level paging (CONFIG_X86_5LEVEL, Linux 4.14+); VMCOREINFO reports it since 4.17.
        self.levels = 5 if info.numbers.get("pgtable_l5_enabled", 0) == 1 else 4
        # AMD SME sets the encryption bit in page table entries (Linux 4.14+).
        self.entry_mask = PTE_PFN_MASK & ~info.numbers.get("sme_mask", 0)
        self.direct_map = sorted(
            (seg.vaddr, seg.vaddr + seg.filesz, seg.paddr) for seg in vmcore.segments
            if seg.vaddr and seg.vaddr < X86_64_START_KERNEL_MAP)

    @lru_cache(maxsize=4096)
    def _entry(self, table: int, index: int) -> int:
        return _U64.unpack(self.memory.read(table + index * 8, 8))[0]

    def translate(self, vaddr: int) -> tuple[int, int]:
        """(physical address, bytes left in the mapping that holds it)."""
        for start, end, paddr in self.direct_map:
            if start <= vaddr < end:
                return paddr + vaddr - start, end - vaddr
        table = self.top_table
        shifts = ENTRY_SHIFTS_5_LEVEL[5 - self.levels:]
        for level, shift in enumerate(shifts):
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

    def read(self, vaddr: int, length: int) -> bytes:
        """Bytes at a kernel virtual address; TranslationError if any part is unmapped."""
        pieces = []
        while length > 0:
            paddr, mapped = self.translate(vaddr)
            chunk = min(length, mapped)
            pieces.append(self.memory.read(paddr, chunk))
            vaddr += chunk
            length -= chunk
        return b"".join(pieces)

    def read_u64(self, vaddr: int) -> int:
        return _U64.unpack(self.read(vaddr, 8))[0]
