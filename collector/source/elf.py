"""ELF64 core file structures (input vmcores and ELF output), parsed and built here only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

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
