"""Dumps over SSH to a real OpenSSH server on 127.0.0.1: equal to local dumps, host keys checked,
links cut mid-dump resumed, a full server disk and a lost link leave readable incomplete dumps,
no SFTP falls back to the flattened stream, an unreachable server falls back to a local disk."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from collector.formats.kdump import KdumpFile
from tests.conftest import REPO, run_save
from tests.support.dumpcheck import check_kdump, drgn_page, drgn_program, dump_files
from tests.support.sshd import SSHD, Sshd, free_port, keygen, start_sshd
from tests.support.vmcore_factory import (
    PAGE_SIZE,
    SegmentSpec,
    expected_memory,
)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="sshd and tmpfs mounts need root"),
    pytest.mark.skipif(not os.path.exists(SSHD), reason="openssh-server is not installed (./dev setup)"),
    pytest.mark.vmcore(random_pages=1536, zero_pages=256),  # 7 MiB: links are cut after 1 and 2 MiB
]
PROXY_TIMEOUT = 30.0  # no proxied connection lives longer in these tests


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sshd_without_sftp(tmp_path_factory):
    server = start_sshd(tmp_path_factory.mktemp("sshd-nosftp"), sftp=False)
    yield server
    server.stop()


@pytest.fixture
def local_dump(vmcore: Path, tmp_path: Path) -> bytes:
    """The vmcore's dump made locally: what every dump over SSH must equal."""
    reference = tmp_path / "reference.kdump"
    run_save(str(vmcore), "--output", str(reference), check=True)
    return reference.read_bytes()


def ssh_options(server: Sshd, known_hosts: Path | None = None) -> list[str]:
    return ["--ssh-key", str(server.client_key), "--known-hosts", str(known_hosts or server.known_hosts)]


def only_dump_dir(root: Path) -> Path:
    (directory,) = root.iterdir()
    return directory


def assert_one_error_line(stderr: str, *words: str) -> None:
    """Exactly one line says it all (other lines are notes about the vmcore), no traceback."""
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and all(line.startswith("vmcore-save: ") for line in lines), stderr
    assert len([line for line in lines if all(word in line for word in words)]) == 1, stderr
    assert len([line for line in lines if "error:" in line]) <= 1, stderr


class CuttingProxy:
    """Forwards 127.0.0.1:port to sshd; the first ``cuts`` connections are dropped after
    ``cut_after`` bytes from the client; with ``refuse_after_cuts`` later ones are closed at once."""

    def __init__(self, upstream_port: int, cut_after: int, cuts: int, refuse_after_cuts: bool = False) -> None:
        self.upstream_port, self.cut_after, self.cuts = upstream_port, cut_after, cuts
        self.refuse_after_cuts = refuse_after_cuts
        self.cuts_done = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        connections = 0
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            connections += 1
            if self.refuse_after_cuts and connections > self.cuts:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            for s in (client, upstream):
                s.settimeout(PROXY_TIMEOUT)
            limit = self.cut_after if connections <= self.cuts else None
            for source, sink, budget in ((client, upstream, limit), (upstream, client, None)):
                thread = threading.Thread(target=self._pump, args=(source, sink, budget), daemon=True)
                thread.start()
                self.threads.append(thread)

    def _pump(self, source: socket.socket, sink: socket.socket, budget: int | None) -> None:
        forwarded = 0
        try:
            while not self.stopping.is_set():
                data = source.recv(65536)
                if not data:
                    break
                if budget is not None and forwarded + len(data) >= budget:
                    self.cuts_done += 1
                    break
                sink.sendall(data)
                forwarded += len(data)
        except OSError:
            pass
        for s in (source, sink):  # a cut: both directions go, as when a cable is pulled
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def stop(self) -> None:
        self.stopping.set()
        self.threads[0].join(timeout=PROXY_TIMEOUT)  # the accept loop first: it adds pump threads
        self.listener.close()
        for thread in self.threads[1:]:
            thread.join(timeout=PROXY_TIMEOUT)


def test_dump_over_ssh_equals_local_dump(sshd, vmcore, vmcore_segments, local_dump, tmp_path):
    dumps = tmp_path / "dumps"
    proc = run_save(str(vmcore), sshd.url(str(dumps)), *ssh_options(sshd), check=True)
    assert "Traceback" not in proc.stderr
    directory = only_dump_dir(dumps)
    assert dump_files(directory) == ["vmcore", "vmcore-triage.json", "vmcore-triage.txt", "vmcore.manifest.json"]
    assert directory.stat().st_mode & 0o777 == 0o700
    assert (directory / "vmcore").stat().st_mode & 0o777 == 0o600
    assert (directory / "vmcore").read_bytes() == local_dump
    check_kdump(str(directory / "vmcore"), expected_memory(vmcore_segments), PAGE_SIZE)


def test_local_dumps_do_not_import_paramiko(vmcore, tmp_path):
    code = ("import sys; from collector.cli import main; "
            f"rc = main(['--quiet', {str(vmcore)!r}, {str(tmp_path)!r}]); "
            "sys.exit(rc or ('paramiko' in sys.modules and 'paramiko imported'))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_host_key_mismatch_is_refused(sshd, vmcore, tmp_path):
    other = tmp_path / "other_host_key"
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {' '.join(keygen(other).split()[:2])}\n")
    dumps = tmp_path / "dumps"
    proc = run_save(str(vmcore), sshd.url(str(dumps)), *ssh_options(sshd, known_hosts), "--quiet")
    assert proc.returncode == 1
    assert_one_error_line(proc.stderr, "host key MISMATCH", "refusing")
    assert not dumps.exists()


def test_unknown_host_key_needs_insecure_option(sshd, vmcore, local_dump, tmp_path):
    empty_known_hosts = tmp_path / "known_hosts"
    empty_known_hosts.write_text("")
    dumps = tmp_path / "dumps"
    proc = run_save(str(vmcore), sshd.url(str(dumps)), *ssh_options(sshd, empty_known_hosts), "--quiet")
    assert proc.returncode == 1
    assert_one_error_line(proc.stderr, "not found in known_hosts")
    assert not dumps.exists()
    proc = run_save(str(vmcore), sshd.url(str(dumps)), *ssh_options(sshd, empty_known_hosts), "--quiet",
                    "--ssh-insecure-accept-host-key", check=True)
    assert_one_error_line(proc.stderr, "warning", "unverified host key", "SHA256:")
    assert (only_dump_dir(dumps) / "vmcore").read_bytes() == local_dump


def test_link_cut_three_times_resumes_to_identical_dump(sshd, vmcore, vmcore_segments, local_dump, tmp_path):
    proxy = CuttingProxy(sshd.port, cut_after=1 << 20, cuts=3)
    dumps = tmp_path / "dumps"
    try:
        known_hosts = sshd.write_known_hosts(tmp_path / "known_hosts", proxy.port)
        proc = run_save(str(vmcore), sshd.url(str(dumps), port=proxy.port), *ssh_options(sshd, known_hosts),
                        check=True)
    finally:
        proxy.stop()
    assert proxy.cuts_done == 3
    assert proc.stderr.count("reconnecting") == 3, proc.stderr
    dump = only_dump_dir(dumps) / "vmcore"
    assert dump.read_bytes() == local_dump
    check_kdump(str(dump), expected_memory(vmcore_segments), PAGE_SIZE)
    verified = run_save("--verify", str(dump))
    assert verified.returncode == 0 and "intact" in verified.stdout, verified


def test_a_byte_flipped_on_the_ssh_server_is_found_and_its_range_named(sshd, vmcore, tmp_path):
    dumps = tmp_path / "dumps"
    run_save(str(vmcore), sshd.url(str(dumps)), *ssh_options(sshd), "--quiet", check=True)
    dump = only_dump_dir(dumps) / "vmcore"
    with open(dump, "r+b") as f:  # as a failing disk on the server would
        f.seek(6_000_000)
        byte = f.read(1)
        f.seek(6_000_000)
        f.write(bytes([byte[0] ^ 0x40]))
    proc = run_save("--verify", str(dump.parent))
    assert proc.returncode == 1 and "DAMAGED: bytes 4194304-" in proc.stdout, proc
    assert proc.stdout.count("\n") == 1


def check_incomplete(path: Path, segments: list[SegmentSpec]) -> int:
    """The dump says incomplete and drgn reads what it has correctly; returns pages saved."""
    dump = KdumpFile.open(str(path))
    assert not dump.complete
    expected = expected_memory(segments)
    prog = drgn_program(str(path))
    got = {pfn: drgn_page(prog, pfn, PAGE_SIZE) for pfn in expected}
    saved = [pfn for pfn, page in got.items() if page is not None]
    assert all(got[pfn] == expected[pfn] for pfn in saved)
    assert all(dump.read_page(pfn) == got[pfn] for pfn in expected)
    return len(saved)


def test_link_lost_for_good_leaves_readable_incomplete_dump(sshd, vmcore, vmcore_segments, tmp_path):
    proxy = CuttingProxy(sshd.port, cut_after=2 << 20, cuts=1, refuse_after_cuts=True)
    dumps = tmp_path / "dumps"
    try:
        known_hosts = sshd.write_known_hosts(tmp_path / "known_hosts", proxy.port)
        proc = run_save(str(vmcore), sshd.url(str(dumps), port=proxy.port), *ssh_options(sshd, known_hosts),
                        "--ssh-retries", "2")
    finally:
        proxy.stop()
    assert proc.returncode == 3, proc.stderr
    assert "gave up after 2 reconnect attempt(s)" in proc.stderr and "Traceback" not in proc.stderr
    directory = only_dump_dir(dumps)
    # The manifest's space was taken at the start; the link was gone before it could be written.
    assert dump_files(directory) == ["vmcore-incomplete", "vmcore-incomplete.manifest.json", "vmcore-triage.json",
                                     "vmcore-triage.txt"]
    proc = run_save("--verify", str(directory))
    assert proc.returncode == 2 and "stopped before it wrote the manifest" in proc.stderr, proc
    saved = check_incomplete(directory / "vmcore-incomplete", vmcore_segments)
    assert 0 < saved < len(expected_memory(vmcore_segments))


def test_server_disk_full_leaves_readable_incomplete_dump(sshd, vmcore, vmcore_segments, small_tmpfs, tmp_path):
    proc = run_save(str(vmcore), sshd.url(str(small_tmpfs)), *ssh_options(sshd))
    assert proc.returncode == 3, proc.stderr
    assert "INCOMPLETE" in proc.stderr and "No space left" in proc.stderr and "Traceback" not in proc.stderr
    directory = only_dump_dir(small_tmpfs)
    assert dump_files(directory) == ["vmcore-incomplete", "vmcore-incomplete.manifest.json", "vmcore-triage.json",
                                     "vmcore-triage.txt"]
    manifest = json.loads((directory / "vmcore-incomplete.manifest.json").read_bytes())
    assert manifest["complete"] is False
    verified = run_save("--verify", str(directory))
    assert verified.returncode == 0 and "INCOMPLETE" in verified.stdout, verified
    # SFTP cannot reserve space, so the page descriptors past the cut are holes; drgn maps the
    # file, and a hole read through a mapping on a full tmpfs is SIGBUS: read a copy.
    dump = shutil.copy(directory / "vmcore-incomplete", tmp_path / "vmcore-incomplete")
    assert 100 < check_incomplete(dump, vmcore_segments) < len(expected_memory(vmcore_segments))


def test_server_without_sftp_gets_flattened_stream(sshd_without_sftp, vmcore, local_dump, tmp_path):
    dumps = tmp_path / "dumps"
    proc = run_save(str(vmcore), sshd_without_sftp.url(str(dumps)), *ssh_options(sshd_without_sftp), check=True)
    assert "vmcore-rearrange vmcore.flat vmcore" in proc.stderr
    directory = only_dump_dir(dumps)
    assert dump_files(directory) == ["vmcore-triage.json", "vmcore-triage.txt", "vmcore.flat",
                                     "vmcore.flat.manifest.json"]
    verified = run_save("--verify", str(directory))
    assert verified.returncode == 0 and "intact" in verified.stdout, verified
    assert (directory / "vmcore.flat").stat().st_mode & 0o777 == 0o600
    rebuilt = tmp_path / "rebuilt"
    subprocess.run([sys.executable, "-c", "import sys; from collector.cli import rearrange_main; "
                    "sys.exit(rearrange_main())", str(directory / "vmcore.flat"), str(rebuilt)],
                   cwd=REPO, check=True, capture_output=True, timeout=120)
    assert rebuilt.read_bytes() == local_dump


def test_unreachable_ssh_falls_back_to_local(sshd, vmcore, local_dump, tmp_path):
    closed_port = free_port()
    local = tmp_path / "local"
    proc = run_save(str(vmcore), sshd.url("/nowhere", port=closed_port), *ssh_options(sshd),
                    "--fallback", str(local), "--quiet", check=True)
    assert_one_error_line(proc.stderr, "cannot connect", f"falling back to {local}")
    assert (only_dump_dir(local) / "vmcore").read_bytes() == local_dump
