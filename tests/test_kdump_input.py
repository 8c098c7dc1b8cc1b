"""A kdump-compressed file as input (source/kdump_input.py): dumps makedumpfile wrote with zlib
(-c), lzo (-l), snappy (-p) or zstd (-z) pages are read by --info, --dmesg and --triage and
filtered again by vmcore-save, as ``makedumpfile -d 31 in.kdump out`` does: the same 2nd bitmap
as makedumpfile -d 31 of the vmcore itself, every page equal, and a page the input lacks is
never dumped (never read as zeros).

Debian's makedumpfile 1.7.2 (installed by ./dev, so CI runs these) writes zlib and lzo (its -p
stores pages as is: snappy is disabled in its build); upstream makedumpfile in ../shared/tools
(1.7.9+, never a dependency) adds snappy and zstd where it is present."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.errors import InputError
from collector.formats.kdump import KdumpFile
from collector.source.kdump_input import bit_runs, set_bits, slice_bits
from collector.source.vmcore import Vmcore
from tests.conftest import run_save
from tests.support.dumpcheck import drgn_page, drgn_program

DEBIAN_MAKEDUMPFILE = shutil.which("makedumpfile")
UPSTREAM_MAKEDUMPFILE = Path(__file__).resolve().parents[2] / "shared" / "tools" / "makedumpfile"
needs_debian = pytest.mark.skipif(DEBIAN_MAKEDUMPFILE is None, reason="makedumpfile not installed (./dev installs it)")
needs_upstream = pytest.mark.skipif(not UPSTREAM_MAKEDUMPFILE.exists(),
                                    reason=f"upstream makedumpfile 1.7.9+ not at {UPSTREAM_MAKEDUMPFILE}")
# (makedumpfile, its flag, the compression its dump then holds)
WRITERS = [
    pytest.param("debian", "-c", "zlib", marks=needs_debian, id="debian-zlib"),
    pytest.param("debian", "-l", "lzo", marks=needs_debian, id="debian-lzo"),
    pytest.param("upstream", "-c", "zlib", marks=needs_upstream, id="upstream-zlib"),
    pytest.param("upstream", "-l", "lzo", marks=needs_upstream, id="upstream-lzo"),
    pytest.param("upstream", "-p", "snappy", marks=needs_upstream, id="upstream-snappy"),
    pytest.param("upstream", "-z", "zstd", marks=needs_upstream, id="upstream-zstd"),
]


def program(writer: str) -> str:
    return str(UPSTREAM_MAKEDUMPFILE) if writer == "upstream" else str(DEBIAN_MAKEDUMPFILE)


@pytest.fixture(scope="module")
def crash(real_vmcore):
    return real_vmcore(kernel="6.1", mem_mib=512, workload=True)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kdump-input")


def makedumpfile(writer: str, flags: list[str], source: Path, out: Path) -> Path:
    if not out.exists():
        proc = subprocess.run([program(writer), *flags, str(source), str(out)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def bits(bitmap: bytes, nbits: int) -> set[int]:
    return {pfn for pfn in range(nbits) if bitmap[pfn >> 3] >> (pfn & 7) & 1}


@pytest.mark.realkernel
@pytest.mark.parametrize("writer, flag, compression", WRITERS)
def test_refiltering_a_level_1_dump_to_31_gives_makedumpfile_s_bitmaps_and_the_vmcore_s_pages(
        crash, workdir, writer, flag, compression):
    original = makedumpfile(writer, [flag, "-d", "1"], crash.path, workdir / f"{writer}{flag}-d1")
    assert KdumpFile.open(str(original)).compression == compression
    reference = KdumpFile.open(str(makedumpfile(writer, ["-d", "31"], crash.path, workdir / f"{writer}-d31")))
    out = workdir / f"{writer}{flag}-refiltered"
    proc = run_save(str(original), "--output", str(out), "-d", "31", "-q")
    assert proc.returncode == 0, proc.stderr
    ours = KdumpFile.open(str(out))
    assert ours.complete and ours.sub_header.dump_level == 31
    assert ours.max_mapnr == reference.max_mapnr
    assert ours.dumpable == reference.dumpable
    prog = drgn_program(str(out))
    with Vmcore(str(crash.path)) as source:
        dumped = bits(ours.dumpable, ours.max_mapnr)
        assert len(dumped) > 10000
        for pfn in sorted(dumped):
            assert drgn_page(prog, pfn, 4096) == source.memory.read(pfn * 4096, 4096), hex(pfn)


@pytest.mark.realkernel
@needs_debian
def test_pages_the_input_left_out_stay_out_at_a_lower_level(crash, workdir):
    """-d 1 of a -d 31 dump: nothing the input excluded comes back (not even as zeros), every
    page it holds is there, equal; the save says the input's level."""
    original = makedumpfile("debian", ["-l", "-d", "31"], crash.path, workdir / "debian-l-d31")
    out = workdir / "d31-to-d1"
    proc = run_save(str(original), "--output", str(out), "-d", "1")
    assert proc.returncode == 0, proc.stderr
    assert "written at dump level 31: the pages it left out stay out (makedumpfile dumps it at 31)" in proc.stderr
    before, after = KdumpFile.open(str(original)), KdumpFile.open(str(out))
    assert after.dumpable == before.dumpable
    for pfn in sorted(bits(before.dumpable, before.max_mapnr))[::7]:
        assert after.read_page(pfn) == before.read_page(pfn), hex(pfn)


@pytest.mark.realkernel
@needs_debian
def test_input_cut_short_gives_only_the_pages_it_still_holds(crash, workdir):
    original = makedumpfile("debian", ["-l", "-d", "1"], crash.path, workdir / "debian-l-d1")
    cut = workdir / "cut-in-half"
    cut.write_bytes(original.read_bytes()[:original.stat().st_size // 2])
    out = workdir / "from-cut"
    proc = run_save(str(cut), "--output", str(out), "-d", "31")
    assert proc.returncode == 0, proc.stderr
    assert "is incomplete" in proc.stderr and "missing from the new dump" in proc.stderr
    held, ours = KdumpFile.open(str(cut)), KdumpFile.open(str(out))
    dumped = bits(ours.dumpable, ours.max_mapnr)
    listed = bits(held.dumpable, held.max_mapnr)
    with_data = {pfn for pfn in listed if held.read_page(pfn) is not None}
    assert len(listed - with_data) > 10000  # the half cut off
    assert dumped and dumped <= with_data
    with Vmcore(str(crash.path)) as source:
        for pfn in sorted(dumped)[::5]:
            assert ours.read_page(pfn) == source.memory.read(pfn * 4096, 4096), hex(pfn)


@pytest.mark.realkernel
@pytest.mark.parametrize("writer, flag, compression", WRITERS)
def test_info_dmesg_and_triage_read_every_compression(crash, workdir, writer, flag, compression):
    original = makedumpfile(writer, [flag, "-d", "31"], crash.path, workdir / f"{writer}{flag}-d31")
    info = run_save("--info", str(original))
    assert info.returncode == 0 and f"compression {compression}" in info.stdout, info.stdout + info.stderr
    log = run_save("--dmesg", str(original))
    assert log.returncode == 0, log.stderr
    assert log.stdout == run_save("--dmesg", str(crash.path), check=True).stdout
    triage = run_save("--triage", str(original))
    assert triage.returncode == 0 and "sysrq triggered crash" in triage.stdout, triage.stdout + triage.stderr


@pytest.mark.realkernel
@needs_debian
def test_elf_output_of_a_kdump_input_is_refused_in_one_line(crash, workdir):
    original = makedumpfile("debian", ["-l", "-d", "31"], crash.path, workdir / "debian-l-d31")
    proc = run_save(str(original), "--output", str(workdir / "elf"), "--format", "elf")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "--format elf needs an ELF vmcore as input" in proc.stderr
    assert not (workdir / "elf").exists()


def refiltered_by_both(crash, workdir) -> tuple[KdumpFile, KdumpFile, KdumpFile]:
    """A -d 31 lzo dump, and what makedumpfile -d 31 and vmcore-save -d 31 make of it."""
    original = makedumpfile("debian", ["-l", "-d", "31"], crash.path, workdir / "debian-l-d31")
    theirs = makedumpfile("debian", ["-d", "31"], original, workdir / "makedumpfile-refiltered")
    out = workdir / "refiltered-d31"
    if not out.exists():
        run_save(str(original), "--output", str(out), "-d", "31", "-q", check=True)
    return KdumpFile.open(str(original)), KdumpFile.open(str(out)), KdumpFile.open(str(theirs))


@pytest.mark.realkernel
@needs_debian
def test_refiltering_a_dump_keeps_what_makedumpfile_refiltering_keeps(crash, workdir):
    original, ours, theirs = refiltered_by_both(crash, workdir)
    assert ours.dumpable == theirs.dumpable == original.dumpable


@needs_debian
@pytest.mark.realkernel
def test_the_output_keeps_the_input_s_1st_bitmap_as_makedumpfile(crash, workdir):
    original, ours, theirs = refiltered_by_both(crash, workdir)
    assert ours.present == theirs.present == original.present


@pytest.mark.realkernel
@needs_debian
def test_damaged_page_of_the_input_is_one_line_naming_the_file_and_the_page(crash, workdir):
    original = makedumpfile("debian", ["-l", "-d", "31"], crash.path, workdir / "debian-l-d31")
    dump = KdumpFile.open(str(original))
    pfn = next(pfn for pfn in sorted(bits(dump.dumpable, dump.max_mapnr)) if dump.page_desc(pfn).size > 64)
    damaged = workdir / "damaged-lzo"
    data = bytearray(original.read_bytes())
    offset = dump.page_desc(pfn).offset
    data[offset:offset + 40] = b"\xff" * 40
    damaged.write_bytes(data)
    # -q: the pure-Python scanner is slow enough for progress lines before the error.
    proc = run_save(str(damaged), "--output", str(workdir / "from-damaged"), "-d", "31", "-q")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{damaged}: page {pfn:#x}: damaged compressed data" in proc.stderr


@pytest.mark.realkernel
@needs_debian
def test_a_compression_whose_library_is_missing_is_named_with_what_to_install(crash, workdir, monkeypatch):
    original = makedumpfile("debian", ["-l", "-d", "31"], crash.path, workdir / "debian-l-d31")
    dump = KdumpFile.open(str(original))
    pfn = next(pfn for pfn in sorted(bits(dump.dumpable, dump.max_mapnr)) if dump.page_desc(pfn).flags)
    monkeypatch.setitem(sys.modules, "lzo", None)  # import lzo now raises ImportError
    with pytest.raises(InputError, match=f"page {pfn:#x} is lzo-compressed and lzo is not installed: install"):
        dump.read_page(pfn)


bitmaps = st.binary(max_size=64)


@given(bitmaps, st.data())
def test_bit_helpers_agree_with_reading_bit_by_bit(bitmap, data):
    nbits = data.draw(st.integers(0, 8 * len(bitmap)))
    lo = data.draw(st.integers(0, nbits))
    hi = data.draw(st.integers(lo, nbits))
    every = sorted(bits(bitmap, nbits))
    assert [pfn for lo_, hi_ in bit_runs(bitmap, nbits) for pfn in range(lo_, hi_)] == every
    runs = bit_runs(bitmap, nbits)
    assert all(a[1] < b[0] for a, b in zip(runs, runs[1:]))  # maximal runs: none touch
    assert list(set_bits(bitmap, lo, hi)) == [pfn for pfn in every if lo <= pfn < hi]
    assert sorted(pfn + lo for pfn in bits(bytes(slice_bits(bitmap, lo, hi)), hi - lo)) == \
        [pfn for pfn in every if lo <= pfn < hi]
    assert len(slice_bits(bitmap, lo, hi)) == (hi - lo + 7) // 8


@pytest.mark.realkernel
@needs_debian
def test_batched_page_reads_equal_single_ones(crash, workdir):
    original = KdumpFile.open(str(makedumpfile("debian", ["-c", "-d", "31"], crash.path, workdir / "debian-c-d31")))
    pfns = sorted(bits(original.dumpable, original.max_mapnr))[::3]
    assert [(pfn, original.read_page(pfn)) for pfn in pfns] == list(original.read_pages(pfns))
