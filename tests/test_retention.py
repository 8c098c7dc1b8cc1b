"""Retention on local targets: keep at most N dumps, keep M bytes free."""

from __future__ import annotations

import os

import pytest

from collector.cli import parse_size
from tests.conftest import run_save
from tests.vmcore_factory import PAGE_SIZE, SegmentSpec, build_vmcore, vmcoreinfo_text

OLD_DUMPS = ["web1-2026-01-01-00:00:00", "web1-2026-02-01-00:00:00", "web1-2026-02-01-00:00:00-1",
             "web1-2026-03-01-00:00:00"]


@pytest.fixture
def vmcore(tmp_path):
    path = tmp_path / "vmcore"
    path.write_bytes(build_vmcore([SegmentSpec(0x100000, os.urandom(64 * PAGE_SIZE))], vmcoreinfo_text()))
    return path


def make_old_dumps(dest):
    for name in OLD_DUMPS:
        (dest / name).mkdir(parents=True)
        (dest / name / "vmcore").write_bytes(b"old")
    (dest / "notes").mkdir()  # not a dump directory: never touched


def test_keep_dumps_removes_the_oldest(tmp_path, vmcore):
    dest = tmp_path / "crash"
    make_old_dumps(dest)
    proc = run_save(str(vmcore), str(dest), "--keep-dumps", "3")
    assert proc.returncode == 0, proc.stderr
    left = sorted(p.name for p in dest.iterdir())
    assert "notes" in left and OLD_DUMPS[0] not in left and OLD_DUMPS[1] not in left
    assert OLD_DUMPS[2] in left and OLD_DUMPS[3] in left and len(left) == 4  # 2 old + new + notes
    assert proc.stderr.count("retention: removing old dump") == 2


def test_min_free_removes_old_dumps_then_stops_short_of_the_limit(tmp_path, vmcore):
    dest = tmp_path / "crash"
    make_old_dumps(dest)
    free = os.statvfs(dest).f_bavail * os.statvfs(dest).f_frsize
    # Asking for more free space than the disk has: every old dump goes, then the dump itself
    # stops before its first byte instead of using the space (nothing readable: exit 1).
    proc = run_save(str(vmcore), str(dest), "--min-free", str(free + (1 << 30)))
    assert proc.returncode == 1, proc.stderr
    assert "dump FAILED" in proc.stderr and "--min-free" in proc.stderr
    left = sorted(p.name for p in dest.iterdir())
    assert [name for name in left if name in OLD_DUMPS] == []
    assert "notes" in left


def test_sizes_parse():
    assert parse_size("512M") == 512 << 20 and parse_size("2g") == 2 << 30 and parse_size("100") == 100
    with pytest.raises(Exception):
        parse_size("2 GB")


def test_bad_keep_dumps_is_one_line(tmp_path, vmcore):
    proc = run_save(str(vmcore), str(tmp_path), "--keep-dumps", "0")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
