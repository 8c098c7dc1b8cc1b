"""vmcore-save inside a real capture kernel, on the real /proc/vmcore, as after a crash."""

from __future__ import annotations

import shlex

import pytest

from collector.formats.kdump import KdumpFile
from tests.conftest import REPO, run_save
from tests.support.dumpcheck import drgn_program
from tests.testbed import run_in_capture_kernel

pytestmark = pytest.mark.realkernel


def test_dump_made_in_the_capture_kernel_equals_the_host_dump_of_its_vmcore(tmp_path):
    """In the capture kernel: vmcore-save /proc/vmcore into /out/crash, then copy /proc/vmcore.
    Back on the host, the dump of the copy is byte-identical to the one made in the capture kernel."""
    command = (f"cd {shlex.quote(str(REPO))} && python3 -m collector -d 31 /proc/vmcore /out/crash"
               " && cp --sparse=always /proc/vmcore /out/vmcore")
    run = run_in_capture_kernel(command, tmp_path / "out", kernel="6.1", mem_mib=512, workload=True)
    console = run.console_log.read_text(errors="replace")
    assert run.rc == 0, console[-3000:]
    assert "vmcore-save: saved /out/crash/" in console  # progress and summary reach the console
    (dump_dir,) = (run.outdir / "crash").iterdir()
    inside = dump_dir / "vmcore"
    assert inside.exists() and not (dump_dir / "vmcore-incomplete").exists()
    on_host = tmp_path / "host.kdump"
    run_save(str(run.outdir / "vmcore"), "--output", str(on_host), "-d", "31", check=True)
    assert inside.read_bytes() == on_host.read_bytes()
    prog = drgn_program(str(inside))
    dump = KdumpFile.open(str(inside))
    pfn = next(p for p in range(0x1000, dump.max_mapnr) if dump.is_dumpable(p))
    assert prog.read(pfn * 4096, 4096, True) == dump.read_page(pfn)
