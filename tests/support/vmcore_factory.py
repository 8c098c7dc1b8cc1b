"""Synthetic ELF vmcores for property tests and edge cases (real ones come from tests/testbed).

They are laid out like /proc/vmcore: ELF64 core, one PT_NOTE (NT_PRSTATUS per CPU and a
VMCOREINFO note), PT_LOAD segments with physical addresses.
"""

from __future__ import annotations

from dataclasses import dataclass

from collector.source import elf

PAGE_SIZE = 4096
PRSTATUS_SIZE = 336  # struct elf_prstatus on x86_64
OSRELEASE = "6.1.0-synthetic-amd64"


def vmcoreinfo_text(page_size: int = PAGE_SIZE, extra: str = "") -> str:
    """A VMCOREINFO with what drgn needs to accept a dump of a synthetic kernel."""
    return (f"OSRELEASE={OSRELEASE}\nPAGESIZE={page_size}\n"
            "SYMBOL(swapper_pg_dir)=ffffffff82a0a000\nSYMBOL(init_top_pgt)=ffffffff82a0a000\n"
            "NUMBER(phys_base)=0\nNUMBER(pgtable_l5_enabled)=0\nKERNELOFFSET=0\nCRASHTIME=1764000000\n" + extra)


@dataclass
class SegmentSpec:
    paddr: int
    data: bytes
    vaddr: int = 0
    extra_memsz: int = 0  # bytes of p_memsz beyond p_filesz (read as zeros)


def build_notes(nr_cpus: int, vmcoreinfo: str | None) -> bytes:
    notes = b"".join(elf.build_note(b"CORE", elf.NT_PRSTATUS, bytes(PRSTATUS_SIZE)) for _ in range(nr_cpus))
    if vmcoreinfo is not None:
        notes += elf.build_note(elf.VMCOREINFO_NOTE_NAME, 0, vmcoreinfo.encode())
    return notes


def build_vmcore(segments: list[SegmentSpec], vmcoreinfo: str | None = None, nr_cpus: int = 2,
                 phoff: int = elf.ELF64_EHDR.size, force_xnum: bool = False,
                 machine: int = elf.EM_X86_64) -> bytes:
    """The bytes of an ELF vmcore holding ``segments`` (data aligned to pages in the file)."""
    notes = build_notes(nr_cpus, vmcoreinfo)
    phnum = len(segments) + 1
    xnum = force_xnum or phnum >= elf.PN_XNUM
    table_end = phoff + phnum * elf.ELF64_PHDR.size
    shoff = table_end if xnum else 0
    notes_offset = table_end + (elf.ELF64_SHDR.size if xnum else 0)
    offset = -(-(notes_offset + len(notes)) // PAGE_SIZE) * PAGE_SIZE
    phdrs = [elf.ELF64_PHDR.build(p_type=elf.PT_NOTE, p_flags=0, p_offset=notes_offset, p_vaddr=0,
                                  p_paddr=0, p_filesz=len(notes), p_memsz=len(notes), p_align=0)]
    body = bytearray()
    for seg in segments:
        phdrs.append(elf.ELF64_PHDR.build(
            p_type=elf.PT_LOAD, p_flags=7, p_offset=offset + len(body), p_vaddr=seg.vaddr,
            p_paddr=seg.paddr, p_filesz=len(seg.data), p_memsz=len(seg.data) + seg.extra_memsz, p_align=0))
        body += seg.data
        body += bytes(-len(body) % PAGE_SIZE)
    ehdr = elf.ELF64_EHDR.build(
        e_ident=elf.ELF_MAGIC + bytes([elf.ELFCLASS64, elf.ELFDATA2LSB, 1]) + bytes(9),
        e_type=elf.ET_CORE, e_machine=machine, e_version=1, e_entry=0, e_phoff=phoff,
        e_shoff=shoff, e_flags=0, e_ehsize=elf.ELF64_EHDR.size, e_phentsize=elf.ELF64_PHDR.size,
        e_phnum=elf.PN_XNUM if xnum else phnum, e_shentsize=elf.ELF64_SHDR.size if xnum else 0,
        e_shnum=1 if xnum else 0, e_shstrndx=0)
    out = bytearray(ehdr.ljust(phoff, b"\0"))
    out += b"".join(phdrs)
    if xnum:
        out += elf.ELF64_SHDR.build(sh_name=0, sh_type=0, sh_flags=0, sh_addr=0, sh_offset=0, sh_size=0,
                                    sh_link=0, sh_info=phnum, sh_addralign=0, sh_entsize=0)
    out += notes
    out += bytes(offset - len(out))
    out += body
    return bytes(out)




def expected_memory(segments: list[SegmentSpec]) -> dict[int, bytes]:
    """pfn -> page bytes as the vmcore holds them (first segment wins where they overlap)."""
    pages: dict[int, bytearray] = {}
    for seg in reversed(segments):
        end = seg.paddr + len(seg.data) + seg.extra_memsz
        for pfn in range(seg.paddr // PAGE_SIZE, -(-end // PAGE_SIZE)):
            page = pages.setdefault(pfn, bytearray(PAGE_SIZE))
            lo, hi = max(pfn * PAGE_SIZE, seg.paddr), min((pfn + 1) * PAGE_SIZE, end)
            chunk = seg.data[lo - seg.paddr:hi - seg.paddr].ljust(hi - lo, b"\0")
            page[lo - pfn * PAGE_SIZE:hi - pfn * PAGE_SIZE] = chunk
    return {pfn: bytes(page) for pfn, page in pages.items()}
