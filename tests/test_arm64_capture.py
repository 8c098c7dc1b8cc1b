"""vmcore-save runs inside the arm64 capture kernel, on the real /proc/vmcore of a crashed Debian
6.1 arm64 kernel (KASLR on), with Debian's arm64 Python and the page scanner compiled for
aarch64 (tests/testbed/arm64.py, arm64_python.py): its dump is the one vmcore-save writes on this
host from the raw copy of the same /proc/vmcore, and readers open it as the crashed kernel."""

from __future__ import annotations

import os
import random
import shutil

import pytest

from collector.formats.kdump import KdumpFile
from collector.source.vmcore import Vmcore
from tests.conftest import run_save
from tests.support.messages import assert_lines_say

pytestmark = [
    pytest.mark.realkernel,
    pytest.mark.skipif(not (shutil.which("qemu-system-aarch64") and shutil.which("aarch64-linux-gnu-gcc")),
                       reason="qemu-system-arm and gcc-aarch64-linux-gnu not installed"),
    # The guest's save is compiled, whatever the pass; the host's twin would only add minutes.
    pytest.mark.skipif(bool(os.environ.get("VMCORE_COLLECTOR_PURE_PYTHON")),
                       reason="the guest runs the compiled scanner in both passes; run once"),
]
UTS_LEN = 65  # each field of struct new_utsname: sysname, nodename, release, version, machine


@pytest.fixture(scope="module", params=["max,pauth-impdef=on", "cortex-a57"], ids=["max", "a57-random-linear-map"])
def crash(request, tmp_path_factory):
    """(the raw copy, what vmcore-save did inside the capture kernel, the dump directory
    vmcore-save writes on this host from the raw copy at the same dump level)."""
    from tests.testbed import arm64

    vmcore = arm64.get_vmcore(kernel="6.1", cpu=request.param, current_save=True)
    save = arm64.guest_save(vmcore)
    assert save.rc == 0 and save.dump_dir is not None, f"vmcore-save in the guest failed:\n{save.console}"
    host_dest = tmp_path_factory.mktemp("host")
    run_save(str(vmcore.path), str(host_dest), "-d", str(save.dump_level), check=True)
    (host_dump_dir,) = host_dest.iterdir()
    return vmcore, save, host_dump_dir


def dumped_pfns(dump: KdumpFile) -> set[int]:
    return {pfn for pfn in range(dump.max_mapnr) if dump.dumpable[pfn >> 3] >> (pfn & 7) & 1}


def test_the_dump_written_inside_the_arm64_capture_kernel_opens_in_drgn_as_the_crashed_aarch64_kernel(crash):
    from tests.support.dumpcheck import drgn_program

    vmcore, save, _ = crash
    with Vmcore(str(vmcore.path)) as raw:
        info = raw.vmcoreinfo
        assert info is not None
    prog = drgn_program(str(save.dump_dir / "vmcore"))
    uts = prog.read(info.symbols["init_uts_ns"] + info.offsets["uts_namespace.name"], UTS_LEN * 5)
    release, machine = (uts[n * UTS_LEN:(n + 1) * UTS_LEN].split(b"\0")[0].decode() for n in (2, 4))
    assert (machine, release) == ("aarch64", vmcore.osrelease)
    dump = KdumpFile.open(str(save.dump_dir / "vmcore"))
    try:
        assert dump.header.machine.rstrip(b"\0") == b"aarch64"
    finally:
        dump.close()


def test_the_guests_dump_keeps_the_pages_the_hosts_save_of_the_raw_copy_keeps_and_their_data_is_the_vmcores(crash):
    vmcore, save, host_dump_dir = crash
    guest, host = KdumpFile.open(str(save.dump_dir / "vmcore")), KdumpFile.open(str(host_dump_dir / "vmcore"))
    try:
        assert guest.max_mapnr == host.max_mapnr
        dumped, host_dumped = dumped_pfns(guest), dumped_pfns(host)  # the 2nd bitmaps
        assert dumped == host_dumped, (f"only the guest's dump has {sorted(map(hex, dumped - host_dumped))[:10]}, "
                                       f"only the host's {sorted(map(hex, host_dumped - dumped))[:10]}")
        assert 0 < len(dumped) < guest.max_mapnr // 4  # struct pages were found: free and cache pages are out
        with Vmcore(str(vmcore.path)) as raw:
            page_size = raw.page_size
            for pfn in random.Random(15).sample(sorted(dumped), 256):
                assert guest.read_page(pfn) == raw.memory.read(pfn * page_size, page_size), hex(pfn)
    finally:
        guest.close()
        host.close()


def test_the_guests_kernel_log_is_the_crashed_kernels_as_the_host_reads_it_from_the_raw_copy(crash):
    vmcore, save, host_dump_dir = crash
    guest_log = (save.dump_dir / "vmcore-dmesg.txt").read_text()
    assert vmcore.marker in guest_log
    assert guest_log == (host_dump_dir / "vmcore-dmesg.txt").read_text()


def test_the_guest_console_shows_vmcore_saves_progress_and_summary_with_the_compiled_scanner(crash):
    _, save, _ = crash
    lines = [line for line in save.console.splitlines() if line.startswith("vmcore-save:")]
    assert any("pages" in line and "%" in line and "done in" in line for line in lines), save.console
    summary = [line for line in lines if "%" not in line]
    assert_lines_say(summary,
                     ("saved /job/saved/", "/vmcore", "kdump", f"dump level {save.dump_level}", "compiled scanner"),
                     ("pages:", "present", "excluded", "free", "written"),
                     ("bytes:", "read", "written"),
                     ("time:", "total"))
    assert isinstance(save.seconds, float) and save.seconds > 0


def test_the_guests_dump_directory_holds_what_the_hosts_does_and_verifies_against_its_manifest(crash):
    _, save, host_dump_dir = crash
    names = sorted(path.name for path in save.dump_dir.iterdir())
    assert names == sorted(path.name for path in host_dump_dir.iterdir())
    assert {"vmcore", "vmcore-dmesg.txt", "vmcore.manifest.json"} <= set(names)
    run_save("--verify", str(save.dump_dir), check=True)  # hashed inside the guest, checked here
