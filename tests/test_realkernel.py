"""Real vmcores from crashed Debian kernels (tests/testbed): our dumps read back equal through
drgn, and our page filter agrees with makedumpfile bit for bit."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from collector.formats.kdump import KdumpFile
from collector.kernel.arch import kernel_memory
from collector.kernel.mm import SectionMemMap
from collector.kernel.page_encoding import PageEncoding
from collector.source.vmcore import Vmcore
from tests.conftest import run_save
from tests.support.dumpcheck import drgn_page, drgn_program

pytestmark = pytest.mark.realkernel
LEVELS = [1, 2, 4, 8, 16, 31]
BOOTS_61 = [("pvh", "load"), ("bios", "file")]  # KASLR off + kexec_load, KASLR on + kexec_file_load


@pytest.fixture(scope="module", params=BOOTS_61, ids=lambda b: f"{b[0]}-{b[1]}")
def vmcore_61(request, real_vmcore):
    boot, kexec = request.param
    return real_vmcore(kernel="6.1", mem_mib=512, workload=True, boot=boot, kexec=kexec)


@pytest.fixture(scope="module")
def vmcore_612(real_vmcore):
    return real_vmcore(kernel="6.12", mem_mib=512, workload=True)


def dump(vmcore, tmp_path, *args: str) -> str:
    out = str(tmp_path / f"dump{'-'.join(args)}")
    run_save(str(vmcore.path), "--output", out, *args, check=True)
    return out


def makedumpfile_dump(vmcore, tmp_path, level: int) -> str:
    out = str(tmp_path / f"makedumpfile-d{level}")
    subprocess.run(["makedumpfile", "-l", "-d", str(level), str(vmcore.path), out], check=True,
                   capture_output=True)
    return out


def bits(bitmap: bytes, nbits: int) -> set[int]:
    return {pfn for pfn in range(nbits) if bitmap[pfn >> 3] >> (pfn & 7) & 1}


def test_dump_pages_equal_the_vmcore(vmcore_61, tmp_path):
    """-d 31 with zstd: drgn reads every dumped page equal to the crashed kernel's memory."""
    path = dump(vmcore_61, tmp_path, "-d", "31")
    prog = drgn_program(path)
    kdump = KdumpFile.open(path)
    with Vmcore(str(vmcore_61.path)) as source:
        dumped = bits(kdump.dumpable, kdump.max_mapnr)
        assert len(dumped) > 10000
        for pfn in sorted(dumped):
            assert drgn_page(prog, pfn, 4096) == source.memory.read(pfn * 4096, 4096), hex(pfn)


def test_unfiltered_dump_holds_every_page(vmcore_61, tmp_path):
    path = dump(vmcore_61, tmp_path, "-d", "0", "--compress", "zlib")
    kdump = KdumpFile.open(path)
    with Vmcore(str(vmcore_61.path)) as source:
        present = {pfn for run in source.memory.runs for pfn in range(run.start_pfn, run.end_pfn)}
        present |= set(source.memory.partial_pfns)
        assert bits(kdump.dumpable, kdump.max_mapnr) == present
        for pfn in sorted(present)[::97]:  # a spread sample; the -d 31 test reads all kept pages
            assert kdump.read_page(pfn) == source.memory.read(pfn * 4096, 4096)


@pytest.mark.skipif(not shutil.which("makedumpfile"), reason="makedumpfile not installed")
@pytest.mark.parametrize("level", LEVELS)
def test_bitmaps_equal_makedumpfile(vmcore_61, tmp_path, level):
    """Both bitmaps equal Debian makedumpfile 1.7.2's for the same level. The one intended
    difference: a page only partly inside a PT_LOAD (pfn 0x9f under kexec_load) is kept, as
    makedumpfile 1.7.9 does, where 1.7.2 drops it."""
    ours = KdumpFile.open(dump(vmcore_61, tmp_path, "-d", str(level)))
    theirs = KdumpFile.open(makedumpfile_dump(vmcore_61, tmp_path, level))
    assert ours.max_mapnr == theirs.max_mapnr
    with Vmcore(str(vmcore_61.path)) as source:
        partial = set(source.memory.partial_pfns)
    for name in ("present", "dumpable"):
        a, b = bits(getattr(ours, name), ours.max_mapnr), bits(getattr(theirs, name), theirs.max_mapnr)
        assert not b - a, f"{name}: makedumpfile keeps pages we drop: {sorted(map(hex, b - a))[:20]}"
        assert a - b <= partial, f"{name}: we keep pages makedumpfile drops: {sorted(map(hex, a - b))[:20]}"


@pytest.mark.skipif(not shutil.which("makedumpfile"), reason="makedumpfile not installed")
@pytest.mark.parametrize("dump_format", [("--compress", "zlib"), ("--format", "elf")], ids=["kdump", "elf"])
def test_makedumpfile_reads_the_kernel_log_from_our_filtered_dump(vmcore_61, tmp_path, dump_format):
    path = dump(vmcore_61, tmp_path, "-d", "31", *dump_format)
    out = tmp_path / "dmesg.txt"
    proc = subprocess.run(["makedumpfile", "--dump-dmesg", path, str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    theirs = out.read_text(errors="replace")
    assert vmcore_61.marker in theirs
    # 1.7.2 prints no caller id (tests/test_dmesg.py compares the caller id with upstream's).
    ours = run_save("--dmesg", str(vmcore_61.path), "--dmesg-format", "plain", check=True).stdout
    assert theirs.splitlines() == ours.splitlines()


@pytest.mark.skipif(not shutil.which("crash"), reason="crash not installed")
def test_crash_reads_our_dump(vmcore_61, tmp_path):
    path = dump(vmcore_61, tmp_path, "-d", "31")
    proc = subprocess.run(["crash", "--osrelease", path], capture_output=True, text=True)
    assert proc.stdout.strip() == vmcore_61.osrelease


@pytest.mark.skipif(not shutil.which("makedumpfile"), reason="makedumpfile not installed")
def test_6_12_differs_from_makedumpfile_1_7_2_only_where_it_lacks_page_types(vmcore_612, tmp_path):
    """Debian's makedumpfile 1.7.2 predates Linux 6.12's page types: it cannot see that a page
    is slab (PAGE_SLAB_MAPCOUNT_VALUE, 6.10+) or hugetlb (PAGE_HUGETLB_MAPCOUNT_VALUE, 6.9+).
    Every page where our -d 31 bitmap differs from its bitmap must be one of those, checked
    against the page's own struct page, or the partial low-memory page."""
    ours = KdumpFile.open(dump(vmcore_612, tmp_path, "-d", "31"))
    theirs = KdumpFile.open(makedumpfile_dump(vmcore_612, tmp_path, 31))
    a, b = bits(ours.dumpable, ours.max_mapnr), bits(theirs.dumpable, theirs.max_mapnr)
    with Vmcore(str(vmcore_612.path)) as source:
        info = source.vmcoreinfo
        params = PageEncoding.from_vmcoreinfo(info).params
        mem_map = SectionMemMap(kernel_memory(source), info, source.page_size)

        def page_type(pfn: int) -> int:
            raw = mem_map.read_struct_pages(pfn, 1)
            return int.from_bytes(raw[params["off_mapcount"]:params["off_mapcount"] + 4], "little")

        def hugetlb_head(pfn: int) -> int | None:
            for order in range(0, 19):  # walk back to the folio head (naturally aligned)
                head = pfn & ~((1 << order) - 1)
                if page_type(head) == params["hugetlb_value"]:
                    return head
            return None

        kept_by_us = a - b - set(source.memory.partial_pfns)
        assert kept_by_us, "expected slab pages 1.7.2 mistakes for user pages"
        assert all(page_type(pfn) == params["slab_value"] for pfn in kept_by_us)
        dropped_by_us = b - a
        assert dropped_by_us, "expected hugetlb pages from the workload"
        assert all(hugetlb_head(pfn) is not None for pfn in dropped_by_us)
    print(f"6.12: {len(kept_by_us)} slab pages kept, {len(dropped_by_us)} hugetlb pages dropped vs 1.7.2",
          file=sys.stderr)


def test_filtered_elf_dump_reads_every_source_page_as_itself_or_zeros(vmcore_61, tmp_path):
    """--format elf -d 31: kept pages read back equal through drgn, and excluded ones as zeros,
    never "could not find physical memory segment", as makedumpfile -E's output reads."""
    path = dump(vmcore_61, tmp_path, "-d", "31", "--format", "elf")
    prog = drgn_program(path)
    kdump = KdumpFile.open(dump(vmcore_61, tmp_path, "-d", "31"))
    with Vmcore(str(vmcore_61.path)) as source:
        present = sorted({pfn for run in source.memory.runs for pfn in range(run.start_pfn, run.end_pfn)})
        excluded = 0
        for pfn in present[::53]:
            page = source.memory.read(pfn * 4096, 4096)
            kept = kdump.is_dumpable(pfn) and page != bytes(4096)
            assert drgn_page(prog, pfn, 4096) == (page if kept else bytes(4096)), hex(pfn)
            excluded += not kept
        assert excluded > 1000
