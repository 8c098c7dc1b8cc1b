"""Kernel virtual memory of the crashed kernel: what every architecture's translation offers.

The architecture modules (x86_64.py) translate through the crashed kernel's own page tables;
kernel.arch picks one from the dump's ELF machine.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol

from ..source.elf import Segment
from ..source.vmcoreinfo import VmcoreInfo

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

    # Read-only members: an implementation may hold a narrower type (a PhysicalMemory).
    @property
    def vmcoreinfo(self) -> VmcoreInfo | None: ...

    @property
    def e_machine(self) -> int: ...

    @property
    def memory(self) -> PhysicalReader: ...

    @property
    def segments(self) -> Sequence[Segment]:
        """PT_LOADs whose p_vaddr gives direct-map translations; empty if the dump has none."""

    @property
    def phys_base(self) -> int: ...


class KernelMemory(ABC):
    """Reads the crashed kernel's virtual addresses (an architecture module says how)."""

    memory: PhysicalReader
    kernel_space_start: int  # the lowest kernel virtual address: pointers below it are not kernel data

    @abstractmethod
    def translate(self, vaddr: int) -> tuple[int, int]:
        """(physical address, bytes left in the mapping that holds it); TranslationError if
        the address is not mapped."""

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
        return int(_U64.unpack(self.read(vaddr, 8))[0])

    def mapped_pfns(self, start: int, end: int, page_size: int) -> set[int]:
        """The pfns of the mapped pages among those holding [start, end); unmapped ones left out."""
        pfns = set()
        for vaddr in range(start - start % page_size, end, page_size):
            try:
                pfns.add(self.translate(vaddr)[0] // page_size)
            except TranslationError:
                pass
        return pfns
