"""ELF core output (makedumpfile -E): the vmcore's notes and its dumpable pages as PT_LOADs.

Every byte of every source PT_LOAD is still described: each is cut into runs of kept pages,
and a run's PT_LOAD also covers the excluded pages up to the next run (p_memsz > p_filesz), as
makedumpfile -E does, so readers read zeros there rather than failing to find the address
(drgn: "could not find physical memory segment"), and a segment with no kept page at all is
one PT_LOAD without file bytes. A source segment that repeats part of another (the
kexec_load kernel-text segment) keeps its kept runs only, so readers still find the kernel
text mapping and read the rest through the segment it repeats. With dump level
bit 1 zero pages are left out of the file too, which needs the pages read before the program
headers can be sized: the ELF format costs one more pass over memory than the kdump format.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from .. import fastcopy
from ..dump_level import DL_ZERO
from ..progress import Progress
from ..scan.classify import PageClassifier, PageCounts
from ..sink import Sink
from ..source import elf
from ..source.vmcore import Segment, Vmcore
from .kdump import FLUSH_BYTES, TARGET_FULL_ERRNOS, DumpResult

PF_RWX = 7


def _kept_bitmap(vmcore: Vmcore, classifier: PageClassifier, start: int, end: int,
                 counts: PageCounts | None) -> bytearray:
    """The window's 2nd bitmap without its zero pages when dump level bit 1 asks for that."""
    kept = classifier.dumpable_bitmap(start, end, counts)
    if counts is not None:
        counts.present += fastcopy.count_bits(classifier.present_bitmap(start, end), 0, end - start)
    if classifier.dump_level & DL_ZERO:
        for window in vmcore.memory.windows(start, end, kept):
            try:
                zero = fastcopy.clear_zero_pages(window.source, 0, kept, window.first_pfn - start, window.npages,
                                                 vmcore.page_size)
            finally:
                window.close()
            if counts is not None:
                counts.zero += zero
    return kept


def _copies(vmcore: Vmcore) -> set[int]:
    """Indexes of the segments that only repeat part of another (kexec_load's kernel-text
    PT_LOAD): inside a larger one, or equal to an earlier one (one of equals stays whole)."""
    segs = vmcore.segments

    def repeats(i: int, j: int) -> bool:
        a, b = segs[i], segs[j]
        inside = b.paddr <= a.paddr and a.paddr + a.memsz <= b.paddr + b.memsz
        equal = (a.paddr, a.memsz) == (b.paddr, b.memsz)
        return i != j and inside and (not equal or j < i)

    return {i for i in range(len(segs)) if any(repeats(i, j) for j in range(len(segs)))}


def _loads(vmcore: Vmcore, classifier: PageClassifier,
           counts: PageCounts | None = None) -> Iterator[tuple[int, int, int, int]]:
    """(segment index, paddr, filesz, memsz) of each PT_LOAD, the same each call: a run of
    kept bytes (filesz) and the excluded bytes after it up to the next run (memsz), covering
    each source segment whole. A segment that repeats another gets its runs only (memsz =
    filesz): readers find the rest in the segment it repeats, and makedumpfile, which reads an
    address from the first PT_LOAD that spans it, would otherwise take excluded pages of the
    copy for holes. Pages per class are added to ``counts`` when given."""
    ps = vmcore.page_size
    copies = _copies(vmcore)
    run: dict[int, tuple[int, int]] = {}  # segment index -> its last run of kept bytes, not yet out
    for start, end in classifier.windows():
        kept = _kept_bitmap(vmcore, classifier, start, end, counts)
        for index, seg in enumerate(vmcore.segments):
            lo, hi = max(seg.paddr // ps, start), min(-(-(seg.paddr + seg.memsz) // ps), end)
            if lo >= hi:
                continue
            for run_lo, run_hi in fastcopy.bit_runs(kept, lo - start, hi - start):
                paddr_lo = max((run_lo + start) * ps, seg.paddr)
                paddr_hi = min((run_hi + start) * ps, seg.paddr + seg.memsz)
                previous = run.get(index)
                if previous is None:
                    if paddr_lo > seg.paddr and index not in copies:  # excluded pages before the first run
                        yield index, seg.paddr, 0, paddr_lo - seg.paddr
                elif previous[1] == paddr_lo:  # the run goes on into this window
                    run[index] = (previous[0], paddr_hi)
                    continue
                else:
                    size = previous[1] - previous[0]
                    yield index, previous[0], size, size if index in copies else paddr_lo - previous[0]
                run[index] = (paddr_lo, paddr_hi)
    for index, seg in enumerate(vmcore.segments):
        if index in run:
            lo, hi = run[index]
            yield index, lo, hi - lo, hi - lo if index in copies else seg.paddr + seg.memsz - lo
        elif seg.memsz and index not in copies:  # not one page of it kept
            yield index, seg.paddr, 0, seg.memsz


def _load_phdr(seg: Segment, paddr: int, offset: int, filesz: int, memsz: int) -> bytes:
    return elf.ELF64_PHDR.build(
        p_type=elf.PT_LOAD, p_flags=PF_RWX, p_offset=offset,
        p_vaddr=seg.vaddr + (paddr - seg.paddr) if seg.vaddr else 0, p_paddr=paddr,
        p_filesz=filesz, p_memsz=memsz, p_align=0)


def write_elf(sink: Sink, vmcore: Vmcore, classifier: PageClassifier, progress: Progress) -> DumpResult:
    result = DumpResult()
    ps = vmcore.page_size
    started = time.monotonic()
    progress.start("layout", 1)
    nloads = total = 0  # PT_LOADs, bytes of page data
    for _, _, filesz, _ in _loads(vmcore, classifier, result.counts):
        nloads += 1
        total += filesz
    progress.finish()
    result.phases["layout"] = time.monotonic() - started
    started = time.monotonic()
    phnum = nloads + 1
    xnum = phnum >= elf.PN_XNUM
    phoff = elf.ELF64_EHDR.size
    notes_offset = phoff + phnum * elf.ELF64_PHDR.size
    header_end = notes_offset + len(vmcore.notes)
    shoff = header_end if xnum else 0
    if xnum:
        header_end += elf.ELF64_SHDR.size
    data_offset = -(-header_end // ps) * ps
    ehdr = elf.ELF64_EHDR.build(
        e_ident=elf.ELF_MAGIC + bytes([elf.ELFCLASS64, elf.ELFDATA2LSB, 1]) + bytes(9),
        e_type=elf.ET_CORE, e_machine=vmcore.e_machine, e_version=1, e_entry=0, e_phoff=phoff,
        e_shoff=shoff, e_flags=0, e_ehsize=elf.ELF64_EHDR.size, e_phentsize=elf.ELF64_PHDR.size,
        e_phnum=elf.PN_XNUM if xnum else phnum, e_shentsize=elf.ELF64_SHDR.size if xnum else 0,
        e_shnum=1 if xnum else 0, e_shstrndx=0)
    note_phdr = elf.ELF64_PHDR.build(p_type=elf.PT_NOTE, p_flags=0, p_offset=notes_offset, p_vaddr=0,
                                     p_paddr=0, p_filesz=len(vmcore.notes), p_memsz=len(vmcore.notes), p_align=0)
    progress.start("pages", total)
    phdrs = bytearray()  # program headers whose data is written, not yet the headers
    current = None       # (segment, first paddr, file offset) of the range being written
    phdr_offset = phoff + elf.ELF64_PHDR.size
    try:
        result.readable = False  # until the ELF header and the notes are out
        sink.reserve(0, data_offset)
        sink.write_at(0, ehdr + note_phdr)
        sink.write_at(notes_offset, vmcore.notes)
        if xnum:
            sink.write_at(shoff, elf.ELF64_SHDR.build(
                sh_name=0, sh_type=0, sh_flags=0, sh_addr=0, sh_offset=0, sh_size=0, sh_link=0,
                sh_info=phnum, sh_addralign=0, sh_entsize=0))
        result.readable = True
        for index, lo, filesz, memsz in _loads(vmcore, classifier):
            current = (vmcore.segments[index], lo, data_offset)
            for chunk in range(lo, lo + filesz, FLUSH_BYTES):
                length = min(FLUSH_BYTES, lo + filesz - chunk)
                sink.write_at(data_offset, vmcore.memory.read(chunk, length))
                data_offset += length
                result.bytes_in += length
                progress.update(result.bytes_in)
            phdrs += _load_phdr(*current, filesz, memsz)
            current = None
            result.counts.written += -(-filesz // ps)
            if len(phdrs) >= 1 << 16:
                sink.write_at(phdr_offset, phdrs)
                phdr_offset += len(phdrs)
                phdrs = bytearray()
        sink.write_at(phdr_offset, phdrs)
    except OSError as e:
        if e.errno not in TARGET_FULL_ERRNOS:
            raise
        result.complete, result.error = False, f"target full or failing: {e.strerror or e}"
        if current is not None and data_offset > current[2]:  # keep what got out of this range
            segment, lo, offset = current  # (and no more: zeros there would be wrong bytes)
            phdrs += _load_phdr(segment, lo, offset, data_offset - offset, data_offset - offset)
        try:  # headers of the segments already written; the space for them is reserved
            sink.write_at(phdr_offset, phdrs)
        except OSError:
            pass
    progress.finish()
    result.bytes_out = data_offset
    result.phases["pages"] = time.monotonic() - started
    return result
