"""A kdump-compressed file as a memory image: what kernel.KernelMemory reads kernel data through.

VMCOREINFO comes from the dump's copy of the vmcore notes (as drgn and libkdumpfile take it),
phys_base from the sub-header, physical memory page by page through KdumpFile.read_page.
"""

from __future__ import annotations

from ..errors import InputError
from ..kernel.memory import TranslationError
from ..kernel.page_cache import PageCache
from ..source import elf
from ..source.vmcore import Segment
from ..source.vmcoreinfo import VmcoreInfo
from .kdump import KdumpFile

# Pages kept decompressed: the kernel log and the page tables leading to it are a few hundred.
PAGE_CACHE_PAGES = 1024
MACHINE_NUMBERS = {name: number for number, name in elf.MACHINE_NAMES.items()}


class PageNotInDump(InputError, TranslationError):
    """A physical page that the dump does not hold (excluded by its dump level, or never written).
    A TranslationError too: kernel-data readers (struct pages, page tables) treat kernel memory
    they cannot reach as they treat an unmapped address."""


class KdumpPhysicalMemory:
    """Physical memory of a kdump file; pages not in the dump raise PageNotInDump."""

    def __init__(self, dump: KdumpFile, path: str) -> None:
        self.dump = dump
        self.path = path
        self.page_size = dump.page_size
        self._cache = PageCache(self._decompressed, dump.page_size, PAGE_CACHE_PAGES)

    def page(self, pfn: int) -> bytes:
        return self._cache.page(pfn)

    def read(self, paddr: int, length: int) -> bytes:
        return self._cache.read(paddr, length)

    def _decompressed(self, pfn: int) -> bytes:
        data = self.dump.read_page(pfn)
        if data is None:
            raise PageNotInDump(f"{self.path}: physical page {pfn:#x} is not in the dump: {self.dump.absence(pfn)}")
        if len(data) != self.page_size:
            raise InputError(f"{self.path}: page {pfn:#x} is damaged ({len(data)} bytes, "
                             f"not {self.page_size})")
        return data


class KdumpImage:
    """An opened kdump-compressed file, with the attributes kernel.MemoryImage asks for."""

    # A kdump file keeps no PT_LOAD (vaddr, paddr) pairs: every kernel address goes through
    # the crashed kernel's page tables.
    segments: tuple[Segment, ...] = ()

    def __init__(self, path: str) -> None:
        self.dump = KdumpFile.open(path)
        self.path = path
        cut = self.dump.truncation
        if cut and "notes (VMCOREINFO)" in cut.missing_parts:
            self.dump.close()
            raise InputError(f"{path}: {cut.describe(self.dump.ndump)}: without VMCOREINFO nothing in it can be read")
        self.page_size = self.dump.page_size
        self.vmcoreinfo: VmcoreInfo | None = None
        for note in elf.iter_notes(self.dump.notes):
            if note.name == elf.VMCOREINFO_NOTE_NAME:
                self.vmcoreinfo = VmcoreInfo.parse(note.desc)
                break
        machine = self.dump.header.machine.split(b"\0", 1)[0].decode("ascii", "replace")
        self.e_machine = MACHINE_NUMBERS.get(machine, 0)
        # The sub-header stores phys_base as u64; on x86_64 it may be negative (KASLR).
        raw_phys_base = self.dump.sub_header.phys_base
        self.phys_base = raw_phys_base - (1 << 64) if raw_phys_base >= 1 << 63 else raw_phys_base
        self.memory = KdumpPhysicalMemory(self.dump, path)

    def close(self) -> None:
        self.dump.close()

    def __enter__(self) -> KdumpImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
