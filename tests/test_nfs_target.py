"""Dumps to NFS from a real capture kernel: the guest kernel's NFS client mounts exports of an
nfs-ganesha server that runs, with QEMU, in a private network namespace (10.0.2.2 in the guest).

One crash serves every test: in the capture kernel vmcore-save writes a dump over NFSv4.2,
/proc/vmcore is copied out over 9p for comparison, the kernel log goes to a v3-only export
(the v4.2 -> v3 fallback), and two unreachable servers (a closed port, a port that never
answers) are tried.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from collector.errors import CollectorError
from collector.formats.kdump import KdumpFile
from collector.targets.nfs import MOUNT_TIMEOUT, NfsUrl
from tests.conftest import REPO, run_save
from tests.dumpcheck import drgn_program
from tests.nfs_server import nfs_server, silent_listener
from tests.testbed import CaptureRun, run_in_capture_kernel

CLOSED_PORT, SILENT_PORT = 2050, 2051
DUMP_DIR_NAME = re.compile(r".+-\d{4}-\d\d-\d\d-\d\d:\d\d:\d\d")
# Runs in the capture kernel (dash, chrooted into the host's root). Each vmcore-save run
# leaves NAME.rc, NAME.err and NAME.time (start and end, seconds) in /out.
GUEST_COMMAND = f"""
cd {shlex.quote(str(REPO))}
save() {{
    name=$1; shift
    start=$(date +%s.%N)
    python3 -m collector "$@" 2>/out/$name.err
    echo $? >/out/$name.rc
    echo "$start $(date +%s.%N)" >/out/$name.time
}}
save dump -d 31 /proc/vmcore nfs://10.0.2.2/export
cp --sparse=always /proc/vmcore /out/vmcore
save log_v3 --dmesg-only /proc/vmcore nfs://10.0.2.2/export3
save closed -q /proc/vmcore nfs://10.0.2.2:{CLOSED_PORT}/export
save silent -q /proc/vmcore nfs://10.0.2.2:{SILENT_PORT}/export
"""


@dataclass
class GuestRuns:
    capture: CaptureRun
    export_dir: Path      # NFSv3+v4 export, on the host
    export_v3_dir: Path   # NFSv3-only export
    ganesha_log: str

    def result(self, name: str) -> tuple[int, str, float]:
        """(exit status, stderr, seconds) of one vmcore-save run in the guest."""
        out = self.capture.outdir
        start, end = map(float, (out / f"{name}.time").read_text().split())
        return int((out / f"{name}.rc").read_text()), (out / f"{name}.err").read_text(), end - start

    def context(self) -> str:
        console = self.capture.console_log.read_text(errors="replace")
        return f"--- console tail ---\n{console[-3000:]}\n--- ganesha log tail ---\n{self.ganesha_log[-2000:]}"


@pytest.fixture(scope="module")
def guest_runs(tmp_path_factory: pytest.TempPathFactory) -> GuestRuns:
    if os.geteuid() != 0:
        pytest.skip("network namespaces and nfs-ganesha need root")
    if not shutil.which("ganesha.nfsd"):
        pytest.skip("nfs-ganesha is not installed (./dev setup)")
    directory = tmp_path_factory.mktemp("nfs")
    with nfs_server(directory / "server", {"export": (3, 4), "export3": (3,)}) as server:
        with silent_listener(server.netns, SILENT_PORT):
            capture = run_in_capture_kernel(GUEST_COMMAND, directory / "out", kernel="6.1", mem_mib=512,
                                            workload=True, netns=server.netns)
        return GuestRuns(capture, server.export_dir("export"), server.export_dir("export3"), server.log)


@pytest.mark.realkernel
def test_dump_over_nfs_equals_the_host_dump_of_the_same_vmcore(guest_runs: GuestRuns, tmp_path: Path):
    rc, err, seconds = guest_runs.result("dump")
    assert rc == 0, f"{err}\n{guest_runs.context()}"
    (dump_dir,) = guest_runs.export_dir.iterdir()
    assert DUMP_DIR_NAME.fullmatch(dump_dir.name)
    assert sorted(p.name for p in dump_dir.iterdir()) == ["vmcore", "vmcore-dmesg.txt"]
    # Messages name the dump where it stays, not the capture kernel's temporary mount point.
    assert f"saved nfs://10.0.2.2/export/{dump_dir.name}/vmcore " in err
    over_nfs = dump_dir / "vmcore"
    on_host = tmp_path / "host.kdump"
    run_save(str(guest_runs.capture.outdir / "vmcore"), "--output", str(on_host), "-d", "31", check=True)
    assert over_nfs.read_bytes() == on_host.read_bytes()
    prog = drgn_program(str(over_nfs))
    dump = KdumpFile.open(str(over_nfs))
    pfn = next(p for p in range(0x1000, dump.max_mapnr) if dump.is_dumpable(p))
    assert prog.read(pfn * 4096, 4096, True) == dump.read_page(pfn)
    print(f"\nNFS dump in the capture kernel: {seconds:.1f} s, {over_nfs.stat().st_size / 2**20:.1f} MiB; "
          + " | ".join(line for line in err.splitlines() if "bytes:" in line or "time:" in line))


@pytest.mark.realkernel
def test_a_server_without_nfsv4_is_mounted_with_nfsv3(guest_runs: GuestRuns):
    rc, err, _ = guest_runs.result("log_v3")
    assert rc == 0, f"{err}\n{guest_runs.context()}"
    (dump_dir,) = guest_runs.export_v3_dir.iterdir()
    assert (dump_dir / "vmcore-dmesg.txt").read_text().strip()


@pytest.mark.realkernel
@pytest.mark.parametrize("case", ["closed", "silent"])
def test_an_unreachable_server_is_one_error_line_within_the_mount_timeout(guest_runs: GuestRuns, case: str):
    rc, err, seconds = guest_runs.result(case)
    assert rc == 1, f"{err}\n{guest_runs.context()}"
    (line,) = err.splitlines()
    port = CLOSED_PORT if case == "closed" else SILENT_PORT
    assert line.startswith(f"vmcore-save: error: nfs://10.0.2.2:{port}/export: cannot mount: ")
    # Python's start and reading the vmcore's notes take a few seconds under TCG.
    assert seconds < MOUNT_TIMEOUT + 15
    print(f"\n{case} port: {seconds:.1f} s: {line}")


@pytest.mark.parametrize("dest", ["nfs://", "nfs://server", "nfs://server:port/export", "nfs://user@server/export"])
def test_a_malformed_nfs_destination_is_a_usage_error(dest: str):
    with pytest.raises(CollectorError, match="nfs://"):
        NfsUrl.parse(dest)


def test_nfs_urls_name_the_export_as_mount_does():
    url = NfsUrl.parse("nfs://[fd00::1]:2049/srv/crash/")
    assert (url.host, url.port, url.export, url.device) == ("fd00::1", 2049, "/srv/crash", "[fd00::1]:/srv/crash")
    assert str(url) == "nfs://[fd00::1]:2049/srv/crash"
