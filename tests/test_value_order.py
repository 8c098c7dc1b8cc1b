"""Page data goes out in order of value (collector/scan/value.py): a dump cut short still answers
"why did it crash". Proved on a real crash with the readers analysts use, crash and drgn, each
with Debian's debug vmlinux; the cut is a real one (RLIMIT_FSIZE: the target fills up)."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import pytest

from collector.errors import EXIT_INCOMPLETE
from collector.formats.kdump import KdumpFile
from tests.conftest import run_save
from tests.support.readers import crash_reads, drgn_reads
from tests.support.vmcore_factory import SegmentSpec, build_vmcore
from tests.testbed import assets


def save_cut(vmcore, path, limit: int | None):
    def cap() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "collector", "-d", "31", "--output", str(path), str(vmcore)],
                          capture_output=True, text=True, preexec_fn=cap, timeout=600)


@pytest.fixture(scope="module")
def crash_1g(real_vmcore):
    return real_vmcore(kernel="6.1", mem_mib=1024, workload=True)


@pytest.fixture(scope="module")
def vmlinux():
    return assets.debug_vmlinux("6.1")


@pytest.fixture(scope="module", params=[1024, 4096], ids=["1 GiB", "4 GiB"])
def crash(real_vmcore, request):
    """A real crash of a 1 GiB and of a 4 GiB guest: the bigger one's dump is small for its
    memory, so its header, bitmaps and descriptors alone are 7.5% of it."""
    return real_vmcore(kernel="6.1", mem_mib=request.param, workload=True)


@pytest.fixture(scope="module")
def whole(crash, vmlinux, tmp_path_factory):
    path = tmp_path_factory.mktemp("whole") / "dump"
    proc = save_cut(crash.path, path, None)
    assert proc.returncode == 0, proc.stderr
    return path, drgn_reads(path, vmlinux), crash_reads(path, vmlinux)


@pytest.mark.realkernel
def test_the_whole_dump_answers_every_question(whole):
    _, drgn, crash = whole
    assert "sysrq_handle_crash" in drgn["trace"]
    assert len(drgn["tasks"]) > 40 and any("sysrq: Trigger a crash" in line for line in drgn["log"])
    assert any("sysrq_handle_crash" in line for line in crash["bt"])
    assert crash["ps"] and crash["log"]


@pytest.mark.realkernel
@pytest.mark.parametrize("part", [10, 4], ids=["a tenth", "a quarter"])
def test_a_dump_cut_at_a_tenth_or_a_quarter_gives_the_whole_log_the_crash_backtrace_and_every_task(
        whole, crash, vmlinux, tmp_path, part):
    full_path, full_drgn, full_crash = whole
    cut = tmp_path / "cut"
    proc = save_cut(crash.path, cut, full_path.stat().st_size // part)
    assert proc.returncode == EXIT_INCOMPLETE, proc.stderr
    dump = KdumpFile.open(str(cut))
    try:
        assert not dump.complete and dump.pages_missing
    finally:
        dump.close()
    drgn = drgn_reads(cut, vmlinux)
    assert drgn["trace"] == full_drgn["trace"]
    assert drgn["tasks"] == full_drgn["tasks"]
    assert drgn["log"] == full_drgn["log"]
    assert crash_reads(cut, vmlinux) == full_crash


def test_without_page_tables_every_page_is_still_written_once(tmp_path):
    """A vmcore whose kernel cannot be read (no VMCOREINFO): only the slab and the rest are
    ordered, and the dump still holds every page."""
    pages = [bytes([i]) * 4096 for i in range(1, 33)]
    (tmp_path / "vmcore").write_bytes(build_vmcore([SegmentSpec(0x100000, b"".join(pages))]))
    run_save(str(tmp_path / "vmcore"), "--output", str(tmp_path / "dump"), "-d", "1", check=True)
    dump = KdumpFile.open(str(tmp_path / "dump"))
    try:
        assert [dump.read_page(0x100 + i) for i in range(32)] == pages
    finally:
        dump.close()


@pytest.mark.realkernel
def test_kallsyms_read_from_the_vmcore_agree_with_the_debug_vmlinux(crash_1g, vmlinux):
    from collector.kernel import arch
    from collector.kernel.kallsyms import Kallsyms
    from collector.source.vmcore import Vmcore

    names = ["__schedule", "common_interrupt", "__per_cpu_offset", "linux_banner", "init_task", "_sdata"]
    vmcore = Vmcore(str(crash_1g.path))
    assert vmcore.vmcoreinfo is not None
    kallsyms = Kallsyms(arch.kernel_memory(vmcore), vmcore.vmcoreinfo)
    ours = kallsyms.addresses(names)
    kallsyms.forget_names()  # (what a save does after its last lookup): a later one reads them again
    assert kallsyms.addresses(names) == ours
    script = ("import drgn, json, sys; prog = drgn.Program(); prog.set_core_dump(sys.argv[1]); "
              "prog.load_debug_info([sys.argv[2]]); "
              f"print(json.dumps({{n: prog.symbol(n).address for n in {names!r}}}))")
    proc = subprocess.run([sys.executable, "-c", script, str(crash_1g.path), str(vmlinux)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert {name: address for name, (_, address, _) in ours.items()} == json.loads(proc.stdout.splitlines()[-1])


REAL_KERNELS = [("6.1", 512), ("6.12", 512), ("7.2", 1024)]


@pytest.mark.realkernel
@pytest.mark.parametrize("kernel,mem_mib", REAL_KERNELS, ids=[kernel for kernel, _ in REAL_KERNELS])
def test_the_kernels_own_symbol_table_decodes_on_every_release(real_vmcore, kernel, mem_mib):
    """kallsyms_offsets is read three different ways by 6.1, 6.12 and 7.2 (kernel/kallsyms.py):
    linux_banner, found through it, holds this kernel's banner."""
    from collector.kernel import arch
    from collector.kernel.kallsyms import Kallsyms
    from collector.source.vmcore import Vmcore

    vmcore = Vmcore(str(real_vmcore(kernel=kernel, mem_mib=mem_mib, workload=True).path))
    assert vmcore.vmcoreinfo is not None
    memory = arch.kernel_memory(vmcore)
    symbols = Kallsyms(memory, vmcore.vmcoreinfo).addresses(["linux_banner", "schedule", "_etext"])
    release = vmcore.vmcoreinfo.values["OSRELEASE"]
    assert memory.read(symbols["linux_banner"][1], 64).startswith(f"Linux version {release} ".encode())
    assert vmcore.vmcoreinfo.symbols["_stext"] < symbols["schedule"][1] < symbols["_etext"][1]


@pytest.mark.realkernel
@pytest.mark.parametrize("kernel,mem_mib", REAL_KERNELS, ids=[kernel for kernel, _ in REAL_KERNELS])
def test_task_struct_slabs_are_told_from_other_slabs_on_every_release(real_vmcore, kernel, mem_mib):
    """struct slab's slab_cache moved between 6.1 and 6.12 (kernel/slab.py finds it in the dump);
    the first slab caches' pages are a small part of the slab pages, found on every release."""
    from collector import fastcopy
    from collector.scan.classify import PageClassifier
    from collector.source.vmcore import Vmcore

    vmcore = Vmcore(str(real_vmcore(kernel=kernel, mem_mib=mem_mib, workload=True).path))
    classifier = PageClassifier(vmcore, 31, print)
    assert classifier.first_slabs is not None
    assert classifier.first_slabs.slab_cache_offset == (24 if kernel == "6.1" else 8)
    first = other = 0
    for start, end in classifier.windows():
        first += fastcopy.count_bits(classifier.first_slab_bitmap(start, end), 0, end - start)
        other += fastcopy.count_bits(classifier.slab_bitmap(start, end), 0, end - start)
    assert 100 < first < other / 10, (first, other)


@pytest.mark.realkernel
def test_the_log_goes_first_whole_every_byte_the_log_reader_reads_lies_in_its_ranges(crash_1g):
    """scan/value.py puts the kernel log in class 1 through dmesg.log_ranges: the ringbuffer's
    struct and its three arrays, which hold everything --dmesg reads."""
    from collector.kernel import arch, dmesg
    from collector.source.vmcore import Vmcore

    vmcore = Vmcore(str(crash_1g.path))
    assert vmcore.vmcoreinfo is not None
    kernel = arch.kernel_memory(vmcore)
    ranges = dmesg.log_ranges(kernel.read, vmcore.vmcoreinfo)
    reads = []

    def read(address: int, length: int) -> bytes:
        reads.append((address, length))
        return kernel.read(address, length)

    entries = dmesg.read_log(read, vmcore.vmcoreinfo)
    assert len(entries) > 300
    assert all(any(start <= address and address + length <= end for start, end in ranges)
               for address, length in reads)
    assert sum(end - start for start, end in ranges) < 1 << 20  # Debian's 128 KiB log and its arrays
