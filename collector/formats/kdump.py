"""kdump-compressed format ("KDUMP   ", header version 6), as makedumpfile writes it.

File layout, in blocks of block_size (= page size):
  block 0            disk_dump_header
  block 1..          kdump_sub_header, then the vmcore's PT_NOTE bytes (sub_hdr_size blocks)
  bitmap_blocks      1st bitmap (pfn present) then 2nd bitmap (pfn dumpable), equal halves
  page_desc_t[]      one per set bit of the 2nd bitmap, pfn order
  page data          shared zero page first (dump level bit 1), then pages in order of value
                     (scan/value.py: what a dump cut short needs most goes first)

The writer takes the page pipeline's encoded spans and emits their descriptors and data; it
knows nothing of how pages were read or compressed.
"""

from __future__ import annotations

import errno
import os
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .. import fastcopy
from ..dump_level import DL_ZERO
from ..errors import InputError
from ..pipeline.compression import PAGE_FLAGS
from ..pipeline.pages import EncodedSpan, PageCompressor, PagePipeline, ranked_spans
from ..progress import Progress
from ..scan.classify import PageClassifier, PageCounts
from ..scan.value import page_order
from ..sink import Sink
from ..source.structs import Record
from ..source.vmcore import Vmcore

SIGNATURE = b"KDUMP   "
HEADER_VERSION = 6
STATUS_INCOMPLETE = 0x8
UTS_FIELD = "65s"
UTS_NAMES = ("sysname", "nodename", "release", "version", "machine", "domainname")

DISK_DUMP_HEADER = Record("disk_dump_header", [
    ("signature", "8s"), ("header_version", "i"),
    *[(name, UTS_FIELD) for name in UTS_NAMES], ("_pad", "6x"),
    ("timestamp_sec", "q"), ("timestamp_usec", "q"),
    ("status", "I"), ("block_size", "i"), ("sub_hdr_size", "i"), ("bitmap_blocks", "I"),
    ("max_mapnr", "I"), ("total_ram_blocks", "I"), ("device_blocks", "I"),
    ("written_blocks", "I"), ("current_cpu", "I"), ("nr_cpus", "i"),
])
KDUMP_SUB_HEADER = Record("kdump_sub_header", [
    ("phys_base", "Q"), ("dump_level", "i"), ("split", "i"),
    ("start_pfn", "Q"), ("end_pfn", "Q"),
    ("offset_vmcoreinfo", "q"), ("size_vmcoreinfo", "Q"),
    ("offset_note", "q"), ("size_note", "Q"),
    ("offset_eraseinfo", "q"), ("size_eraseinfo", "Q"),
    ("start_pfn_64", "Q"), ("end_pfn_64", "Q"), ("max_mapnr_64", "Q"),
])
PAGE_DESC = Record("page_desc", [("offset", "q"), ("size", "I"), ("flags", "I"), ("page_flags", "Q")])

# Flush page data and the descriptors that point into it after this much data: a target that
# fills up loses at most this much of what was compressed before the error.
FLUSH_BYTES = 1 << 20
# The first page data is the most valuable (scan/value.py): flushed in small pieces, so that a
# dump cut within its first few MiB (a tenth of a small dump) keeps all but the last 64 KiB.
FIRST_FLUSH_BYTES = 64 << 10
FIRST_DATA_BYTES = 4 << 20
# Errors that end the page pass with an incomplete (still readable) dump.
TARGET_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EPIPE}


@dataclass(frozen=True)
class KdumpLayout:
    block_size: int
    max_mapnr: int
    sub_hdr_blocks: int
    bitmap_blocks: int          # both bitmaps together

    @classmethod
    def compute(cls, block_size: int, max_mapnr: int, notes_size: int) -> KdumpLayout:
        bitmap_bytes = -(-max_mapnr // 8)
        one_bitmap = -(-bitmap_bytes // block_size)
        sub_hdr = -(-(KDUMP_SUB_HEADER.size + notes_size) // block_size)
        return cls(block_size, max_mapnr, sub_hdr, 2 * one_bitmap)

    @property
    def bitmap1_offset(self) -> int:
        return (1 + self.sub_hdr_blocks) * self.block_size

    @property
    def bitmap2_offset(self) -> int:
        return self.bitmap1_offset + self.bitmap_blocks // 2 * self.block_size

    @property
    def descs_offset(self) -> int:
        return (1 + self.sub_hdr_blocks + self.bitmap_blocks) * self.block_size


@dataclass
class DumpResult:
    complete: bool = True
    readable: bool = True  # False: not even the headers and notes got out (nothing to read)
    error: str = ""
    counts: PageCounts = field(default_factory=PageCounts)
    bytes_in: int = 0
    bytes_out: int = 0
    phases: dict[str, float] = field(default_factory=dict)


def utsname_fields(vmcore: Vmcore) -> dict[str, bytes]:
    uts = vmcore.utsname()
    return {name: uts.get(name, "").encode()[:64] for name in UTS_NAMES}


def write_kdump(sink: Sink, vmcore: Vmcore, classifier: PageClassifier, compressor: PageCompressor,
                progress: Progress) -> DumpResult:
    """Write a complete kdump file for the pages the classifier keeps; never raises for a full
    target: the result then says incomplete and the file is still readable."""
    result = DumpResult()
    ps = vmcore.page_size
    layout = KdumpLayout.compute(ps, vmcore.memory.max_mapnr, len(vmcore.notes))
    dump_level = classifier.dump_level

    def header(status: int) -> bytes:
        crash_time = vmcore.vmcoreinfo.integer("CRASHTIME") if vmcore.vmcoreinfo else None
        return DISK_DUMP_HEADER.build(
            signature=SIGNATURE, header_version=HEADER_VERSION, **utsname_fields(vmcore),
            timestamp_sec=crash_time if crash_time is not None else int(time.time()),
            timestamp_usec=0, status=status, block_size=ps, sub_hdr_size=layout.sub_hdr_blocks,
            bitmap_blocks=layout.bitmap_blocks, max_mapnr=min(layout.max_mapnr, 0xFFFFFFFF),
            total_ram_blocks=0, device_blocks=0, written_blocks=0, current_cpu=0,
            nr_cpus=vmcore.nr_cpus)

    note_offset = ps + KDUMP_SUB_HEADER.size
    has_info = vmcore.vmcoreinfo is not None
    def sub_header(data_end: int) -> bytes:
        # offset_eraseinfo with no erase info: where the page data ends, so that a reader sees
        # a file cut short (head -c) although the header says complete: the data is in order
        # of value, not of descriptors (KdumpFile.expected_end).
        return KDUMP_SUB_HEADER.build(
            phys_base=vmcore.phys_base & 0xFFFFFFFFFFFFFFFF, dump_level=dump_level, split=0,
            start_pfn=0, end_pfn=0,
            offset_vmcoreinfo=note_offset + vmcore.vmcoreinfo_offset if has_info else 0,
            size_vmcoreinfo=vmcore.vmcoreinfo_size if has_info else 0,
            offset_note=note_offset, size_note=len(vmcore.notes), offset_eraseinfo=data_end, size_eraseinfo=0,
            start_pfn_64=0, end_pfn_64=0, max_mapnr_64=layout.max_mapnr)
    status = compressor.page_flag
    started = time.monotonic()
    try:
        sink.write_at(0, header(status | STATUS_INCOMPLETE))
        sink.write_at(ps, sub_header(0) + vmcore.notes)
        # Pass 1: both bitmaps; the 2nd fixes how many descriptors precede the page data.
        progress.start("bitmaps", layout.max_mapnr, ps)
        ndump = 0
        window_ranks = []  # kept pages before each window: where its descriptors start
        for start, end in classifier.windows():
            window_ranks.append(ndump)
            present = classifier.present_bitmap(start, end)
            dumpable = classifier.dumpable_bitmap(start, end, result.counts)
            sink.write_at(layout.bitmap1_offset + start // 8, present)
            sink.write_at(layout.bitmap2_offset + start // 8, dumpable)
            result.counts.present += fastcopy.count_bits(present, 0, end - start)
            ndump += fastcopy.count_bits(dumpable, 0, end - start)
            progress.update(end)
        progress.finish()
        data_offset = layout.descs_offset + ndump * PAGE_DESC.size
        sink.reserve(0, data_offset)
        zero_offset = None  # where the one stored zero page is, that every zero page points at
        if dump_level & DL_ZERO:
            sink.write_at(data_offset, bytes(ps))
            zero_offset, data_offset = data_offset, data_offset + ps
    except OSError as e:
        result.complete, result.error = False, f"writing dump metadata: {e.strerror or e}"
        # Readers need the header, the notes (VMCOREINFO) and both bitmaps: all or nothing.
        result.readable = False
        return result
    result.phases["bitmaps"] = time.monotonic() - started

    started = time.monotonic()
    order = page_order(vmcore, classifier.kallsyms)
    if classifier.kallsyms is not None:  # its last lookup: the names need not stay in memory
        classifier.kallsyms.forget_names()
    result.phases["order"] = time.monotonic() - started
    started = time.monotonic()
    writer = _PageDataWriter(sink, data_offset, zero_offset, ps, compressor.page_flag)
    pipeline = PagePipeline(vmcore.memory, compressor, detect_zero=bool(dump_level & DL_ZERO))
    progress.start("pages", ndump, ps)
    try:
        for rank, span in ranked_spans(pipeline, classifier, order, window_ranks):
            result.counts.zero += span.nzero
            writer.add(span, layout.descs_offset + rank * PAGE_DESC.size)
            progress.update(writer.pages)
        writer.flush()
    except OSError as e:
        if e.errno not in TARGET_FULL_ERRNOS:
            raise
        result.complete, result.error = False, f"target full or failing: {e.strerror or e}"
    progress.finish()
    result.counts.written = writer.stored_durable
    result.bytes_in = pipeline.bytes_read
    result.bytes_out = writer.data_end
    result.phases["pages"] = time.monotonic() - started
    try:
        sink.write_at(ps, sub_header(writer.data_end))
        sink.write_at(0, header(status | (0 if result.complete else STATUS_INCOMPLETE)))
    except OSError as e:
        result.complete, result.error = False, result.error or f"rewriting the header: {e.strerror or e}"
    return result


class _PageDataWriter:
    """Appends page data and places descriptors (by rank, scan/value.py's order); descriptors
    are written only after their data, so a dump cut short never has a descriptor pointing at
    data that is not there."""

    def __init__(self, sink: Sink, data_offset: int, zero_offset: int | None, page_size: int,
                 page_flag: int) -> None:
        self.sink = sink
        self.data_end = data_offset
        self.first_data_end = data_offset + FIRST_DATA_BYTES
        # Zero pages (only found with dump level bit 1) all point at the one stored zero page.
        self.zero_offset = zero_offset or 0
        self.zero_desc = PAGE_DESC.build(offset=self.zero_offset, size=page_size, flags=0, page_flags=0)
        self.page_size = page_size
        self.page_flag = page_flag
        self.data = bytearray()
        self.descs: list[tuple[int, bytearray]] = []  # (file offset, descriptors), not yet written
        self.desc_bytes = 0
        self.pages = 0            # descriptors produced
        self._pending_stored = 0  # pages with data of their own, not yet flushed
        self.stored_durable = 0   # pages with data of their own whose descriptor is written

    def add(self, span: EncodedSpan, desc_offset: int) -> None:
        if self.descs and self.descs[-1][0] + len(self.descs[-1][1]) == desc_offset:
            descs = self.descs[-1][1]
        else:
            descs = bytearray()
            self.descs.append((desc_offset, descs))
        if span.nzero == span.count:  # all zeros (common in idle RAM): one repeated descriptor
            descs += self.zero_desc * span.count
        else:
            packed = bytearray(span.count * PAGE_DESC.size)
            fastcopy.kdump_descs(span.sizes, span.raw, span.count, self.data_end + len(self.data),
                                 self.zero_offset, self.page_size, self.page_flag, packed)
            descs += packed
            self.data += span.data
            self._pending_stored += span.count - span.nzero
        self.desc_bytes += span.count * PAGE_DESC.size
        self.pages += span.count
        flush_bytes = FIRST_FLUSH_BYTES if self.data_end < self.first_data_end else FLUSH_BYTES
        if len(self.data) >= flush_bytes or self.desc_bytes >= FLUSH_BYTES // 16 or len(self.descs) >= 1024:
            self.flush()

    def flush(self) -> None:
        if self.data:
            self.sink.write_at(self.data_end, self.data)
            self.data_end += len(self.data)
            self.data = bytearray()
        for offset, descs in self.descs:
            self.sink.write_at(offset, descs)
        self.descs = []
        self.desc_bytes = 0
        self.stored_durable += self._pending_stored
        self._pending_stored = 0


# The parts of a kdump file in file order, as a file cut short names what it lost.
KDUMP_PARTS = ("header", "sub-header", "notes (VMCOREINFO)", "bitmaps", "page descriptors", "page data")
CUT_SHORT = "page missing (dump cut short)"
DESCS_PER_READ = 4096
# read_pages reads the data of neighbouring pages in one read when they lie this close together
# (zlib/lzo/snappy pages of a makedumpfile dump are back to back in pfn order), up to this much.
DATA_GAP_BYTES = 4096
DATA_READ_BYTES = 1 << 20
Decompress = Callable[[bytes, int], bytes]


def _zstd() -> tuple[Decompress, type[Exception]]:
    import zstandard

    context = zstandard.ZstdDecompressor()
    return (lambda data, size: context.decompress(data, max_output_size=size)), zstandard.ZstdError


def _lzo() -> tuple[Decompress, type[Exception]]:
    import lzo  # python-lzo: makedumpfile -l writes raw LZO1X blocks (no python-lzo header)

    return (lambda data, size: lzo.decompress(data, False, size)), lzo.error


def _snappy() -> tuple[Decompress, type[Exception]]:
    import cramjam  # makedumpfile -p writes raw snappy blocks, not the framed format

    return (lambda data, size: bytes(cramjam.snappy.decompress_raw(data))), cramjam.DecompressionError


def _zlib() -> tuple[Decompress, type[Exception]]:
    return (lambda data, size: zlib.decompress(data, bufsize=size)), zlib.error


# Each page compression a kdump file can hold, by its descriptor flag; its library is imported
# when a page of that compression is first read.
DECOMPRESSORS: dict[int, Callable[[], tuple[Decompress, type[Exception]]]] = {
    PAGE_FLAGS["zlib"]: _zlib, PAGE_FLAGS["lzo"]: _lzo, PAGE_FLAGS["snappy"]: _snappy, PAGE_FLAGS["zstd"]: _zstd}


@dataclass(frozen=True)
class Truncation:
    """A kdump file shorter than its own header and descriptors say it is (cut with head -c, a
    copy that stopped, a full disk behind a writer that did not see the error)."""

    size: int              # the file's length
    part: str              # the first part the file does not wholly hold (one of KDUMP_PARTS)
    part_end: int          # where that part should end
    pages_missing: int | None  # dumped pages without their data; None when the bitmaps are cut

    @property
    def missing_parts(self) -> tuple[str, ...]:
        return KDUMP_PARTS[KDUMP_PARTS.index(self.part):]

    def describe(self, ndump: int) -> str:
        lost = ", ".join([f"{self.part} (from byte {self.size})", *self.missing_parts[1:]])
        pages = "" if self.pages_missing is None else f"; {self.pages_missing} of {ndump} dumped pages are missing"
        return (f"TRUNCATED: the file is {self.size} bytes but its {self.part} should reach byte "
                f"{self.part_end}; missing: {lost}{pages}")


class KdumpFile:
    """Reads a kdump-compressed file: header fields, bitmaps and pages by pfn.

    For --info and for checking dumps; it loads both bitmaps into memory (32 MiB each at 1 TiB
    of RAM), which the collector's own write path never does. ``size`` is the file's length:
    what lies past it is missing (``truncation`` says from which part on), never zeros.
    """

    def __init__(self, read_at: Callable[[int, int], bytes], size: int) -> None:
        self._read_at = read_at
        self.size = size
        self._release: Callable[[], None] = lambda: None  # open() sets it to close its file
        self._decompressors: dict[int, tuple[Decompress, type[Exception]]] = {}
        self.name = "kdump file"  # what errors about its pages call it: open() gives the path
        self.header = DISK_DUMP_HEADER.parse(read_at(0, DISK_DUMP_HEADER.size))
        if self.header.signature[:size] != SIGNATURE[:size]:  # a file cut inside it has what is left
            raise InputError("not a kdump-compressed file (no KDUMP signature)")
        if size < DISK_DUMP_HEADER.size:
            raise InputError(f"kdump file TRUNCATED inside its header ({size} of {DISK_DUMP_HEADER.size} "
                             "bytes): nothing in it can be read")
        bs = self.header.block_size
        if bs <= 0 or bs & (bs - 1) or self.header.bitmap_blocks % 2:
            raise InputError(f"kdump header is damaged (block_size {bs}, bitmap_blocks "
                             f"{self.header.bitmap_blocks})")
        self.page_size = bs
        self.sub_header = KDUMP_SUB_HEADER.parse(read_at(bs, KDUMP_SUB_HEADER.size))
        self.max_mapnr = self.sub_header.max_mapnr_64 or self.header.max_mapnr
        self.layout = KdumpLayout(bs, self.max_mapnr, self.header.sub_hdr_size, self.header.bitmap_blocks)
        half = self.layout.bitmap_blocks // 2 * bs
        self.present = read_at(self.layout.bitmap1_offset, half)
        self.dumpable = read_at(self.layout.bitmap2_offset, half)
        self.notes = read_at(self.sub_header.offset_note, self.sub_header.size_note)
        self.vmcoreinfo = read_at(self.sub_header.offset_vmcoreinfo, self.sub_header.size_vmcoreinfo)
        # Dumpable pages before each 4096-pfn block: rank of a pfn in descriptor order.
        block_bits = 4096
        self._rank_blocks = [0]
        for start in range(0, self.max_mapnr, block_bits):
            end = min(start + block_bits, self.max_mapnr)
            self._rank_blocks.append(self._rank_blocks[-1] + fastcopy.count_bits(self.dumpable, start, end))
        self.ndump = self._rank_blocks[-1]
        self.descs_end = self.layout.descs_offset + self.ndump * PAGE_DESC.size
        # Unknown (None) when the bitmaps are cut: they say which pages were dumped.
        self.pages_missing: int | None = None
        self._data_end = self.descs_end  # where the page data should end (_scan_descs)
        if size >= self.layout.descs_offset:
            self.pages_missing, self._data_end = self._scan_descs()
        self.truncation = self._find_truncation()

    def _find_truncation(self) -> Truncation | None:
        sh, bs = self.sub_header, self.page_size
        ends = [("sub-header", bs + KDUMP_SUB_HEADER.size),
                ("notes (VMCOREINFO)", max(sh.offset_note + sh.size_note,
                                           sh.offset_vmcoreinfo + sh.size_vmcoreinfo)),
                ("bitmaps", self.layout.descs_offset),
                ("page descriptors", self.descs_end)]
        for part, end in ends:
            if self.size < end:
                return Truncation(self.size, part, end, self.pages_missing)
        if self.pages_missing and self.size < self._data_end:
            return Truncation(self.size, "page data", self._data_end, self.pages_missing)
        return None

    def descs(self, start: int, end: int) -> list[Any]:
        raw = self._read_at(self.layout.descs_offset + start * PAGE_DESC.size, (end - start) * PAGE_DESC.size)
        return [PAGE_DESC.parse(raw, i * PAGE_DESC.size) for i in range(end - start)]

    def has_data(self, desc: Any) -> bool:
        return desc.offset != 0 and desc.offset + desc.size <= self.size

    def _scan_descs(self) -> tuple[int, int]:
        """In one pass over the descriptors: the dumped pages whose data is not in the file
        (descriptor past the end of the file or never written, offset 0, or data past the end),
        and where the page data should end (past the descriptor that points furthest).

        A dump its writer finished has its data in descriptor order up to wherever it was cut
        since, so the scan goes back from the last descriptor only until one whose data is
        there (other than the shared zero page, which pages of any pfn point at), and the data
        end is in the last block of descriptors that point past the zero page; one the writer
        marked incomplete has its data in order of value (scan/value.py), so every descriptor
        is looked at."""
        written_in_order = self._written_in_order()
        missing, data_end, end = 0, self.descs_end, self.ndump
        counting = ending = True  # still counting pages without data; still looking for the data end
        while end > 0 and (counting or ending):
            start = max(0, end - DESCS_PER_READ)
            descs = self.descs(start, end)
            if ending:
                data_end = max([data_end, *(desc.offset + desc.size for desc in descs if desc.offset != 0)])
                ending = not (written_in_order and any(desc.offset > self.descs_end for desc in descs))
            if counting:  # what ends the count points past the zero page: the data end's scan ended too
                for desc in reversed(descs):
                    if not self.has_data(desc):
                        missing += 1
                    elif written_in_order and desc.offset > self.descs_end:
                        counting = False
                        break
            end = start
        return missing, data_end

    def _written_in_order(self) -> bool:
        """Whether the last descriptors' data is the last data in the file, so a cut is found
        from the end: true of makedumpfile's dumps and of ours its writer finished and that are
        as long as their sub-header says (offset_eraseinfo without erase info: the data's end)."""
        if self.header.status & STATUS_INCOMPLETE:
            return False
        expected_end = self.sub_header.offset_eraseinfo if not self.sub_header.size_eraseinfo else 0
        return not self.descs_end < expected_end or self.size >= expected_end

    @classmethod
    def open(cls, path: str) -> KdumpFile:
        """A kdump file on disk; close() releases it."""
        try:
            # A file object, not a bare fd: a dump dropped without close() still releases it.
            file = open(path, "rb", buffering=0)
        except OSError as e:
            raise InputError(f"cannot open {path}: {e.strerror}") from None

        def read_at(offset: int, length: int) -> bytes:
            # Past EOF reads as zeros: descriptors there have offset 0 (never written); what
            # else lies there, KdumpFile tells missing by the file's size.
            return os.pread(file.fileno(), length, offset).ljust(length, b"\0")

        try:
            dump = cls(read_at, os.fstat(file.fileno()).st_size)
        except InputError as e:
            file.close()
            raise InputError(f"{path}: {e}") from None
        except BaseException:
            file.close()
            raise
        dump._release = file.close
        dump.name = path
        return dump

    def close(self) -> None:
        self._release()

    @property
    def complete(self) -> bool:
        """Every dumped page is in the file: the writer finished and nothing was cut off since."""
        return not self.header.status & STATUS_INCOMPLETE and self.truncation is None

    def absence(self, pfn: int) -> str:
        """Why read_page(pfn) gives None, for messages."""
        if not 0 <= pfn < self.max_mapnr:
            return "not in the crashed machine's memory"
        if self.layout.bitmap2_offset + (pfn >> 3) >= self.size:
            return CUT_SHORT
        if not self.is_dumpable(pfn):
            level = "unknown" if self.size < self.page_size + KDUMP_SUB_HEADER.size else self.sub_header.dump_level
            return f"excluded at dump level {level}" if self.is_present(pfn) else "not in the crashed machine's memory"
        return CUT_SHORT if not self.complete else "page damaged (its data is not one page)"

    @property
    def compression(self) -> str:
        for name, flag in PAGE_FLAGS.items():
            if flag and self.header.status & flag:
                return name
        return "none"

    def _bit(self, bitmap: bytes, pfn: int) -> bool:
        return 0 <= pfn < self.max_mapnr and bool(bitmap[pfn >> 3] >> (pfn & 7) & 1)

    def is_present(self, pfn: int) -> bool:
        return self._bit(self.present, pfn)

    def is_dumpable(self, pfn: int) -> bool:
        return self._bit(self.dumpable, pfn)

    def rank(self, pfn: int) -> int:
        """The index of pfn's descriptor: the dumpable pages before it."""
        block = pfn // 4096
        return self._rank_blocks[block] + fastcopy.count_bits(self.dumpable, block * 4096, pfn)

    def page_desc(self, pfn: int) -> Any:
        return PAGE_DESC.parse(self._read_at(self.layout.descs_offset + self.rank(pfn) * PAGE_DESC.size,
                                             PAGE_DESC.size))

    def read_page(self, pfn: int) -> bytes | None:
        """The page's bytes; None if the page is not in the dump (excluded or never written).

        In a dump cut short the last descriptor written may be only partly there (a write can
        end at any byte): a size or flags that cannot be right, or data that does not
        decompress to a page, means the page is missing, never that its bytes are wrong.
        """
        if not self.is_dumpable(pfn):
            return None
        desc = self.page_desc(pfn)
        if not self.has_data(desc):  # descriptor never written, or its data cut off
            return None
        return self._decode(pfn, desc, self._read_at(desc.offset, desc.size))

    def read_pages(self, pfns: Iterable[int]) -> Iterator[tuple[int, bytes | None]]:
        """(pfn, read_page(pfn)) for dumpable pfns given in ascending order, with one read for the
        descriptors of a run of them and one for the data of neighbouring pages."""
        pending: list[int] = []
        for pfn in pfns:
            if pending and pfn - pending[0] >= DESCS_PER_READ:
                yield from self._read_batch(pending)
                pending = []
            pending.append(pfn)
        if pending:
            yield from self._read_batch(pending)

    def _read_batch(self, pfns: list[int]) -> Iterator[tuple[int, bytes | None]]:
        first = self.rank(pfns[0])
        ranks = [first]
        for before, pfn in zip(pfns, pfns[1:]):  # each pfn is dumpable: one descriptor past the last
            ranks.append(ranks[-1] + 1 + fastcopy.count_bits(self.dumpable, before + 1, pfn))
        descs = self.descs(first, ranks[-1] + 1)
        wanted = sorted((desc.offset, desc.size, pfn, desc) for pfn, rank in zip(pfns, ranks)
                        for desc in [descs[rank - first]] if self.has_data(desc))
        pages: dict[int, bytes | None] = {}
        start = 0
        while start < len(wanted):
            lo, hi, stop = wanted[start][0], wanted[start][0] + wanted[start][1], start + 1
            while stop < len(wanted) and wanted[stop][0] <= hi + DATA_GAP_BYTES and \
                    max(hi, wanted[stop][0] + wanted[stop][1]) - lo <= DATA_READ_BYTES:
                hi = max(hi, wanted[stop][0] + wanted[stop][1])
                stop += 1
            block = self._read_at(lo, hi - lo)
            for offset, size, pfn, desc in wanted[start:stop]:
                pages[pfn] = self._decode(pfn, desc, block[offset - lo:offset - lo + size])
            start = stop
        for pfn in pfns:
            yield pfn, pages.get(pfn)

    def _decode(self, pfn: int, desc: Any, data: bytes) -> bytes | None:
        if desc.flags == 0:  # stored as is: exactly one page
            return data if desc.size == self.page_size else None
        if not 0 < desc.size < self.page_size:  # compressed pages are stored only when smaller
            return None
        found = self._decompressors.get(desc.flags)
        if found is None:
            make = DECOMPRESSORS.get(desc.flags)
            if make is None:
                raise InputError(f"{self.name}: page {pfn:#x}: compression flags {desc.flags:#x} not supported")
            try:
                found = self._decompressors[desc.flags] = make()
            except ImportError as e:
                raise InputError(f"{self.name}: page {pfn:#x} is {self._method(desc.flags)}-compressed and {e.name} "
                                 "is not installed: install vmcore-collector's requirements (pip install .)") from None
        decompress, damaged = found
        try:
            page = decompress(data, self.page_size)
        except damaged as e:
            if not self.complete:
                return None
            raise InputError(f"{self.name}: page {pfn:#x}: damaged compressed data ({e}): copy the dump again "
                             "from where it was saved") from None
        return page if len(page) == self.page_size else None

    @staticmethod
    def _method(flags: int) -> str:
        return next(name for name, flag in PAGE_FLAGS.items() if flag == flags)
