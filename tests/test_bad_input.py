"""Bad input gets one clean line naming the problem and exit code 2, never a traceback."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.errors import InputError
from collector.source import elf
from collector.source.vmcore import Vmcore
from collector.source.vmcoreinfo import VmcoreInfo
from tests.conftest import run_save
from tests.support.vmcore_factory import (
    PAGE_SIZE,
    SegmentSpec,
    build_vmcore,
    vmcoreinfo_text,
)

GOOD = build_vmcore([SegmentSpec(0x100000, os.urandom(2 * PAGE_SIZE))], vmcoreinfo_text())
EHDR = elf.ELF64_EHDR.parse(GOOD)


def _patch(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new):]


def _phdr_offset(index: int) -> int:
    return EHDR.e_phoff + index * elf.ELF64_PHDR.size


BAD_INPUTS = {
    "empty": (b"", "is empty"),
    "not ELF": (b"hello world\n" * 10, "not an ELF file"),
    "truncated ELF header": (GOOD[:40], "truncated ELF header"),
    "32-bit ELF": (_patch(GOOD, 4, b"\x01"), "only little-endian ELF64"),
    "not a core": (_patch(GOOD, 16, b"\x02\x00"), "not an ELF core file"),
    "truncated program headers": (GOOD[:EHDR.e_phoff + 60], "truncated program headers"),
    # PT_LOAD's p_filesz grown far past the end of the file
    "segment past end": (_patch(GOOD, _phdr_offset(1) + 32, (1 << 40).to_bytes(8, "little")),
                         "runs past the end of the file"),
    # PT_NOTE turned into PT_NULL
    "no PT_NOTE": (_patch(GOOD, _phdr_offset(0), b"\x00\x00\x00\x00"), "no PT_NOTE"),
    "no PT_LOAD": (_patch(GOOD, _phdr_offset(1), b"\x00\x00\x00\x00"), "no PT_LOAD"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_vmcore_is_one_line_and_exit_2(tmp_path, name):
    data, message = BAD_INPUTS[name]
    vmcore = tmp_path / "vmcore"
    vmcore.write_bytes(data)
    out = tmp_path / "dump"
    proc = run_save(str(vmcore), "--output", str(out))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert message in proc.stderr
    assert not out.exists()


def test_missing_vmcore_file(tmp_path):
    proc = run_save(str(tmp_path / "nope"), "--output", str(tmp_path / "dump"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "cannot open" in proc.stderr


def test_bad_options_are_one_line_and_exit_2(tmp_path):
    for args in (["-d", "32"], ["--threads", "0"], ["--compress", "lz4"], ["--output", "-"]):
        proc = run_save(*args, str(tmp_path / "x"))
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, (args, proc.stderr)


def test_no_vmcoreinfo_still_dumps_and_says_so(tmp_path):
    data = os.urandom(PAGE_SIZE)
    vmcore = tmp_path / "vmcore"
    vmcore.write_bytes(build_vmcore([SegmentSpec(0x100000, data)], vmcoreinfo=None))
    proc = run_save(str(vmcore), "--output", str(tmp_path / "dump"), "-d", "1")
    assert proc.returncode == 0, proc.stderr
    assert "no VMCOREINFO" in proc.stderr
    from collector.formats.kdump import KdumpFile

    assert KdumpFile.open(str(tmp_path / "dump")).read_page(0x100) == data


def test_machine_without_address_translation_keeps_every_page_and_says_why_once(tmp_path):
    data = os.urandom(PAGE_SIZE)
    vmcore = tmp_path / "vmcore"
    vmcore.write_bytes(build_vmcore([SegmentSpec(0x100000, data)], vmcoreinfo_text(), machine=0))  # EM_NONE
    proc = run_save(str(vmcore), "--output", str(tmp_path / "dump"), "-d", "31")
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "address translation" in line]
    assert len(warnings) == 1 and "not machine-0" in warnings[0] and "are kept" in warnings[0], proc.stderr
    from collector.formats.kdump import KdumpFile

    assert KdumpFile.open(str(tmp_path / "dump")).read_page(0x100) == data


def test_garbage_vmcoreinfo_lines_are_reported_not_fatal(tmp_path):
    info = vmcoreinfo_text(extra="garbage line\nSIZE(page)=notanumber\n=x\n")
    vmcore = tmp_path / "vmcore"
    vmcore.write_bytes(build_vmcore([SegmentSpec(0x100000, os.urandom(PAGE_SIZE))], info))
    proc = run_save(str(vmcore), "--output", str(tmp_path / "dump"))
    assert proc.returncode == 0, proc.stderr
    assert "3 line(s) ignored" in proc.stderr


def test_vmcoreinfo_values_are_typed():
    info = VmcoreInfo.parse(b"OSRELEASE=6.1.0-18-amd64\nPAGESIZE=4096\nSYMBOL(mem_section)=ffff888003a3b000\n"
                            b"SIZE(page)=64\nOFFSET(page.flags)=0\nLENGTH(mem_section)=2048\n"
                            b"NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129\nNUMBER(phys_base)=-2097152\n"
                            b"KERNELOFFSET=1a000000\n\0\0")
    assert info.osrelease == "6.1.0-18-amd64" and info.page_size == 4096
    assert info.symbols["mem_section"] == 0xFFFF888003A3B000
    assert info.sizes["page"] == 64 and info.offsets["page.flags"] == 0 and info.lengths["mem_section"] == 2048
    assert info.numbers["PAGE_BUDDY_MAPCOUNT_VALUE"] == -129 and info.numbers["phys_base"] == -2097152
    assert info.integer("KERNELOFFSET") == 0x1A000000
    assert not info.problems


@settings(max_examples=300)
@given(data=st.binary(max_size=400))
def test_vmcoreinfo_parser_never_raises(data):
    VmcoreInfo.parse(data)


@settings(max_examples=300)
@given(data=st.data())
def test_elf_parser_fuzz_only_raises_input_error(tmp_path_factory, data):
    """Random byte changes to a valid vmcore: it opens or fails with InputError, nothing else."""
    blob = bytearray(GOOD)
    header_area = EHDR.e_phoff + 3 * elf.ELF64_PHDR.size + 600  # headers and notes
    for _ in range(data.draw(st.integers(1, 8))):
        blob[data.draw(st.integers(0, header_area - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(blob))))
    path = tmp_path_factory.mktemp("fuzz") / "vmcore"
    path.write_bytes(bytes(blob[:cut]))
    try:
        with Vmcore(str(path)) as core:
            core.memory.read(0x100000, PAGE_SIZE)
    except InputError:
        pass
