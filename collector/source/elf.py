"""ELF64 core file structures (input vmcores and ELF output), parsed and built here only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from .structs import Record

ELF_MAGIC = b"\x7fELF"
ELFCLASS64 = 2
ELFDATA2LSB = 1
ET_CORE = 4
EM_X86_64 = 62
EM_AARCH64 = 183
PT_LOAD = 1
PT_NOTE = 4
PN_XNUM = 0xFFFF
NT_PRSTATUS = 1
VMCOREINFO_NOTE_NAME = b"VMCOREINFO"

MACHINE_NAMES = {EM_X86_64: "x86_64", EM_AARCH64: "aarch64"}


def machine_name(e_machine: int) -> str:
    return MACHINE_NAMES.get(e_machine, f"machine-{e_machine}")


ELF64_EHDR = Record("Elf64_Ehdr", [
    ("e_ident", "16s"), ("e_type", "H"), ("e_machine", "H"), ("e_version", "I"),
    ("e_entry", "Q"), ("e_phoff", "Q"), ("e_shoff", "Q"), ("e_flags", "I"),
    ("e_ehsize", "H"), ("e_phentsize", "H"), ("e_phnum", "H"), ("e_shentsize", "H"),
    ("e_shnum", "H"), ("e_shstrndx", "H"),
])
ELF64_PHDR = Record("Elf64_Phdr", [
    ("p_type", "I"), ("p_flags", "I"), ("p_offset", "Q"), ("p_vaddr", "Q"),
    ("p_paddr", "Q"), ("p_filesz", "Q"), ("p_memsz", "Q"), ("p_align", "Q"),
])
ELF64_SHDR = Record("Elf64_Shdr", [
    ("sh_name", "I"), ("sh_type", "I"), ("sh_flags", "Q"), ("sh_addr", "Q"),
    ("sh_offset", "Q"), ("sh_size", "Q"), ("sh_link", "I"), ("sh_info", "I"),
    ("sh_addralign", "Q"), ("sh_entsize", "Q"),
])
ELF_NOTE_HEADER = Record("Elf64_Nhdr", [("n_namesz", "I"), ("n_descsz", "I"), ("n_type", "I")])


def align4(n: int) -> int:
    return (n + 3) & ~3


@dataclass(frozen=True)
class Segment:
    """One PT_LOAD: ``filesz`` bytes at file ``offset`` hold physical memory from ``paddr``."""

    paddr: int
    offset: int
    filesz: int
    memsz: int
    vaddr: int


class ElfCore:
    """The headers of a little-endian ELF64 core file, checked when opened: the model is
    pyelftools' ELFFile (``header``, ``num_segments``, ``get_segment``, ``iter_segments``).

    The file is read through ``pread(offset, length)``; ``name`` is what errors call it.
    Every malformed header is an InputError; segment contents are read only on request.
    """

    def __init__(self, name: str, size: int, pread: Callable[[int, int], bytes]) -> None:
        self.name = name
        self.size = size
        self._pread = pread
        self.header: Any = self._read_header()
        self._segments: list[Any] = self._read_program_headers()

    def _read_header(self) -> Any:
        if self.size == 0:
            raise InputError(f"{self.name} is empty")
        ident = self._pread(0, min(self.size, ELF64_EHDR.size))
        if not ident.startswith(ELF_MAGIC):
            raise InputError(f"{self.name} is not an ELF file (no ELF magic)")
        if len(ident) < ELF64_EHDR.size:
            raise InputError(f"{self.name}: truncated ELF header")
        ehdr = ELF64_EHDR.parse(ident)
        if ehdr.e_ident[4] != ELFCLASS64 or ehdr.e_ident[5] != ELFDATA2LSB:
            raise InputError(f"{self.name}: only little-endian ELF64 vmcores are supported")
        if ehdr.e_type != ET_CORE:
            raise InputError(f"{self.name}: not an ELF core file (e_type {ehdr.e_type})")
        if ehdr.e_phentsize != ELF64_PHDR.size:
            raise InputError(f"{self.name}: unexpected program header size {ehdr.e_phentsize}")
        return ehdr

    def _program_header_count(self) -> int:
        ehdr = self.header
        if ehdr.e_phnum != PN_XNUM:
            return int(ehdr.e_phnum)
        # More than 65535 headers: the real count is in section header 0's sh_info.
        if ehdr.e_shoff == 0 or ehdr.e_shoff + ELF64_SHDR.size > self.size:
            raise InputError(f"{self.name}: e_phnum is PN_XNUM but section header 0 is missing")
        return int(ELF64_SHDR.parse(self._pread(ehdr.e_shoff, ELF64_SHDR.size)).sh_info)

    def _read_program_headers(self) -> list[Any]:
        phoff, phnum = self.header.e_phoff, self._program_header_count()
        table_size = phnum * ELF64_PHDR.size
        if phoff + table_size > self.size:
            raise InputError(f"{self.name}: truncated program headers "
                             f"({phnum} at offset {phoff}, file has {self.size} bytes)")
        table = self._pread(phoff, table_size)
        phdrs = [ELF64_PHDR.parse(table, i * ELF64_PHDR.size) for i in range(phnum)]
        for i, ph in enumerate(phdrs):
            if ph.p_type in (PT_LOAD, PT_NOTE) and ph.p_offset + ph.p_filesz > self.size:
                raise InputError(f"{self.name}: segment {i} (offset {ph.p_offset:#x}, "
                                 f"{ph.p_filesz} bytes) runs past the end of the file ({self.size} bytes)")
        return phdrs

    def num_segments(self) -> int:
        return len(self._segments)

    def get_segment(self, n: int) -> Any:
        """Program header ``n`` (an ELF64_PHDR record)."""
        return self._segments[n]

    def iter_segments(self, p_type: int | None = None) -> Iterator[Any]:
        """The program headers in file order, only those of ``p_type`` if given."""
        return (ph for ph in self._segments if p_type is None or ph.p_type == p_type)

    def load_segments(self) -> list[Segment]:
        """The PT_LOADs: where the file holds physical memory."""
        return [Segment(ph.p_paddr, ph.p_offset, ph.p_filesz, ph.p_memsz, ph.p_vaddr)
                for ph in self.iter_segments(PT_LOAD)]

    def note_bytes(self) -> bytes:
        """The contents of every PT_NOTE, concatenated in file order (iter_notes walks them)."""
        return b"".join(self._pread(ph.p_offset, ph.p_filesz) for ph in self.iter_segments(PT_NOTE))


@dataclass(frozen=True)
class Note:
    name: bytes          # without the terminating NUL
    type: int
    desc_offset: int     # offset of the descriptor inside the note bytes
    desc: bytes


def iter_notes(notes: bytes) -> Iterator[Note]:
    """Walk ELF notes; stops at trailing zero padding, raises InputError on a note past the end."""
    offset = 0
    while offset + ELF_NOTE_HEADER.size <= len(notes):
        nhdr = ELF_NOTE_HEADER.parse(notes, offset)
        if nhdr.n_namesz == 0 and nhdr.n_descsz == 0 and nhdr.n_type == 0:
            return  # the kernel pads PT_NOTE with zeros after the last note
        name_offset = offset + ELF_NOTE_HEADER.size
        desc_offset = name_offset + align4(nhdr.n_namesz)
        end = desc_offset + align4(nhdr.n_descsz)
        if desc_offset + nhdr.n_descsz > len(notes):
            raise InputError(f"ELF note at offset {offset} runs past the end of PT_NOTE")
        name = notes[name_offset:name_offset + nhdr.n_namesz].rstrip(b"\0")
        yield Note(name, nhdr.n_type, desc_offset, notes[desc_offset:desc_offset + nhdr.n_descsz])
        offset = end


def build_note(name: bytes, note_type: int, desc: bytes) -> bytes:
    name_z = name + b"\0"
    return (ELF_NOTE_HEADER.build(n_namesz=len(name_z), n_descsz=len(desc), n_type=note_type)
            + name_z.ljust(align4(len(name_z)), b"\0") + desc.ljust(align4(len(desc)), b"\0"))
