"""A target that fills up mid-dump leaves a valid dump marked incomplete; readers open it."""

from __future__ import annotations

import os

import pytest

from collector.formats.kdump import KdumpFile
from tests.conftest import run_save
from tests.dumpcheck import drgn_page, drgn_program
from tests.vmcore_factory import PAGE_SIZE, SegmentSpec, build_vmcore, expected_memory, vmcoreinfo_text

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@needs_root
@pytest.mark.parametrize("fmt", ["kdump", "elf"])
def test_target_full_leaves_readable_incomplete_dump(tmp_path, small_tmpfs, fmt):
    # 8 MiB of incompressible pages cannot fit into 2 MiB.
    segments = [SegmentSpec(0x100000, os.urandom(2048 * PAGE_SIZE))]
    vmcore = tmp_path / "vmcore"
    vmcore.write_bytes(build_vmcore(segments, vmcoreinfo_text()))
    proc = run_save(str(vmcore), str(small_tmpfs), "--format", fmt)
    assert proc.returncode == 3, proc.stderr
    assert "INCOMPLETE" in proc.stderr and "Traceback" not in proc.stderr
    (dump_dir,) = small_tmpfs.iterdir()
    assert [p.name for p in dump_dir.iterdir()] == ["vmcore-incomplete"]
    path = str(dump_dir / "vmcore-incomplete")
    expected = expected_memory(segments)
    prog = drgn_program(path)
    got = {pfn: drgn_page(prog, pfn, PAGE_SIZE) for pfn in expected}
    saved = [pfn for pfn, page in got.items() if page is not None]
    assert 100 < len(saved) < len(expected)  # about 1-2 MiB of 8 MiB made it
    assert all(got[pfn] == expected[pfn] for pfn in saved)
    if fmt == "kdump":
        dump = KdumpFile.open(path)
        assert not dump.complete
        assert all(dump.read_page(pfn) == got[pfn] for pfn in expected)
        info = run_save("--info", path)
        assert "INCOMPLETE" in info.stdout
