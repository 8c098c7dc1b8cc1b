"""The benchmark suite's arm64 row (issue 15): on the test bed's arm64 vmcore, vmcore-save at one
thread (-d 31 and -d 1), and Debian's arm64 makedumpfile under qemu-user for its output size
only: an emulated CPU is no speed race, so RESULTS.md shows vmcore-save's time alone."""

from __future__ import annotations

from pathlib import Path

from benchmarks import report
from benchmarks.contenders import ARM64, Contender, all_contenders, arm64_makedumpfile_name
from benchmarks.inputs import BenchInput
from benchmarks.measure import Measurement, Run

MIB = 1 << 20


def arm64_bench_input(tmp_path: Path) -> BenchInput:
    path = tmp_path / "vmcore"
    path.write_bytes(bytes(4096))
    return BenchInput("arm64 6.1 1 GiB", path, ARM64, 1 << 30, 838934528, "a real arm64 vmcore")


def size_only(flag: str, level: int) -> Contender:
    return Contender(arm64_makedumpfile_name(flag, level), "makedumpfile", ("makedumpfile",), level,
                     runs_on=frozenset({ARM64}), size_only=True)


def test_on_the_arm64_vmcore_only_vmcore_save_at_one_thread_runs_of_our_contenders(tmp_path):
    bench_input = arm64_bench_input(tmp_path)
    ours = [c.name for c in all_contenders("makedumpfile", zstd=True) if c.runs_on_input(bench_input, True)]
    assert ours == ["vmcore-save -d 31 zstd t1", "vmcore-save -d 1 zstd t1"]


def test_arm64_table_gives_our_time_and_size_against_makedumpfiles_size_never_its_time(tmp_path):
    bench_input = arm64_bench_input(tmp_path)
    ours = next(c for c in all_contenders(None, zstd=False) if c.name == "vmcore-save -d 31 zstd t1")
    measurements = [Measurement(bench_input, ours, [Run(0.86, int(21.5 * MIB), 0, {"pages": 0.61})]),
                    Measurement(bench_input, size_only("-c", 31), [Run(7.37, int(22.2 * MIB), 0, {})]),
                    Measurement(bench_input, size_only("-l", 31), [Run(0.93, int(30.9 * MIB), 0, {})])]
    path = report.write_report(tmp_path / "out", report.Context("t", False, [], [], [], []),
                               report.Results([bench_input], measurements))
    text = path.read_text()
    section = text.split("## arm64 (issue 15)")[1].split("\n## ")[0]
    assert "| arm64 6.1 1 GiB | 31 | 0.86 | 0.61 | 21.5 | 22.2 | 0.968 | 30.9 | 0.696 |" in section
    assert "7.37" not in section and "0.93" not in section  # qemu-user's times are no race
    assert "| arm64 6.1 1 GiB | 1 |  |" in section  # -d 1 not measured: empty cells, not zeros


def test_a_run_without_the_arm64_vmcore_says_so(tmp_path):
    path = report.write_report(tmp_path / "out", report.Context("t", False, [], [], [], []), report.Results([], []))
    assert "No arm64 vmcore in this run" in path.read_text()
