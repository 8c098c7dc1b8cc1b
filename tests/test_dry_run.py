"""vmcore-save --dry-run: the pages per class and the predicted size of the dump a save would
write, with nothing written and no directory made; its options are checked as a save's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from collector.prediction import SAMPLE_PAGES
from tests.conftest import run_save

PREDICTED = re.compile(r"predicted size: .* \((\d+) bytes\) \+- .*: (\d+) of (\d+) kept pages compressed")


def predicted_bytes(stderr: str) -> tuple[int, int, int]:
    match = PREDICTED.search(stderr)
    assert match, stderr
    size, sample, kept = map(int, match.groups())
    return size, sample, kept


@pytest.mark.vmcore(random_pages=16, zero_pages=8, low_memory=True)
@pytest.mark.parametrize("level", ["31", "0"])
def test_dry_run_writes_nothing_and_creates_no_directory(vmcore: Path, tmp_path: Path, level: str) -> None:
    dest = tmp_path / "crash"
    proc = run_save("--dry-run", "-d", level, str(vmcore), str(dest))
    assert proc.returncode == 0, proc.stderr
    assert "nothing written" in proc.stderr
    assert not dest.exists()
    proc = run_save("--dry-run", "-d", level, "-o", str(tmp_path / "dump"), str(vmcore))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vmcore"]


@pytest.mark.vmcore(random_pages=16, zero_pages=8, low_memory=True)
@pytest.mark.parametrize("level,compress", [("31", "zstd"), ("0", "zstd"), ("1", "zlib"), ("31", "none")])
def test_dry_run_of_fewer_pages_than_the_sample_predicts_the_dump_to_the_byte(
        vmcore: Path, tmp_path: Path, level: str, compress: str) -> None:
    proc = run_save("--dry-run", "-d", level, "--compress", compress, str(vmcore))
    size, sample, kept = predicted_bytes(proc.stderr)
    assert sample == kept
    run_save("-q", "-d", level, "--compress", compress, "-o", str(tmp_path / "dump"), str(vmcore), check=True)
    assert size == (tmp_path / "dump").stat().st_size


@pytest.mark.parametrize("args,phrase", [
    (["-d", "40"], "--dump-level 40 is not in 0-31"),
    (["--format", "elf"], "--dry-run predicts a kdump dump"),
    (["--dmesg-only"], "--dry-run predicts a kdump dump"),
    (["--level", "30"], "--level 30 is not in"),
])
def test_dry_run_options_are_checked_as_a_saves(vmcore: Path, args: list[str], phrase: str) -> None:
    proc = run_save("--dry-run", *args, str(vmcore))
    assert proc.returncode == 2
    assert phrase in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.realkernel
@pytest.mark.parametrize("level", ["31", "1"])
def test_dry_run_predicts_a_real_kernels_dump_within_3_percent(real_vmcore, tmp_path: Path, level: str) -> None:
    vmcore = real_vmcore(kernel="6.1", mem_mib=512, workload=True)
    proc = run_save("--dry-run", "-d", level, str(vmcore.path))
    size, sample, kept = predicted_bytes(proc.stderr)
    assert sample == min(SAMPLE_PAGES, kept)
    run_save("-q", "-d", level, "-o", str(tmp_path / "dump"), str(vmcore.path), check=True)
    real = (tmp_path / "dump").stat().st_size
    assert abs(size - real) <= 0.03 * real, (size, real)
