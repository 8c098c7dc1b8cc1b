"""A kdump-compressed dump as the input of a save: re-filtering, as ``makedumpfile -d 31 in out``.

KdumpSource is read by the save job, the classifier and the page pipeline exactly as an ELF
Vmcore is (it is one to them): notes, VMCOREINFO, utsname, and ``memory`` with max_mapnr, runs,
windows, view and read. Its pages are decompressed from the input (zlib, lzo, snappy or zstd)
a window at a time, so memory does not grow with the dump.

What makedumpfile does with such an input, and so does this:
- the output keeps only pages the input holds: a page the input excluded (or lost, in a dump
  cut short) is never dumped, never read as zeros;
- the input's 1st bitmap (the crashed machine's memory) is the output's (makedumpfile's
  copy_1st_bitmap_from_memory), once the classifier reads it through present_bitmap (see
  KdumpMemory.runs);
- phys_base comes from the input's sub-header; the utsname from its header.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from .. import fastcopy
from ..errors import InputError
from ..formats.kdump import DESCS_PER_READ, UTS_NAMES, KdumpFile
from ..formats.kdump_image import KdumpImage, KdumpPhysicalMemory
from ..kernel.arch import architecture
from . import elf
from .vmcore import MAP_WINDOW_BYTES, MappedBytes, PageRun, PhysicalMemory, SourceWindow, Vmcore, VmcoreFile

_NONZERO_BYTES = re.compile(rb"[^\x00]+")
_FULL_BYTES = re.compile(rb"\xff+|[^\xff]")


def bit_runs(bitmap: bytes | bytearray, nbits: int) -> list[tuple[int, int]]:
    """[start, end) of each run of set bits among the first ``nbits`` of an LSB-first bitmap."""
    runs: list[tuple[int, int]] = []

    def add(lo: int, hi: int) -> None:
        hi = min(hi, nbits)
        if lo >= hi:
            return
        if runs and runs[-1][1] == lo:
            runs[-1] = (runs[-1][0], hi)
        else:
            runs.append((lo, hi))

    for chunk in _NONZERO_BYTES.finditer(bitmap, 0, -(-nbits // 8)):
        for piece in _FULL_BYTES.finditer(chunk.group()):
            base = (chunk.start() + piece.start()) * 8
            byte = piece.group()[0]
            if byte == 0xFF:
                add(base, base + 8 * len(piece.group()))
            else:
                for bit in range(8):
                    if byte >> bit & 1:
                        add(base + bit, base + bit + 1)
    return runs


def set_bits(bitmap: bytes | bytearray, lo: int, hi: int) -> Iterator[int]:
    """The set bits in [lo, hi) of an LSB-first bitmap, ascending."""
    for chunk in _NONZERO_BYTES.finditer(bitmap, lo >> 3, -(-hi // 8)):
        for index, byte in enumerate(chunk.group(), chunk.start()):
            for bit in range(8):
                pfn = index * 8 + bit
                if byte >> bit & 1 and lo <= pfn < hi:
                    yield pfn


class KdumpMemory(PhysicalMemory):
    """The pages of a kdump input as the classifier and the page pipeline read physical memory.

    ``runs`` are the pages whose data the input holds (its 2nd bitmap, less pages a dump cut
    short lost): the classifier builds the output's 1st bitmap from them today, and every kept
    page must be one of them. present_bitmap and data_bitmap tell the input's 1st bitmap from
    those pages, for a classifier that starts the 1st bitmap from the one and the 2nd from the
    other, as makedumpfile does.
    """

    def __init__(self, dump: KdumpFile, path: str) -> None:  # no ELF segments: no PhysicalMemory.__init__
        self.dump = dump
        self.path = path
        self.page_size = dump.page_size
        self.max_mapnr = dump.max_mapnr
        self.segments = []
        self.partial_pfns = []
        self._pages = KdumpPhysicalMemory(dump, path)
        self._has_data = bytearray(dump.dumpable)
        if not dump.complete:
            self._clear_pages_without_data()
        self.runs = [PageRun(lo, hi, None) for lo, hi in bit_runs(self._has_data, self.max_mapnr)]
        self._run_starts = [run.start_pfn for run in self.runs]

    def _clear_pages_without_data(self) -> None:
        dump = self.dump
        for start in range(0, self.max_mapnr, DESCS_PER_READ):
            pfns = list(set_bits(dump.dumpable, start, min(start + DESCS_PER_READ, self.max_mapnr)))
            if not pfns:
                continue
            first = dump.rank(pfns[0])
            for pfn, desc in zip(pfns, dump.descs(first, first + len(pfns))):
                if not dump.has_data(desc):
                    self._has_data[pfn >> 3] &= ~(1 << (pfn & 7))

    def present_bitmap(self, start: int, end: int) -> bytearray:
        """Bit (pfn - start) for each pfn in [start, end) of the input's 1st bitmap."""
        return slice_bits(self.dump.present, start, end)

    def data_bitmap(self, start: int, end: int) -> bytearray:
        """Bit (pfn - start) for each pfn in [start, end) whose page the input holds."""
        return slice_bits(self._has_data, start, end)

    def read(self, paddr: int, length: int) -> bytes:
        """Bytes of physical memory; PageNotInDump (a TranslationError too) for a page the input lacks."""
        return self._pages.read(paddr, length)

    def view(self, paddr: int, length: int) -> MappedBytes:
        return MappedBytes(memoryview(self.read(paddr, length)), None)

    def windows(self, start: int, end: int, bitmap: bytes | bytearray) -> Iterator[SourceWindow]:
        """Decompressed windows of at most MAP_WINDOW_BYTES over [start, end): the pages whose
        bit (pfn - start) is set in ``bitmap`` hold their bytes, the others are not read."""
        step = MAP_WINDOW_BYTES // self.page_size
        ps = self.page_size
        for lo in range(start, end, step):
            hi = min(lo + step, end)
            if not fastcopy.count_bits(bitmap, lo - start, hi - start):
                continue
            buffer = bytearray((hi - lo) * ps)
            wanted = (start + bit for bit in set_bits(bitmap, lo - start, hi - start))
            for pfn, page in self.dump.read_pages(wanted):
                if page is None:  # a page the input holds by its 2nd bitmap and descriptor
                    raise InputError(f"{self.path}: physical page {pfn:#x} is damaged in the input dump "
                                     f"({self.dump.absence(pfn)}); it cannot be dumped again")
                buffer[(pfn - lo) * ps:(pfn - lo + 1) * ps] = page
            yield SourceWindow(lo, hi - lo, memoryview(buffer))


def slice_bits(bitmap: bytes | bytearray, start: int, end: int) -> bytearray:
    """Bits [start, end) of an LSB-first bitmap as a bitmap of their own."""
    nbytes = (end - start + 7) // 8
    if start % 8 == 0:
        out = bytearray(bitmap[start >> 3:(start >> 3) + nbytes].ljust(nbytes, b"\0"))
    else:
        value = int.from_bytes(bitmap[start >> 3:(end + 7) >> 3], "little") >> (start & 7)
        out = bytearray(value.to_bytes(nbytes + 1, "little")[:nbytes])
    if (end - start) % 8:
        out[-1] &= (1 << ((end - start) % 8)) - 1
    return out


class KdumpSource(Vmcore):
    """An opened kdump-compressed dump, as the save job reads a vmcore (module docstring)."""

    def __init__(self, path: str, dump_level: int | None = None) -> None:  # not an ELF file: no Vmcore.__init__
        """``dump_level``: the level the save asks for, to say when the input's is higher."""
        self.image = KdumpImage(path)
        try:
            dump = self.image.dump
            self.file = VmcoreFile(path)
            self.e_machine = self.image.e_machine
            self.arch = architecture(self.e_machine)
            self.machine = elf.machine_name(self.e_machine)
            self.original_notes = self.notes = dump.notes
            self.nr_cpus = dump.header.nr_cpus
            self.segments = []
            self.vmcoreinfo = self.image.vmcoreinfo
            has_info = self.vmcoreinfo is not None and dump.sub_header.size_vmcoreinfo
            self.vmcoreinfo_offset = dump.sub_header.offset_vmcoreinfo - dump.sub_header.offset_note if has_info else 0
            self.vmcoreinfo_size = dump.sub_header.size_vmcoreinfo if has_info else 0
            self.page_size = dump.page_size
            self.input_dump_level = dump.sub_header.dump_level
            self.warnings = []
            if self.vmcoreinfo is None:
                self.warnings.append("no VMCOREINFO note: page filtering that needs kernel data is off")
            if dump_level is not None and self.input_dump_level & ~dump_level:
                self.warnings.append(f"{path} was written at dump level {self.input_dump_level}: the pages it left "
                                     f"out stay out (makedumpfile dumps it at {dump_level | self.input_dump_level})")
            if not dump.complete:
                self.warnings.append(f"{path} is incomplete: {dump.pages_missing} of its {dump.ndump} pages are "
                                     "missing, and missing from the new dump")
            self.memory = KdumpMemory(dump, path)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if hasattr(self, "file"):
            self.file.close()
        self.image.close()

    @property
    def phys_base(self) -> int:
        """The input's sub-header phys_base, as makedumpfile re-filtering takes it."""
        return self.image.phys_base

    def utsname(self) -> dict[str, str]:
        """The utsname the input's header holds (its writer read it from the crashed kernel)."""
        header = self.image.dump.header
        return {name: getattr(header, name).split(b"\0", 1)[0].decode("utf-8", "replace") for name in UTS_NAMES}
