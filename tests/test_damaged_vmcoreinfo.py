"""A damaged VMCOREINFO still gives a dump readers open: the dump carries a repaired VMCOREINFO
(the lines that parse, with the values this run used) and the original bytes in a note readers
skip; one warning says what was repaired. drgn and crash --osrelease open every dump."""

from __future__ import annotations

import os
import subprocess

import pytest

from collector.formats.kdump import KdumpFile
from collector.source import elf
from collector.source.vmcore import ORIGINAL_VMCOREINFO_NOTE_NAME, Vmcore
from collector.source.vmcoreinfo import VmcoreInfo
from tests.conftest import run_save
from tests.support.dumpcheck import drgn_program
from tests.support.vmcore_factory import (
    OSRELEASE,
    PAGE_SIZE,
    SegmentSpec,
    build_vmcore,
    vmcoreinfo_text,
)

# A utsname in memory where SYMBOL(init_uts_ns) says (phys_base 0), so OSRELEASE can be recovered.
UTS_VADDR, UTS_PADDR, UTS_NAME_OFFSET = 0xFFFFFFFF81200000, 0x1200000, 4
UTS_INFO = f"SYMBOL(init_uts_ns)={UTS_VADDR:x}\nOFFSET(uts_namespace.name)={UTS_NAME_OFFSET}\n"
# (what is damaged, bytes of the vmcore's VMCOREINFO note -> damaged bytes of the same length)
MUTATIONS = {
    "garbled_lines": lambda b: b.replace(b"OSRELEASE=", b"OS\x01ELEASE=")
                                .replace(b"SYMBOL(swapper", b"SYMBOL(sw\xffpper"),
    "page_size_3333": lambda b: b.replace(b"PAGESIZE=4096", b"PAGESIZE=3333"),
    "phys_base_not_a_number": lambda b: _replace_value(b, b"NUMBER(phys_base)=", b"z"),
    "note_renamed": lambda b: b.replace(elf.VMCOREINFO_NOTE_NAME + b"\0", b"VMCOREINFX\0", 1),
}


def _replace_value(data: bytes, key: bytes, fill: bytes) -> bytes:
    start = data.index(key) + len(key)
    end = data.index(b"\n", start)
    return data[:start] + fill * (end - start) + data[end:]


def synthetic_vmcore(path) -> None:
    uts = b"".join(name.ljust(65, b"\0") for name in (b"Linux", b"crashed-host", OSRELEASE.encode(), b"#1 SMP",
                                                      b"x86_64", b"(none)"))
    segments = [SegmentSpec(0x100000, os.urandom(4 * PAGE_SIZE)),
                SegmentSpec(UTS_PADDR, (bytes(UTS_NAME_OFFSET) + uts).ljust(PAGE_SIZE, b"\0"))]
    path.write_bytes(build_vmcore(segments, vmcoreinfo_text(extra=UTS_INFO)))


def damage(path, mutation: str) -> bytes:
    """Damage the VMCOREINFO note of the vmcore at ``path`` in place; returns its original desc."""
    with Vmcore(str(path)) as vmcore:
        notes_at = _notes_offset(path)
        original = vmcore.notes
        desc = vmcore.notes[vmcore.vmcoreinfo_offset:vmcore.vmcoreinfo_offset + vmcore.vmcoreinfo_size]
    damaged = MUTATIONS[mutation](original)
    assert damaged != original and len(damaged) == len(original)
    with open(path, "r+b") as f:
        f.seek(notes_at)
        f.write(damaged)
    return MUTATIONS[mutation](desc) if mutation != "note_renamed" else desc


def _notes_offset(path) -> int:
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    ehdr = elf.ELF64_EHDR.parse(head)
    phdrs = [elf.ELF64_PHDR.parse(head, ehdr.e_phoff + i * elf.ELF64_PHDR.size) for i in range(ehdr.e_phnum)]
    return next(ph.p_offset for ph in phdrs if ph.p_type == elf.PT_NOTE)


def check_dump_opens(dump: str, damaged_desc: bytes, osrelease: str) -> VmcoreInfo:
    drgn_program(dump)  # raises if drgn refuses the dump
    crash = subprocess.run(["crash", "--osrelease", dump], capture_output=True, text=True, timeout=120,
                           check=False)
    assert crash.returncode == 0 and crash.stdout.strip() == osrelease, crash.stdout + crash.stderr
    kdump = KdumpFile.open(dump)
    notes = {note.name: note.desc for note in elf.iter_notes(kdump.notes)}
    assert notes[ORIGINAL_VMCOREINFO_NOTE_NAME] == damaged_desc  # the original bytes are kept
    info = VmcoreInfo.parse(kdump.vmcoreinfo)
    assert info.text.encode() == notes[elf.VMCOREINFO_NOTE_NAME].rstrip(b"\0") and not info.problems
    return info


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_damaged_vmcoreinfo_is_repaired_in_the_dump(tmp_path, mutation):
    vmcore = tmp_path / "vmcore"
    synthetic_vmcore(vmcore)
    damaged_desc = damage(vmcore, mutation)
    proc = run_save(str(vmcore), "--output", str(tmp_path / "dump"))
    assert proc.returncode == 0, proc.stderr
    assert sum("VMCOREINFO repaired" in line for line in proc.stderr.splitlines()) == 1, proc.stderr
    info = check_dump_opens(str(tmp_path / "dump"), damaged_desc, OSRELEASE)
    assert info.page_size == PAGE_SIZE and info.numbers["phys_base"] == 0
    assert info.symbols["swapper_pg_dir"] == info.symbols["init_top_pgt"]


def test_intact_vmcoreinfo_is_carried_byte_for_byte(tmp_path):
    vmcore = tmp_path / "vmcore"
    synthetic_vmcore(vmcore)
    proc = run_save(str(vmcore), "--output", str(tmp_path / "dump"))
    assert proc.returncode == 0 and "repaired" not in proc.stderr, proc.stderr
    with Vmcore(str(vmcore)) as source:
        assert KdumpFile.open(str(tmp_path / "dump")).notes == source.notes


@pytest.mark.realkernel
@pytest.mark.parametrize("mutation", MUTATIONS)
def test_damaged_vmcoreinfo_of_a_real_crash_gives_a_dump_readers_open(real_vmcore, tmp_path, mutation):
    crash = real_vmcore(kernel="6.1", mem_mib=512, workload=True)
    vmcore = tmp_path / "vmcore"
    subprocess.run(["cp", "--sparse=always", str(crash.path), str(vmcore)], check=True)
    damaged_desc = damage(vmcore, mutation)
    proc = run_save(str(vmcore), "--output", str(tmp_path / "dump"), "-d", "31")
    assert proc.returncode == 0, proc.stderr
    assert sum("VMCOREINFO repaired" in line for line in proc.stderr.splitlines()) == 1, proc.stderr
    check_dump_opens(str(tmp_path / "dump"), damaged_desc, crash.osrelease)

