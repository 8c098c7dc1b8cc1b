"""ELF core output (makedumpfile -E): the vmcore's notes and its dumpable pages as PT_LOADs.

Each source PT_LOAD is cut into runs of kept pages, so overlapping source segments (the
kexec_load kernel-text segment) stay as they were and readers still find the kernel text
mapping. With dump level bit 1 zero pages are left out as well, which needs the pages read
before the program headers can be sized: the ELF format costs one more pass over memory than
the kdump format.
"""

from __future__ import annotations

import time
from typing import Iterator

from .. import elf, fastcopy
from ..classify import DL_ZERO, PageClassifier, PageCounts
from ..pipeline import PageReader
from ..sink import Sink
from ..vmcore import Segment, Vmcore
from ..progress import Progress
from .kdump import FLUSH_BYTES, TARGET_FULL_ERRNOS, DumpResult

PF_RWX = 7


def _kept_ranges(vmcore: Vmcore, classifier: PageClassifier,
                 counts: PageCounts | None = None) -> Iterator[tuple[int, int, int]]:
    """(segment index, first paddr, end paddr) of each run of kept bytes, same order each call.

    Pages per class are added to ``counts`` when given."""
    ps = vmcore.page_size
    reader = PageReader(vmcore.memory, detect_zero=True)
    pending: dict[int, tuple[int, int]] = {}
    for start, end in classifier.windows():
        kept = classifier.dumpable_bitmap(start, end, counts)
        if counts is not None:
            counts.present += fastcopy.count_bits(classifier.present_bitmap(start, end), 0, end - start)
        if classifier.dump_level & DL_ZERO:
            for batch in reader.batches(start, end, kept.copy()):
                if counts is not None:
                    counts.zero += batch.nzero
                for i in range(batch.count):
                    if batch.zero[i]:
                        bit = batch.pfns[i] - start
                        kept[bit >> 3] &= ~(1 << (bit & 7)) & 0xFF
        for index, seg in enumerate(vmcore.segments):
            seg_lo, seg_hi = seg.paddr // ps, -(-(seg.paddr + seg.memsz) // ps)
            lo, hi = max(seg_lo, start), min(seg_hi, end)
            if lo >= hi:
                continue
            for run_lo, run_hi in fastcopy.bit_runs(kept, lo - start, hi - start):
                paddr_lo = max((run_lo + start) * ps, seg.paddr)
                paddr_hi = min((run_hi + start) * ps, seg.paddr + seg.memsz)
                previous = pending.get(index)
                if previous and previous[1] == paddr_lo:
                    pending[index] = (previous[0], paddr_hi)
                    continue
                if previous:
                    yield index, *previous
                pending[index] = (paddr_lo, paddr_hi)
    for index, (lo, hi) in sorted(pending.items()):
        yield index, lo, hi


def _load_phdr(seg: Segment, lo: int, offset: int, hi: int) -> bytes:
    return elf.ELF64_PHDR.build(
        p_type=elf.PT_LOAD, p_flags=PF_RWX, p_offset=offset,
        p_vaddr=seg.vaddr + (lo - seg.paddr) if seg.vaddr else 0, p_paddr=lo,
        p_filesz=hi - lo, p_memsz=hi - lo, p_align=0)


def write_elf(sink: Sink, vmcore: Vmcore, classifier: PageClassifier, progress: Progress) -> DumpResult:
    result = DumpResult()
    ps = vmcore.page_size
    started = time.monotonic()
    progress.start("layout", 1)
    nloads = sum(1 for _ in _kept_ranges(vmcore, classifier, result.counts))
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
    total = sum(seg.memsz for seg in vmcore.segments)
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
        for index, lo, hi in _kept_ranges(vmcore, classifier):
            current = (vmcore.segments[index], lo, data_offset)
            for chunk in range(lo, hi, FLUSH_BYTES):
                length = min(FLUSH_BYTES, hi - chunk)
                sink.write_at(data_offset, vmcore.memory.read(chunk, length))
                data_offset += length
                result.bytes_in += length
                progress.update(result.bytes_in)
            phdrs += _load_phdr(*current, hi)
            current = None
            result.counts.written += -(-(hi - lo) // ps)
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
            segment, lo, offset = current
            phdrs += _load_phdr(segment, lo, offset, lo + data_offset - offset)
        try:  # headers of the segments already written; the space for them is reserved
            sink.write_at(phdr_offset, phdrs)
        except OSError:
            pass
    progress.finish()
    result.bytes_out = data_offset
    result.phases["pages"] = time.monotonic() - started
    return result
