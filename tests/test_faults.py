"""A target that fills up mid-dump leaves a valid dump marked incomplete; readers open it; with
--fallback the dump is saved again on the next destination."""

from __future__ import annotations

import os

import pytest

from collector.formats.kdump import KdumpFile
from tests.conftest import run_save
from tests.support.dumpcheck import drgn_page, drgn_program, dump_files
from tests.support.messages import assert_lines_say
from tests.support.vmcore_factory import (
    PAGE_SIZE,
    SegmentSpec,
    build_vmcore,
    expected_memory,
    vmcoreinfo_text,
)

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
    assert dump_files(dump_dir) == ["vmcore-incomplete", "vmcore-incomplete.manifest.json", "vmcore-triage.json",
                                  "vmcore-triage.txt"]
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


def _incompressible_vmcore(tmp_path):
    """8 MiB of random pages: they cannot fit into small_tmpfs's 2 MiB."""
    vmcore = tmp_path / "vmcore"
    vmcore.write_bytes(build_vmcore([SegmentSpec(0x100000, os.urandom(2048 * PAGE_SIZE))], vmcoreinfo_text()))
    return vmcore


def _lines(stderr):
    """stderr without the warning that a synthetic vmcore has no kernel log."""
    return [line for line in stderr.splitlines() if "kernel log not saved" not in line]


@needs_root
def test_a_dump_cut_short_is_saved_again_on_the_fallback(tmp_path, small_tmpfs):
    vmcore = _incompressible_vmcore(tmp_path)
    reference, fallback = tmp_path / "reference.kdump", tmp_path / "fallback"
    run_save(str(vmcore), "--output", str(reference), check=True)
    proc = run_save(str(vmcore), str(small_tmpfs), "--fallback", str(fallback), "--quiet")
    assert proc.returncode == 0, proc.stderr
    (line,) = _lines(proc.stderr)
    (cut_dir,) = small_tmpfs.iterdir()
    assert_lines_say([line], ("dump INCOMPLETE", "No space left on device", f"{cut_dir}/vmcore-incomplete",
                              f"saving it again to {fallback}"))
    # kept: it may be all there is
    assert dump_files(cut_dir) == ["vmcore-incomplete", "vmcore-incomplete.manifest.json", "vmcore-triage.json",
                                  "vmcore-triage.txt"]
    assert not KdumpFile.open(str(cut_dir / "vmcore-incomplete")).complete
    (saved_dir,) = fallback.iterdir()
    assert saved_dir.name == cut_dir.name
    assert (saved_dir / "vmcore").read_bytes() == reference.read_bytes()


@needs_root
def test_a_dump_cut_short_stays_the_result_when_no_fallback_can_take_it(tmp_path, small_tmpfs):
    vmcore = _incompressible_vmcore(tmp_path)
    proc = run_save(str(vmcore), str(small_tmpfs), "--fallback", "/dev/null/crash", "--quiet")
    assert proc.returncode == 3, proc.stderr
    (cut_dir,) = small_tmpfs.iterdir()
    cut = f"{cut_dir}/vmcore-incomplete"
    assert_lines_say(_lines(proc.stderr),
                     ("dump INCOMPLETE", "No space left on device", cut, "saving it again to /dev/null/crash"),
                     ("/dev/null/crash: Not a directory", "no destination left"),
                     ("dump INCOMPLETE", f"{cut} is readable", "missing pages are reported as such by crash and drgn"))
