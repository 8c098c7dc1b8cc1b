"""Synthetic vmcores dumped in every format read back equal, through drgn and our readers."""

from __future__ import annotations

import os

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from collector.formats import flat
from tests.support.dumpcheck import check_elf, check_kdump
from tests.support.strategies import segment_layouts
from tests.support.vmcore_factory import (
    PAGE_SIZE,
    SegmentSpec,
    build_vmcore,
    expected_memory,
    vmcoreinfo_text,
)

pytestmark = pytest.mark.filterwarnings("ignore")


def write_vmcore(tmp_path, segments, **kwargs) -> str:
    path = os.path.join(tmp_path, f"vmcore-{os.urandom(4).hex()}")
    with open(path, "wb") as f:
        f.write(build_vmcore(segments, vmcoreinfo_text(), **kwargs))
    return path


@settings(max_examples=25)
@given(segments=segment_layouts(), dump_level=st.sampled_from([0, 1, 31]),
       compress=st.sampled_from(["zstd", "zlib", "none"]), threads=st.sampled_from([1, 2]))
def test_kdump_pages_equal_source(tmp_path_factory, save, segments, dump_level, compress, threads):
    tmp = tmp_path_factory.mktemp("kdump")
    vmcore = write_vmcore(tmp, segments)
    out = str(tmp / "dump")
    save(vmcore, "--output", out, "-d", str(dump_level), "--compress", compress,
         "--threads", str(threads), check=True)
    # Zero pages stay in the dump (they share one stored zero page): nothing is excluded.
    check_kdump(out, expected_memory(segments), PAGE_SIZE)


@settings(max_examples=20)
@given(segments=segment_layouts(), dump_level=st.sampled_from([0, 1]))
# Found by hypothesis: a vmcore whose only segment is all zero pages left no PT_LOAD at -d 1.
@example(segments=[SegmentSpec(paddr=0, data=bytes(2 * PAGE_SIZE), vaddr=0xFFFF888000000000, extra_memsz=0)],
         dump_level=1)
# Found by hypothesis: two equal segments, each taken for a copy of the other, left their zero
# pages undescribed.
@example(segments=[SegmentSpec(paddr=0, data=bytes(PAGE_SIZE)), SegmentSpec(paddr=0, data=bytes(PAGE_SIZE))],
         dump_level=1)
def test_elf_pages_equal_source_and_excluded_pages_read_as_zeros(tmp_path_factory, save, segments, dump_level):
    tmp = tmp_path_factory.mktemp("elf")
    vmcore = write_vmcore(tmp, segments)
    out = str(tmp / "dump.elf")
    save(vmcore, "--output", out, "--format", "elf", "-d", str(dump_level), check=True)
    expected = expected_memory(segments)
    zero = {pfn for pfn, page in expected.items() if page == bytes(PAGE_SIZE)} if dump_level & 1 else set()
    check_elf(out, expected, PAGE_SIZE, excluded=zero)


@settings(max_examples=15)
@given(segments=segment_layouts())
def test_flat_stream_rearranges_to_the_same_kdump_file(tmp_path_factory, save, segments):
    tmp = tmp_path_factory.mktemp("flat")
    vmcore = write_vmcore(tmp, segments)
    save(vmcore, "--output", str(tmp / "dump"), check=True)
    save(vmcore, "--output", str(tmp / "dump.flat"), "--format", "flat", check=True)
    rebuilt = tmp / "rebuilt"
    with open(tmp / "dump.flat", "rb") as stream, open(rebuilt, "wb") as out:
        def write_at(offset: int, data: bytes) -> None:
            out.seek(offset)
            out.write(data)
        flat.rearrange(stream, write_at)
    assert rebuilt.read_bytes() == (tmp / "dump").read_bytes()


def test_program_headers_anywhere_and_pn_xnum(tmp_path, save):
    """QEMU puts program headers at unusual offsets; >65535 headers use PN_XNUM."""
    data = os.urandom(3 * PAGE_SIZE) + bytes(PAGE_SIZE)
    segments = [SegmentSpec(0x100000, data)]
    for n, kwargs in enumerate(({"phoff": 192}, {"force_xnum": True})):
        vmcore = write_vmcore(tmp_path, segments, **kwargs)
        out = str(tmp_path / f"dump{n}")
        save(vmcore, "--output", out, "-d", "1", check=True)
        check_kdump(out, expected_memory(segments), PAGE_SIZE)


def test_many_segments_need_pn_xnum_in_elf_output(tmp_path, save):
    """An ELF dump with more than 65535 kept runs writes e_phnum = PN_XNUM; readers follow."""
    # Alternating zero and non-zero pages: at dump level 1 every non-zero page is its own run.
    page = b"\x5a" * PAGE_SIZE
    data = (page + bytes(PAGE_SIZE)) * 66000
    segments = [SegmentSpec(0x100000, data)]
    vmcore = write_vmcore(tmp_path, segments)
    out = str(tmp_path / "dump.elf")
    save(vmcore, "--output", out, "--format", "elf", "-d", "1", check=True)
    from collector.source.vmcore import Vmcore

    with Vmcore(out) as core:
        assert len(core.segments) == 66000
        assert core.memory.read(0x100000, PAGE_SIZE) == page
        assert core.memory.read(0x101000, PAGE_SIZE) == bytes(PAGE_SIZE)
