"""The input side: an ELF vmcore (/proc/vmcore or a copy) and the physical memory it holds."""

from __future__ import annotations

import bisect
import mmap
import os
import re
import resource
from collections.abc import Iterator
from dataclasses import dataclass

from .. import fastcopy
from ..errors import InputError
from ..kernel.arch import architecture
from . import elf
from .elf import Segment
from .vmcoreinfo import VmcoreInfo

# Size of one mmap window over the vmcore (makedumpfile maps 4 MiB at a time). Reading
# /proc/vmcore with small read() calls maps and unmaps one page per call: slow on real machines.
# The page pipeline keeps a few windows mapped while threads encode them.
MAP_WINDOW_BYTES = 8 << 20

# A damaged VMCOREINFO is replaced in the notes the dump carries by a repaired one; its original
# bytes follow in a note of this name, which readers skip (drgn, libkdumpfile and makedumpfile
# match note names exactly; crash by prefix, hence a name not starting with VMCOREINFO).
ORIGINAL_VMCOREINFO_NOTE_NAME = b"DAMAGED_VMCOREINFO"
UTS_FIELD_BYTES, UTS_NAMES = 65, ("sysname", "nodename", "release", "version", "machine", "domainname")
_RELEASE = re.compile(r"^\d+\.\d+[\x21-\x7e]*$")


@dataclass(frozen=True)
class PageRun:
    """Consecutive whole pages whose bytes are consecutive in the vmcore file.

    ``file_offset`` None means the pages exist (inside p_memsz) but have no bytes in the file:
    they read as zeros.
    """

    start_pfn: int
    end_pfn: int
    file_offset: int | None


class VmcoreFile:
    """Read access to the vmcore file through mmap windows (pread where mmap is refused)."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise InputError(f"cannot open {path}: {e.strerror}") from None
        self.size = os.fstat(self.fd).st_size
        self._mmap_ok = True

    def close(self) -> None:
        os.close(self.fd)

    def pread(self, offset: int, length: int) -> bytes:
        data = os.pread(self.fd, length, offset)
        if len(data) != length:
            raise InputError(f"{self.path}: short read at offset {offset} ({len(data)} of {length} bytes)")
        return data

    def map(self, offset: int, length: int) -> MappedBytes:
        """File bytes [offset, offset+length) mapped read-only (read with pread where the file
        refuses mmap, e.g. a pipe); close() the result when done."""
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        if self._mmap_ok:
            try:
                mapped = mmap.mmap(self.fd, length + offset - start, mmap.MAP_SHARED, mmap.PROT_READ, offset=start)
            except (OSError, ValueError):
                self._mmap_ok = False  # e.g. a pipe or a file system without mmap
            else:
                return MappedBytes(memoryview(mapped)[offset - start:], mapped)
        return MappedBytes(memoryview(self.pread(offset, length)), None)


class MappedBytes:
    """A read-only view of vmcore bytes, mapped or read; close() unmaps (no view may outlive it)."""

    def __init__(self, view: memoryview, mapping: mmap.mmap | None) -> None:
        self.view = view
        self._mapping = mapping

    def close(self) -> None:
        self.view.release()
        if self._mapping is not None:
            self._mapping.close()


@dataclass
class SourceWindow:
    """Pages [first_pfn, first_pfn + npages) of physical memory for the page pipeline:
    ``source`` holds them back to back (mapped from the vmcore, or read), or is None when
    they read as zeros. Kept open until close(), so workers can read it while others are
    mapped."""

    first_pfn: int
    npages: int
    source: memoryview | bytes | None
    _mapped: MappedBytes | None = None

    def close(self) -> None:
        if self._mapped is not None:
            self._mapped.close()


class PhysicalMemory:
    """Pages of physical memory present in the vmcore, addressed by page frame number.

    Overlapping PT_LOADs (kexec_load adds a kernel-text segment that repeats part of RAM) hold
    the same bytes, so each pfn is read from one of them only. A page only partly inside a
    segment (x86 low memory ends at 0x9fc00) is kept: the bytes outside read as zeros.
    """

    def __init__(self, file: VmcoreFile, segments: list[Segment], page_size: int) -> None:
        self.file = file
        self.page_size = page_size
        self.segments = segments
        self.max_mapnr = max((-(-(s.paddr + s.memsz) // page_size) for s in segments), default=0)
        self.runs = self._whole_page_runs()
        self._run_starts = [r.start_pfn for r in self.runs]

        def covered(pfn: int) -> bool:
            i = bisect.bisect_right(self._run_starts, pfn) - 1
            return i >= 0 and pfn < self.runs[i].end_pfn

        self.partial_pfns = sorted({pfn for pfn in self._edge_pfns() if not covered(pfn)})

    def _whole_page_runs(self) -> list[PageRun]:
        ps = self.page_size
        candidates: list[PageRun] = []
        for seg in self.segments:
            first = -(-seg.paddr // ps)
            file_end = (seg.paddr + seg.filesz) // ps
            mem_end = (seg.paddr + seg.memsz) // ps
            if file_end > first:
                candidates.append(PageRun(first, file_end, seg.offset + first * ps - seg.paddr))
            zero_start = max(first, -(-(seg.paddr + seg.filesz) // ps))
            if mem_end > zero_start:
                candidates.append(PageRun(zero_start, mem_end, None))
        # Sweep in pfn order, clipping each run to what no earlier run covers.
        runs: list[PageRun] = []
        covered_end = 0
        for cand in sorted(candidates, key=lambda r: r.start_pfn):
            start = max(cand.start_pfn, covered_end)
            if start >= cand.end_pfn:
                continue
            offset = None if cand.file_offset is None else cand.file_offset + (start - cand.start_pfn) * ps
            runs.append(PageRun(start, cand.end_pfn, offset))
            covered_end = cand.end_pfn
        return runs

    def _edge_pfns(self) -> Iterator[int]:
        ps = self.page_size
        for seg in self.segments:
            if not seg.memsz:
                continue
            for boundary in (seg.paddr, seg.paddr + seg.filesz, seg.paddr + seg.memsz):
                if boundary % ps:
                    yield boundary // ps

    def present_bitmap(self, start: int, end: int) -> bytearray:
        """Bit (pfn - start) set for each pfn in [start, end) that some PT_LOAD holds."""
        bitmap = bytearray((end - start + 7) // 8)
        for run in self.runs:
            lo, hi = max(run.start_pfn, start), min(run.end_pfn, end)
            if lo < hi:
                set_bits(bitmap, lo - start, hi - start)
        for pfn in self.partial_pfns:
            if start <= pfn < end:
                set_bits(bitmap, pfn - start, pfn - start + 1)
        return bitmap

    # An ELF vmcore holds the data of every page it has.
    data_bitmap = present_bitmap

    def read(self, paddr: int, length: int) -> bytes:
        """Bytes of physical memory; parts no segment holds read as zeros."""
        out = bytearray(length)
        end = paddr + length
        for seg in self.segments:
            lo, hi = max(paddr, seg.paddr), min(end, seg.paddr + seg.filesz)
            if lo < hi:
                out[lo - paddr:hi - paddr] = self.file.pread(seg.offset + lo - seg.paddr, hi - lo)
        return bytes(out)

    def view(self, paddr: int, length: int) -> MappedBytes:
        """Bytes of physical memory without a copy where one run of whole pages in the file
        holds them all (struct pages: a section's are one 2 MiB vmemmap page), else read."""
        ps = self.page_size
        i = bisect.bisect_right(self._run_starts, paddr // ps) - 1
        if i >= 0:
            run = self.runs[i]
            if run.file_offset is not None and paddr + length <= run.end_pfn * ps:
                return self.file.map(run.file_offset + paddr - run.start_pfn * ps, length)
        return MappedBytes(memoryview(self.read(paddr, length)), None)

    def windows(self, start: int, end: int, bitmap: bytes | bytearray) -> Iterator[SourceWindow]:
        """The pages of [start, end) in pfn order, at most MAP_WINDOW_BYTES at a time, leaving
        out pieces in which no bit (pfn - start) of ``bitmap`` is set. The caller closes each."""
        ps = self.page_size
        pieces: list[tuple[int, int, int | None | bytes]] = []
        for run in self.runs:
            lo, hi = max(run.start_pfn, start), min(run.end_pfn, end)
            if lo < hi:
                offset = None if run.file_offset is None else run.file_offset + (lo - run.start_pfn) * ps
                pieces.append((lo, hi - lo, offset))
        # A page only partly in the file: read through the slow path (a handful per vmcore).
        pieces.extend((pfn, 1, b"") for pfn in self.partial_pfns if start <= pfn < end)
        step = MAP_WINDOW_BYTES // ps
        for first_pfn, npages, source in sorted(pieces, key=lambda p: p[0]):
            for lo in range(first_pfn, first_pfn + npages, step):
                n = min(step, first_pfn + npages - lo)
                if not fastcopy.count_bits(bitmap, lo - start, lo - start + n):
                    continue
                if source == b"":
                    yield SourceWindow(lo, n, self.read(lo * ps, ps))
                elif source is None:
                    yield SourceWindow(lo, n, None)
                else:
                    assert isinstance(source, int)
                    mapped = self.file.map(source + (lo - first_pfn) * ps, n * ps)
                    yield SourceWindow(lo, n, mapped.view, mapped)


class Vmcore:
    """An opened ELF vmcore: notes, VMCOREINFO and physical memory."""

    # The dump level of an input that is itself a dump (source/kdump_input.py): the pages it
    # left out stay out, so the output's dump level includes it, as makedumpfile's does.
    input_dump_level = 0

    def __init__(self, path: str) -> None:
        self.file = VmcoreFile(path)
        try:
            core = elf.ElfCore(path, self.file.size, self.file.pread)
            if next(core.iter_segments(elf.PT_NOTE), None) is None:
                raise InputError(f"{path}: no PT_NOTE segment: not a vmcore")
            self.e_machine: int = core.header.e_machine
            self.machine = elf.machine_name(self.e_machine)
            self.arch = architecture(self.e_machine)
            self.original_notes = core.note_bytes()  # the vmcore's own, also when self.notes is repaired
            notes = list(elf.iter_notes(self.original_notes))
            self.nr_cpus = sum(note.type == elf.NT_PRSTATUS and note.name == b"CORE" for note in notes)
            self.segments = self._memory_segments(core.load_segments())
            if not self.segments:
                raise InputError(f"{path}: no PT_LOAD segment: the vmcore holds no memory")
            note = _vmcoreinfo_note(notes)
            self.vmcoreinfo = VmcoreInfo.parse(note.desc) if note is not None else None
            # Where the VMCOREINFO text is inside self.notes (0, 0 without one).
            self.vmcoreinfo_offset, self.vmcoreinfo_size = (note.desc_offset, len(note.desc)) if note else (0, 0)
            self.notes = self.original_notes
            self.warnings: list[str] = []
            if self.vmcoreinfo is None:
                self.warnings.append("no VMCOREINFO note: page filtering that needs kernel data is off")
            self.page_size = (self.vmcoreinfo.page_size if self.vmcoreinfo else None) or resource.getpagesize()
            self.memory = PhysicalMemory(self.file, self.segments, self.page_size)
            repair = self._repair_vmcoreinfo(note, self.vmcoreinfo) if note and self.vmcoreinfo else None
            if repair is not None:
                self.notes, warning = repair
                placed = next(n for n in elf.iter_notes(self.notes) if n.name == elf.VMCOREINFO_NOTE_NAME)
                self.vmcoreinfo = VmcoreInfo.parse(placed.desc)
                self.vmcoreinfo_offset, self.vmcoreinfo_size = placed.desc_offset, len(placed.desc)
                self.warnings.append(warning)
        except BaseException:
            self.file.close()
            raise

    def _memory_segments(self, segments: list[Segment]) -> list[Segment]:
        """The PT_LOADs that hold physical memory: all of a vmcore's (source/kcore.py: not all)."""
        return segments

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Vmcore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _repair_vmcoreinfo(self, note: elf.Note, info: VmcoreInfo) -> tuple[bytes, str] | None:
        """Readers refuse a dump whose VMCOREINFO lacks a valid OSRELEASE or PAGESIZE (drgn:
        "Invalid page size"), or has no note of that name: the dump then carries the lines
        that parse, with the values this run used, and the original bytes in a second note.
        Returns (the notes to carry, the warning that says so), None if nothing needs repair."""
        repairs, values = [], {}
        if note.name != elf.VMCOREINFO_NOTE_NAME:
            repairs.append(f"note named {note.name[:40]!r}, not VMCOREINFO")
        if info.problems:
            repairs.append(f"{len(info.problems)} line(s) ignored, first: {info.problems[0]}")
        if info.page_size is None:
            values["PAGESIZE"] = str(self.page_size)
            repairs.append(f"PAGESIZE={self.page_size} (assumed: no valid PAGESIZE)")
        if "NUMBER(phys_base)" in info.bad_keys:
            values["NUMBER(phys_base)"] = str(self.phys_base)
            repairs.append(f"NUMBER(phys_base)={self.phys_base} (from the kernel-text segment)")
        for key, value, source in self.arch.vmcoreinfo_repairs(info) if self.arch else ():
            values[key] = value
            repairs.append(f"{key} {source}")
        if not _RELEASE.match(info.osrelease or ""):
            uts = self._read_utsname()
            # Readers open no dump without an OSRELEASE; "unknown" is what the header says too.
            values["OSRELEASE"] = uts["release"] if uts else "unknown"
            repairs.append(f"OSRELEASE={values['OSRELEASE']} "
                           f"({'from init_uts_ns' if uts else 'not readable from init_uts_ns'})")
        if not repairs:
            return None
        # The other notes as they were; one VMCOREINFO, the repaired one (drgn takes the last).
        notes = b"".join([*(elf.build_note(other.name, other.type, other.desc)
                            for other in elf.iter_notes(self.original_notes)
                            if other.desc_offset != note.desc_offset),
                          elf.build_note(elf.VMCOREINFO_NOTE_NAME, 0, info.repaired(values)),
                          elf.build_note(ORIGINAL_VMCOREINFO_NOTE_NAME, 0, note.desc)])
        return notes, (f"VMCOREINFO repaired ({'; '.join(repairs)}); the dump keeps the original in note "
                       f"{ORIGINAL_VMCOREINFO_NOTE_NAME.decode()}")

    @property
    def osrelease(self) -> str:
        return (self.vmcoreinfo.osrelease if self.vmcoreinfo else None) or ""

    @property
    def phys_base(self) -> int:
        """VMCOREINFO's NUMBER(phys_base), else what the architecture derives from the PT_LOADs."""
        if self.vmcoreinfo and "phys_base" in self.vmcoreinfo.numbers:
            return self.vmcoreinfo.numbers["phys_base"]
        return self.arch.phys_base_of(self.segments, self.vmcoreinfo) if self.arch else 0

    def kernel_symbol_paddr(self, name: str) -> int | None:
        """Physical address of a kernel-image symbol named in VMCOREINFO (None on an
        architecture without a module)."""
        vaddr = self.vmcoreinfo.symbols.get(name) if self.vmcoreinfo else None
        if vaddr is None or self.arch is None:
            return None
        return self.arch.kernel_symbol_paddr(vaddr, self.phys_base, self.vmcoreinfo)

    def utsname(self) -> dict[str, str]:
        """The crashed kernel's utsname (init_uts_ns), or what VMCOREINFO and ELF tell."""
        # The kernel's own defaults for what is unknown ("(none)", UTS_VERSION placeholder):
        # libkdumpfile ignores a utsname with empty fields and then cannot tell the architecture.
        uts = {"sysname": "Linux", "nodename": "(none)", "release": self.osrelease or "unknown",
               "version": "unknown", "machine": self.machine, "domainname": "(none)"}
        found = self._read_utsname()
        # Trust memory only if it agrees with VMCOREINFO: a wrong phys_base reads garbage.
        return found if found is not None and found["release"] == self.osrelease else uts

    def _read_utsname(self) -> dict[str, str] | None:
        """init_uts_ns.name from memory, None unless it reads like a Linux utsname."""
        info = self.vmcoreinfo
        base = self.kernel_symbol_paddr("init_uts_ns")
        name_offset = info.offsets.get("uts_namespace.name") if info else None
        if base is None or name_offset is None:
            return None
        raw = self.memory.read(base + name_offset, len(UTS_NAMES) * UTS_FIELD_BYTES)
        fields = [raw[i * UTS_FIELD_BYTES:(i + 1) * UTS_FIELD_BYTES].split(b"\0", 1)[0].decode("utf-8", "replace")
                  for i in range(len(UTS_NAMES))]
        uts = dict(zip(UTS_NAMES, fields))
        return uts if uts["sysname"] == "Linux" and _RELEASE.match(uts["release"]) else None


def _vmcoreinfo_note(notes: list[elf.Note]) -> elf.Note | None:
    """The note named VMCOREINFO, else one whose name was damaged but that still holds the
    kernel's VMCOREINFO text; None if there is neither."""
    named = [note for note in notes if note.name == elf.VMCOREINFO_NOTE_NAME]
    lookalikes = [note for note in notes if note.name not in (b"CORE", ORIGINAL_VMCOREINFO_NOTE_NAME)
                  and VmcoreInfo.parse(note.desc).looks_like_vmcoreinfo()]
    return next(iter(named or lookalikes), None)


def set_bits(bitmap: bytearray, lo: int, hi: int) -> None:
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
