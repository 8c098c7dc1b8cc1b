"""A reader's view of a dump cut short is honest: --info says TRUNCATED and which part is gone,
never "complete"; a page whose data is not in the file is "page missing (dump cut short)", never
zeros or "damaged". The dumps are written by the real writer and cut as `head -c` would."""

from __future__ import annotations

import os
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.describe import INFO_COMPLETE, INFO_INCOMPLETE, INFO_UNREADABLE, describe
from collector.errors import InputError
from collector.formats.kdump import (
    CUT_SHORT,
    DISK_DUMP_HEADER,
    KDUMP_PARTS,
    KDUMP_SUB_HEADER,
    KdumpFile,
)
from collector.formats.kdump_image import KdumpImage, PageNotInDump
from tests.conftest import run_save, save_in_process
from tests.support.strategies import segment_layouts
from tests.support.vmcore_factory import (
    PAGE_SIZE,
    SegmentSpec,
    build_vmcore,
    vmcoreinfo_text,
)

UNREADABLE_PARTS = KDUMP_PARTS[:4]  # up to the bitmaps: no page can be found without them


def write_dump(tmp_path, segments, *options: str) -> bytes:
    (tmp_path / "vmcore").write_bytes(build_vmcore(segments, vmcoreinfo_text()))
    save_in_process(str(tmp_path / "vmcore"), "--output", str(tmp_path / "dump"), *options, check=True)
    return (tmp_path / "dump").read_bytes()


def part_ends(path) -> list[tuple[str, int]]:
    """Where each part of a complete dump ends, in file order."""
    dump = KdumpFile.open(str(path))
    try:
        sh = dump.sub_header
        return list(zip(KDUMP_PARTS, [
            DISK_DUMP_HEADER.size, PAGE_SIZE + KDUMP_SUB_HEADER.size,
            max(sh.offset_note + sh.size_note, sh.offset_vmcoreinfo + sh.size_vmcoreinfo),
            dump.layout.descs_offset, dump.descs_end, dump.size]))
    finally:
        dump.close()


def part_cut_at(ends: list[tuple[str, int]], length: int) -> str:
    return next(part for part, end in ends if length < end)


def check_cut(tmp_path, full: bytes, length: int) -> str:
    """Cut the dump to ``length`` bytes and check what every reader says; returns the cut part."""
    part = part_cut_at(part_ends(tmp_path / "dump"), length)
    cut = tmp_path / "cut"
    cut.write_bytes(full[:length])
    if part == "header":
        with pytest.raises(InputError, match="is empty" if length == 0 else "TRUNCATED inside its header"):
            describe(str(cut))
        return part
    info = describe(str(cut))
    assert "complete" not in info.text, info.text
    assert re.search(f"TRUNCATED: the file is {length} bytes but its {re.escape(part)} should reach", info.text)
    assert info.exit_code == (INFO_UNREADABLE if part in UNREADABLE_PARTS else INFO_INCOMPLETE)
    if part in UNREADABLE_PARTS:
        return part
    whole, dump = KdumpFile.open(str(tmp_path / "dump")), KdumpFile.open(str(cut))
    with KdumpImage(str(cut)) as image:
        missing = 0
        for pfn in range(whole.max_mapnr):
            if not whole.is_dumpable(pfn):
                continue
            page = dump.read_page(pfn)
            if page is None:
                missing += 1
                assert dump.absence(pfn) == CUT_SHORT
                with pytest.raises(PageNotInDump, match=re.escape(CUT_SHORT)):
                    image.memory.page(pfn)
            else:
                assert page == whole.read_page(pfn), hex(pfn)
    assert missing > 0 and f"{missing} of {whole.ndump} dumped pages are missing" in info.text
    return part


@settings(max_examples=40)
@given(segments=segment_layouts(), compress=st.sampled_from(["zstd", "zlib", "none"]),
       level=st.sampled_from(["0", "1", "31"]), where=st.floats(0, 1, exclude_max=True))
def test_a_dump_cut_anywhere_is_never_called_complete(tmp_path_factory, segments, compress, level, where):
    tmp = tmp_path_factory.mktemp("cut")
    full = write_dump(tmp, segments, "--compress", compress, "-d", level)
    check_cut(tmp, full, int(where * len(full)))


def test_a_dump_cut_inside_each_part_names_that_part(tmp_path):
    pages = [random.Random(i).randbytes(PAGE_SIZE) if i % 3 else bytes(PAGE_SIZE) for i in range(40)]
    full = write_dump(tmp_path, [SegmentSpec(0x100000, b"".join(pages))], "-d", "1")
    ends = part_ends(tmp_path / "dump")
    assert describe(str(tmp_path / "dump")).exit_code == INFO_COMPLETE
    seen = set()
    start = 0
    for part, end in ends:
        for length in sorted({start, (start + end) // 2, end - 1}):
            assert check_cut(tmp_path, full, length) == part
            seen.add(part)
        start = end
    assert seen == set(KDUMP_PARTS)


def test_info_of_a_cut_dump_says_truncated_and_exits_non_zero(tmp_path):
    full = write_dump(tmp_path, [SegmentSpec(0x100000, os.urandom(16 * PAGE_SIZE))])
    (tmp_path / "cut").write_bytes(full[:3072])  # the 3 KB case: the sub-header and all after it gone
    proc = run_save("--info", str(tmp_path / "cut"))
    assert proc.returncode == INFO_UNREADABLE, proc.stderr
    assert "TRUNCATED" in proc.stdout and "missing: sub-header" in proc.stdout
    assert "dump level" not in proc.stdout and "present" not in proc.stdout
    (tmp_path / "cut").write_bytes(full[:-100])
    proc = run_save("--info", str(tmp_path / "cut"))
    assert proc.returncode == INFO_INCOMPLETE and "1 of 16 dumped pages are missing" in proc.stdout


@pytest.mark.realkernel
def test_dmesg_of_a_real_dump_cut_short_names_the_missing_page(real_vmcore, tmp_path):
    crash = real_vmcore(kernel="6.1", mem_mib=512, workload=True)
    run_save(str(crash.path), "--output", str(tmp_path / "dump"), "-d", "31", check=True)
    full = (tmp_path / "dump").read_bytes()
    # At a twentieth the printk ring is past the cut (page data goes in order of value, and the
    # log is whole from a tenth of this dump on: README "Dumps cut short").
    (tmp_path / "cut").write_bytes(full[:len(full) // 20])
    proc = run_save("--dmesg", str(tmp_path / "cut"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert re.search(r"physical page 0x[0-9a-f]+ is not in the dump: page missing \(dump cut short\)", proc.stderr)
    assert "damaged" not in proc.stderr
    proc = run_save("--info", str(tmp_path / "cut"))
    assert proc.returncode == INFO_INCOMPLETE and "missing: page data" in proc.stdout
