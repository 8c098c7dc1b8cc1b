"""Retention (rule 2): it never leaves a target with fewer complete dumps than it started with
unless a new complete dump took their place, and it only ever removes directories this tool
wrote. --keep-dumps prunes after the new dump is complete; --min-free removes an old dump only
to make room the new dump needs, and never when the new one cannot be written anyway."""

from __future__ import annotations

import os
import subprocess

import pytest

import collector.targets.local
from collector.cli import parse_size
from collector.targets.local import MARKER_NAME
from tests.conftest import run_save, save_in_process

OURS = ["web1-2026-01-01-00:00:00", "web1-2026-02-01-00:00:00", "web1-2026-02-01-00:00:00-1",
        "web1-2026-03-01-00:00:00"]
KDUMP_UTILS = "127.0.0.1-2025-12-01-00:00:00"  # kdump-utils' own name pattern, and older than ours

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


pytestmark = pytest.mark.vmcore(random_pages=128)  # 512 KiB


def make_old_dumps(dest, size=3):
    """Our old dumps (with the marker), one kdump-utils directory, and a folder that is no dump."""
    for name in OURS:
        (dest / name).mkdir(parents=True)
        (dest / name / MARKER_NAME).write_text("")
        (dest / name / "vmcore").write_bytes(os.urandom(size))
    (dest / KDUMP_UTILS).mkdir()
    (dest / KDUMP_UTILS / "vmcore").write_bytes(os.urandom(size))
    (dest / KDUMP_UTILS / "vmcore-dmesg.txt").write_text("kdump-utils wrote this\n")
    (dest / "notes").mkdir()


def left(dest):
    return sorted(p.name for p in dest.iterdir())


def test_keep_dumps_prunes_the_oldest_of_ours_after_the_new_dump_is_complete(tmp_path, vmcore):
    dest = tmp_path / "crash"
    make_old_dumps(dest)
    proc = run_save(str(vmcore), str(dest), "--keep-dumps", "3")
    assert proc.returncode == 0, proc.stderr
    (new,) = set(left(dest)) - set(OURS) - {KDUMP_UTILS, "notes"}
    assert (dest / new / "vmcore").is_file()
    assert left(dest) == sorted([new, OURS[2], OURS[3], KDUMP_UTILS, "notes"])
    assert proc.stderr.count("retention (--keep-dumps 3): removing old dump") == 2


def test_retention_never_touches_directories_other_tools_wrote(tmp_path, vmcore):
    dest = tmp_path / "crash"
    make_old_dumps(dest)
    assert run_save(str(vmcore), str(dest), "--keep-dumps", "1").returncode == 0
    assert KDUMP_UTILS in left(dest) and "notes" in left(dest)
    assert (dest / KDUMP_UTILS / "vmcore-dmesg.txt").read_text() == "kdump-utils wrote this\n"
    assert [name for name in left(dest) if name in OURS] == []


def test_a_failed_run_removes_no_dump(tmp_path, vmcore):
    dest = tmp_path / "crash"
    make_old_dumps(dest)
    before = left(dest)
    # --min-free above what the disk has: the new dump cannot be written at all.
    free = os.statvfs(dest).f_bavail * os.statvfs(dest).f_frsize
    proc = run_save(str(vmcore), str(dest), "--keep-dumps", "1", "--min-free", str(free + (1 << 30)))
    assert proc.returncode == 1, proc.stderr
    assert "dump FAILED" in proc.stderr and "--min-free" in proc.stderr
    assert "removing" not in proc.stderr
    assert set(before) <= set(left(dest))
    assert all((dest / name / "vmcore").is_file() for name in OURS)


@pytest.fixture
def room_for_six_mib(tmp_path, monkeypatch):
    """An 8 MiB tmpfs, free space checked every 64 KiB (every 64 MiB by default)."""
    monkeypatch.setattr(collector.targets.local, "FREE_CHECK_BYTES", 64 << 10)
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "--lazy", str(mnt)], check=True)


@needs_root
def test_min_free_removes_an_old_dump_only_when_the_new_dump_needs_the_room(room_for_six_mib, vmcore):
    dest = room_for_six_mib
    make_old_dumps(dest, size=1 << 20)  # 5 MiB of old dumps in 8 MiB: 3 MiB free
    free = os.statvfs(dest).f_bavail * os.statvfs(dest).f_frsize
    # The new dump (512 KiB of random pages) gets within min_free of the end once it is half out.
    rc = save_in_process(str(vmcore), str(dest), "--min-free", str(free - (256 << 10)))
    assert rc == 0
    gone = [name for name in OURS if name not in left(dest)]
    assert gone == [OURS[0]]  # one, the oldest of ours: all the room it needed
    assert KDUMP_UTILS in left(dest)


@needs_root
def test_min_free_removes_nothing_when_the_new_dump_cannot_fit_anyway(room_for_six_mib, vmcore):
    dest = room_for_six_mib
    make_old_dumps(dest, size=1 << 20)
    # 7.5 MiB to stay free on an 8 MiB disk: even with every old dump gone the new one cannot fit.
    rc = save_in_process(str(vmcore), str(dest), "--min-free", str(15 << 19))
    assert rc in (1, 3)
    assert all((dest / name / "vmcore").is_file() for name in OURS)


def test_sizes_parse():
    assert parse_size("512M") == 512 << 20 and parse_size("2g") == 2 << 30 and parse_size("100") == 100
    with pytest.raises(Exception, match="not a size"):
        parse_size("2 GB")


def test_bad_keep_dumps_is_one_line_naming_the_option(tmp_path, vmcore):
    proc = run_save(str(vmcore), str(tmp_path / "crash"), "--keep-dumps", "0")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--keep-dumps 0" in proc.stderr
    assert not (tmp_path / "crash").exists()
