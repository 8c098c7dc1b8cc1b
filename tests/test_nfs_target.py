"""Dumps to NFS from a real capture kernel: the guest kernel's NFS client mounts exports of an
nfs-ganesha server that runs, with QEMU, in a private network namespace (10.0.2.2 in the guest).

One crash serves every test: in the capture kernel vmcore-save writes a dump over NFSv4.2,
/proc/vmcore is copied out over 9p for comparison, the kernel log goes to a v3-only export
(the v4.2 -> v3 fallback), vmcore-collector status probes a writable export, a read-only one
and a server on no network, and two unreachable servers (a closed port, a port that never
answers) are tried. Last, the server dies mid-dump twice, once the dump on it passes DIES_AT
bytes: the host freezes ganesha (SIGSTOP: a hung server) in a run with --fallback to the
9p-shared /out, and thaws it when that run has ended; then kills it (SIGKILL: a dead server) in a
run without a fallback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shlex
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from collector.errors import CollectorError
from collector.formats.kdump import KdumpFile
from collector.targets import nfs
from collector.targets.local import Retention
from collector.targets.nfs import MOUNT_TIMEOUT, STALL_TIMEOUT, NfsUrl, rpc_replies_in
from tests.conftest import REPO, run_save
from tests.support.dumpcheck import drgn_program, dump_files
from tests.support.messages import assert_lines_say
from tests.support.nfs_server import NfsServer, nfs_server, silent_listener
from tests.testbed import CaptureRun, run_in_capture_kernel

CLOSED_PORT, SILENT_PORT = 2050, 2051
# status's targets, in its configuration's order: writable, read-only, a server on no network
# (TEST-NET-1: QEMU's user networking finds no route to it from the server's namespace).
STATUS_TARGETS = ("10.0.2.2:/export", "10.0.2.2:/ro", "192.0.2.1:/export")
DUMP_DIR_NAME = re.compile(r".+-\d{4}-\d\d-\d\d-\d\d:\d\d:\d\d")
# The server dies once the dump on it passes this size, a quarter of the uncompressed -d 31 dump
# (about 67 MiB, some 15 s of writing under TCG).
DIES_AT = 16 << 20
DIES_OPTIONS = "-q -d 31 --compress none"
# (run name, export, how the server dies): in GUEST_COMMAND's order.
DYING_RUNS = (("hangs_fallback", "hangs", "freeze"), ("dies", "dies", "kill"))
# Past STALL_TIMEOUT: aborting the calls still stuck, closing, detaching the export, exiting.
# Measured under TCG: a killed server, 44 s in all (the kernel's EIO came first); a hung one,
# 68 s in all, the whole dump written again to the fallback included.
GIVE_UP_SLACK = 30.0
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
printf 'target = nfs %s /\\n' {' '.join(STATUS_TARGETS)} >/out/status.conf
python3 -m collector.capture.arm status --config /out/status.conf --initrd /out/no-image >/out/status.out 2>&1
save closed -q /proc/vmcore nfs://10.0.2.2:{CLOSED_PORT}/export
save silent -q /proc/vmcore nfs://10.0.2.2:{SILENT_PORT}/export
save hangs_fallback {DIES_OPTIONS} /proc/vmcore nfs://10.0.2.2/hangs --fallback /out/fallback
save dies {DIES_OPTIONS} /proc/vmcore nfs://10.0.2.2/dies
{{ grep ' nfs' /proc/mounts; ls -d /tmp/vmcore-save-nfs-*; }} >/out/left_behind 2>/dev/null
"""


@dataclass
class GuestRuns:
    capture: CaptureRun
    export_dir: Path      # NFSv3+v4 export, on the host
    export_v3_dir: Path   # NFSv3-only export
    ganesha_log: str
    server_dir: Path      # the folder of every export
    # Seconds from the server's death to the end of the vmcore-save run, per dying run.
    after_death: dict[str, float] = field(default_factory=dict)

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
    exports = {"export": (3, 4), "export3": (3,), "ro": (3, 4), **{export: (4,) for _, export, _ in DYING_RUNS}}
    with nfs_server(directory / "server", exports, read_only=frozenset({"ro"})) as server:
        with silent_listener(server.netns, SILENT_PORT), \
                server_dies_mid_dump(server, directory / "out") as after_death:
            # Each dying run waits STALL_TIMEOUT for the server on top of the usual ~90 s.
            capture = run_in_capture_kernel(GUEST_COMMAND, directory / "out", kernel="6.1", mem_mib=512,
                                            workload=True, netns=server.netns, timeout=600)
        return GuestRuns(capture, server.export_dir("export"), server.export_dir("export3"), server.log,
                         server.directory, after_death)


@contextmanager
def server_dies_mid_dump(server: NfsServer, outdir: Path) -> Iterator[dict[str, float]]:
    """A host thread that, for each of DYING_RUNS in turn, freezes or kills the server once the
    dump on that run's export passes DIES_AT bytes, and thaws a frozen one once the run has
    ended in the guest (NAME.time exists). Yields {run name: seconds from death to that end}."""
    after_death: dict[str, float] = {}
    done = threading.Event()

    def watch() -> None:
        for name, export, death in DYING_RUNS:
            while not done.is_set() and _largest_partial_dump(server.export_dir(export)) <= DIES_AT:
                time.sleep(0.05)
            if done.is_set():
                return
            server.freeze() if death == "freeze" else server.kill()
            died_at = time.monotonic()
            try:
                while not done.is_set() and not (outdir / f"{name}.time").exists():
                    time.sleep(0.1)
                after_death[name] = time.monotonic() - died_at
            finally:
                if death == "freeze":
                    server.thaw()

    watcher = threading.Thread(target=watch, name="server-dies-mid-dump", daemon=True)
    watcher.start()
    try:
        yield after_death
    finally:
        done.set()
        watcher.join()


def _largest_partial_dump(export_dir: Path) -> int:
    sizes = [0]
    for path in export_dir.glob("*/vmcore-incomplete"):
        try:
            sizes.append(path.stat().st_size)
        except FileNotFoundError:  # renamed meanwhile: complete
            pass
    return max(sizes)


@pytest.mark.realkernel
def test_dump_over_nfs_equals_the_host_dump_of_the_same_vmcore(guest_runs: GuestRuns, tmp_path: Path):
    rc, err, seconds = guest_runs.result("dump")
    assert rc == 0, f"{err}\n{guest_runs.context()}"
    (dump_dir,) = guest_runs.export_dir.iterdir()
    assert DUMP_DIR_NAME.fullmatch(dump_dir.name)
    assert dump_files(dump_dir) == ["vmcore", "vmcore-dmesg.txt", "vmcore-triage.json", "vmcore-triage.txt",
                                     "vmcore.manifest.json"]
    # Messages name the dump where it stays, not the capture kernel's temporary mount point.
    assert f"saved nfs://10.0.2.2/export/{dump_dir.name}/vmcore " in err
    over_nfs = dump_dir / "vmcore"
    on_host = tmp_path / "host.kdump"
    run_save(str(guest_runs.capture.outdir / "vmcore"), "--output", str(on_host), "-d", "31", check=True)
    assert over_nfs.read_bytes() == on_host.read_bytes()
    verified = run_save("--verify", str(dump_dir))  # the manifest written over NFS matches
    assert verified.returncode == 0 and "intact" in verified.stdout, verified
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
def test_status_probes_each_nfs_target_and_says_where_the_capture_kernel_saves(guest_runs: GuestRuns):
    out = (guest_runs.capture.outdir / "status.out").read_text()
    writable, read_only, nowhere = (
        [line for line in out.splitlines() if line[5:].startswith(f"target nfs {source} /: ")]
        for source in STATUS_TARGETS)
    assert_lines_say(writable, ("ok   target", "the capture kernel saves to nfs://10.0.2.2/export",
                                "mounting 10.0.2.2:/export", "reachable"),
                     ("ok   target", "probe file created and removed (nfs://10.0.2.2/export/.vmcore-collector-probe-"))
    assert not list(guest_runs.export_dir.glob(".vmcore-collector-probe*")), "the probe was left behind"
    assert_lines_say(read_only, ("ok   target", "reachable"),
                     ("FAIL target", "probe file in nfs://10.0.2.2/ro: Read-only file system"))
    # One line: the probe is not tried (it would only wait MOUNT_TIMEOUT for the same server).
    assert_lines_say(nowhere, ("FAIL target", "the capture kernel saves to nfs://192.0.2.1/export", "192.0.2.1:2049: "))
    print(f"\nstatus in the capture kernel:\n{out}")


@pytest.mark.realkernel
@pytest.mark.parametrize("case", ["closed", "silent"])
def test_an_unreachable_server_is_one_error_line_within_the_mount_timeout(guest_runs: GuestRuns, case: str):
    rc, err, seconds = guest_runs.result(case)
    assert rc == 1, f"{err}\n{guest_runs.context()}"
    (line,) = err.splitlines()
    port = CLOSED_PORT if case == "closed" else SILENT_PORT
    assert_lines_say([line], ("error", f"nfs://10.0.2.2:{port}/export: cannot mount"))
    # Python's start and reading the vmcore's notes take a few seconds under TCG.
    assert seconds < MOUNT_TIMEOUT + 15
    print(f"\n{case} port: {seconds:.1f} s: {line}")


@pytest.mark.realkernel
def test_a_server_killed_mid_dump_ends_it_incomplete_and_readable_in_bounded_time(guest_runs: GuestRuns,
                                                                                   host_dump: Path):
    rc, err, seconds = guest_runs.result("dies")
    assert "dies" in guest_runs.after_death, f"the server never died: {err}\n{guest_runs.context()}"
    after_death = guest_runs.after_death["dies"]
    assert rc == 3, f"{err}\n{guest_runs.context()}"
    (dump_dir,) = (guest_runs.server_dir / "dies").iterdir()
    # Either the kernel's soft timeout fires (a killed server refuses connections, so the
    # request's connection is broken) or, first, the collector gives the server up.
    *gave_up, last = err.splitlines()
    if gave_up:
        assert_lines_say(gave_up, ("warning", f"nfs://10.0.2.2/dies: no answer for {STALL_TIMEOUT:.0f} s",
                                   "giving the server up"))
    reason = f"the NFS server has not answered for {STALL_TIMEOUT:.0f} s" if gave_up else "Input/output error"
    assert_lines_say([last], ("dump INCOMPLETE", reason,
                              f"nfs://10.0.2.2/dies/{dump_dir.name}/vmcore-incomplete is readable",
                              "missing pages are reported as such by crash and drgn"))
    # Through the page cache each write waited ~40 s and succeeded: 1 MiB per 40 s (nfs.py).
    assert after_death < STALL_TIMEOUT + GIVE_UP_SLACK
    saved, dumped = check_cut_dump(dump_dir, host_dump)
    print(f"\nserver killed mid-dump: vmcore-save ended {after_death:.1f} s later ({seconds:.1f} s in all; "
          f"{'given up' if gave_up else 'kernel EIO'}); {saved} of {dumped} pages on the server")


@pytest.mark.realkernel
def test_a_dump_cut_short_by_a_hung_server_is_saved_again_on_the_fallback(guest_runs: GuestRuns, host_dump: Path):
    rc, err, seconds = guest_runs.result("hangs_fallback")
    assert "hangs_fallback" in guest_runs.after_death, f"the server never hung: {err}\n{guest_runs.context()}"
    after_death = guest_runs.after_death["hangs_fallback"]
    assert rc == 0, f"{err}\n{guest_runs.context()}"
    (cut_dir,) = (guest_runs.server_dir / "hangs").iterdir()
    assert_lines_say(err.splitlines(),
                     ("warning", f"nfs://10.0.2.2/hangs: no answer for {STALL_TIMEOUT:.0f} s", "giving the server up"),
                     ("dump INCOMPLETE", f"the NFS server has not answered for {STALL_TIMEOUT:.0f} s",
                      f"nfs://10.0.2.2/hangs/{cut_dir.name}/vmcore-incomplete", "saving it again to /out/fallback"))
    saved, dumped = check_cut_dump(cut_dir, host_dump)
    (saved_dir,) = (guest_runs.capture.outdir / "fallback").iterdir()
    assert saved_dir.name == cut_dir.name
    assert dump_files(saved_dir) == ["vmcore", "vmcore-dmesg.txt", "vmcore-triage.json", "vmcore-triage.txt",
                                     "vmcore.manifest.json"]
    assert (saved_dir / "vmcore").read_bytes() == host_dump.read_bytes()
    # Left alone, the hung server would block the dump for ever (collector/targets/nfs.py). The
    # whole dump written again takes a few seconds more.
    assert STALL_TIMEOUT - nfs.WATCH_INTERVAL <= after_death < STALL_TIMEOUT + GIVE_UP_SLACK + 30
    print(f"\nserver hung mid-dump, fallback: vmcore-save ended {after_death:.1f} s later ({seconds:.1f} s in all); "
          f"{saved} of {dumped} pages on the server")


@pytest.mark.realkernel
def test_the_capture_kernel_goes_on_after_the_server_died(guest_runs: GuestRuns):
    # The step after the dying runs ran, and neither left a mount or a mount point behind.
    left_behind = guest_runs.capture.outdir / "left_behind"
    assert left_behind.exists(), guest_runs.context()
    assert left_behind.read_text() == ""


def check_cut_dump(dump_dir: Path, reference_path: Path) -> tuple[int, int]:
    """What reached the server is a readable dump, flagged incomplete, whose pages are right or
    reported missing (as tests/test_cut_short.py asks of any dump cut short), with the kernel
    log beside it; nothing was renamed. Returns (pages saved, pages in the whole dump)."""
    assert dump_files(dump_dir) == ["vmcore-dmesg.txt", "vmcore-incomplete", "vmcore-incomplete.manifest.json",
                                     "vmcore-triage.json", "vmcore-triage.txt"]
    partial = KdumpFile.open(str(dump_dir / "vmcore-incomplete"))
    reference = KdumpFile.open(str(reference_path))
    try:
        assert not partial.complete
        assert (partial.dumpable, partial.vmcoreinfo) == (reference.dumpable, reference.vmcoreinfo)
        dumped = [pfn for pfn in range(reference.max_mapnr) if reference.is_dumpable(pfn)]
        pages = {pfn: partial.read_page(pfn) for pfn in dumped}
        saved = [pfn for pfn, page in pages.items() if page is not None]
        wrong = [pfn for pfn in saved if pages[pfn] != reference.read_page(pfn)]
        assert not wrong, f"{len(wrong)} of {len(saved)} pages wrong, e.g. pfn {wrong[0]:#x}"
        assert 0 < len(saved) < len(dumped)
        return len(saved), len(dumped)
    finally:
        partial.close()
        reference.close()


@pytest.fixture(scope="module")
def host_dump(guest_runs: GuestRuns, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The host's dump of the vmcore copied out of the guest, with the dying runs' options."""
    path = tmp_path_factory.mktemp("host") / "host-dies.kdump"
    options = [o for o in DIES_OPTIONS.split() if o != "-q"]
    run_save(str(guest_runs.capture.outdir / "vmcore"), "--output", str(path), *options, check=True)
    return path


@pytest.mark.parametrize("dest", ["nfs://", "nfs://server", "nfs://server:port/export", "nfs://user@server/export"])
def test_a_malformed_nfs_destination_is_a_usage_error(dest: str):
    with pytest.raises(CollectorError, match="nfs://"):
        NfsUrl.parse(dest)


def test_nfs_urls_name_the_export_as_mount_does():
    url = NfsUrl.parse("nfs://[fd00::1]:2049/srv/crash/")
    assert (url.host, url.port, url.export, url.device) == ("fd00::1", 2049, "/srv/crash", "[fd00::1]:/srv/crash")
    assert str(url) == "nfs://[fd00::1]:2049/srv/crash"


# From a capture kernel's /proc/self/mountstats (per-op lines shortened).
MOUNTSTATS = """\
device out mounted on /out with fstype 9p
device 10.0.2.2:/dies mounted on /tmp/vmcore-save-nfs-ruf94tf6 with fstype nfs4 statvers=1.1
\topts:\trw,vers=4.2,rsize=1048576,wsize=1048576,namlen=255,soft,proto=tcp,timeo=100,retrans=3,sec=sys
\tage:\t22
\tevents:\t2 7 0 0 1 2 21 9781 0 0 0 13 0 0 1 2 0 1 0 0 9642 0 0 0 0 0 0
\tbytes:\t0 39736791 0 0 0 32568815 0 9643
\tRPC iostats version: 1.1  p/v: 100003/4 (nfs)
\txprt:\ttcp 0 0 2 0 16 86 81 0 98 0 13 129 11
\tper-op statistics
\t        NULL: 1 1 0 44 24 34 21 57 0
\t       WRITE: 37 37 0 32576364 8288 8624 1691 10404 0

device 10.0.2.2:/other mounted on /mnt with fstype nfs4 statvers=1.1
\txprt:\ttcp 0 0 1 0 16 12 12 0 12 0 2 2 0
"""


def test_replies_are_read_from_the_mounts_own_transport():
    assert rpc_replies_in(MOUNTSTATS, "/tmp/vmcore-save-nfs-ruf94tf6") == 81
    assert rpc_replies_in(MOUNTSTATS, "/mnt") == 12
    assert rpc_replies_in(MOUNTSTATS, "/tmp/vmcore-save-nfs-gone") is None


def recording_forcer(forced: list[float]) -> type:
    """A stand-in for nfs._Forcer that records when it was asked to force, instead of running
    umount -f on this machine."""

    class Forcer:
        def __init__(self, mount_point: str) -> None:
            pass

        def force(self) -> None:
            forced.append(time.monotonic())

        def close(self) -> None:
            pass

    return Forcer


def test_a_call_that_waits_for_a_silent_server_gives_it_up_and_nothing_touches_it_again(tmp_path, monkeypatch):
    """The watchdog's logic, without a real server (the real one: the dying-run tests above)."""
    forced, umounts, syncs = [], [], []
    monkeypatch.setattr(nfs, "_Forcer", recording_forcer(forced))
    monkeypatch.setattr(nfs, "_run_bounded", lambda argv, timeout: umounts.append(argv) or (0, ""))
    monkeypatch.setattr(nfs, "STALL_TIMEOUT", 0.5)
    monkeypatch.setattr(nfs, "WATCH_INTERVAL", 0.05)
    warnings: list[str] = []
    target = nfs.NfsTarget(NfsUrl.parse("nfs://server/export"), str(tmp_path), warnings.append, Retention())
    target.local.file_flags = 0  # O_DIRECT is for NFS: a local tmp_path may not take it
    directory = target.make_dump_dir("host-2026-11-26-00:00:00")
    file = target.create(f"{directory}/vmcore-incomplete")
    file.write_at(0, b"KDUMP")

    def stuck_write(offset: int, data: bytes) -> None:  # returns once aborted, as pwrite did
        deadline = time.monotonic() + 10
        while not forced and time.monotonic() < deadline:
            time.sleep(0.01)

    monkeypatch.setattr(file.file, "write_at", stuck_write)
    monkeypatch.setattr(file.file, "sync", lambda: syncs.append(1))
    started = time.monotonic()
    with pytest.raises(OSError, match="has not answered") as raised:
        file.write_at(4096, b"page")
    assert raised.value.errno == errno.EIO
    assert 0.5 <= time.monotonic() - started < 5 and len(forced) == 1
    assert warnings == ["warning: nfs://server/export: no answer for 0 s: giving the server up, aborting its requests"]
    # Later calls fail at once, without a system call; closing still releases the file.
    with pytest.raises(OSError, match="has not answered"):
        file.sync()
    with pytest.raises(OSError, match="has not answered"):
        target.commit(f"{directory}/vmcore-incomplete", f"{directory}/vmcore")
    assert not syncs and (tmp_path / "host-2026-11-26-00:00:00" / "vmcore-incomplete").exists()
    fd = file.file.fd
    file.close()
    with pytest.raises(OSError):
        os.fstat(fd)
    target.close()
    assert umounts == [["umount", "-f", "-l", str(tmp_path)]]  # no clean unmount to wait for


def test_waits_add_up_across_calls_while_the_server_answers_nothing(tmp_path, monkeypatch):
    """A killed server let each write wait ~40 s and then succeed: no single call waits long."""
    forced: list[float] = []
    replies = iter([5, 6, 7])  # three answers, then silence
    monkeypatch.setattr(nfs, "_Forcer", recording_forcer(forced))
    monkeypatch.setattr(nfs, "_run_bounded", lambda argv, timeout: (0, ""))
    monkeypatch.setattr(nfs, "_rpc_replies", lambda mount_point: next(replies, 7))
    monkeypatch.setattr(nfs, "STALL_TIMEOUT", 1.0)
    monkeypatch.setattr(nfs, "WATCH_INTERVAL", 0.05)
    target = nfs.NfsTarget(NfsUrl.parse("nfs://server/export"), str(tmp_path), lambda line: None, Retention())
    calls = 0
    while target.failure is None and calls < 20:
        calls += 1
        with contextlib.suppress(OSError):
            target.free_space("nfs://server/export")  # fast
        with contextlib.suppress(OSError):
            target._call(time.sleep, 0.3)  # waits, then succeeds
    target.close()
    assert target.failure is not None and forced
    assert 4 <= calls <= 6, calls  # 1 s of waiting in 0.3 s calls, not one call of 1 s
