"""benchmarks/reader_pages.py measures which pages the readers read: its reads map to the right
pfns, and its copy that keeps only some pages is a dump whose other pages readers see missing."""

from __future__ import annotations

from pathlib import Path

from benchmarks.reader_pages import DumpPages, keep_only
from collector.formats.kdump import PAGE_DESC, KdumpFile
from tests.conftest import run_save
from tests.support.vmcore_factory import SegmentSpec, build_vmcore

BASE_PFN = 0x100


def dump_of(tmp_path: Path) -> DumpPages:
    """A -d 1 dump of eight distinct pages and two zero pages (which share one data block)."""
    pages = [bytes([pfn + 1]) * 4096 for pfn in range(8)] + [bytes(4096)] * 2
    (tmp_path / "vmcore").write_bytes(build_vmcore([SegmentSpec(BASE_PFN * 4096, b"".join(pages))]))
    run_save(str(tmp_path / "vmcore"), "--output", str(tmp_path / "dump"), "-d", "1", check=True)
    return DumpPages(tmp_path / "dump")


def test_a_read_of_a_descriptor_or_of_page_data_names_its_pfn(tmp_path):
    dump = dump_of(tmp_path)
    rank = dump.pfns.index(BASE_PFN + 3)
    assert dump.pfns_read(dump.file.layout.descs_offset + rank * PAGE_DESC.size, PAGE_DESC.size) == {BASE_PFN + 3}
    desc = dump.descs[rank]
    assert dump.pfns_read(desc.offset + 1, 2) == {BASE_PFN + 3}
    # Reading two pages' data at once names both.
    next_desc = dump.descs[dump.pfns.index(BASE_PFN + 4)]
    start, end = sorted((desc.offset, next_desc.offset))
    assert {BASE_PFN + 3, BASE_PFN + 4} <= dump.pfns_read(start, end - start + 1)


def test_the_shared_zero_page_is_no_pages_data_and_costs_nothing(tmp_path):
    dump = dump_of(tmp_path)
    zero = dump.descs[dump.pfns.index(BASE_PFN + 8)]
    assert zero.offset == dump.descs[dump.pfns.index(BASE_PFN + 9)].offset
    assert dump.pfns_read(zero.offset, zero.size) == set()
    assert dump.size[BASE_PFN + 8] == 0 and dump.size[BASE_PFN + 1] > 0


def test_a_copy_keeping_some_pages_reads_the_others_as_missing(tmp_path):
    dump = dump_of(tmp_path)
    keep_only(dump, {BASE_PFN + 1, BASE_PFN + 5}, tmp_path / "only")
    copy = KdumpFile.open(str(tmp_path / "only"))
    assert not copy.complete
    assert copy.read_page(BASE_PFN + 1) == bytes([2]) * 4096
    assert copy.read_page(BASE_PFN + 5) == bytes([6]) * 4096
    assert copy.read_page(BASE_PFN + 2) is None
    assert copy.pages_missing == len(dump.pfns) - 2
    assert dump.file.complete  # the dump it was copied from is untouched
