"""The benchmark suite still runs: `python -m benchmarks.run --quick` writes a row per contender
and input, the goals without a verdict, the SSH throughput table and the plot. It needs the test
bed's real 512 MiB vmcore, and matplotlib (the "bench" extra)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmarks.contenders import REAL, SYNTHETIC, all_contenders
from tests.conftest import REPO

pytestmark = pytest.mark.realkernel


def test_quick_benchmark_writes_every_row_and_the_plot_and_judges_nothing(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is in the bench extra")
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = (out / "RESULTS.md").read_text()
    rows = [line for line in results.splitlines() if line.startswith("| ")]
    for contender in (c for c in all_contenders("makedumpfile", zstd=True) if c.in_quick):
        for input_name, kind in (("6.1 512 MiB", REAL), ("synthetic 256 MiB", SYNTHETIC)):
            if kind in contender.runs_on:
                assert any(row.startswith(f"| {input_name} | {contender.name} |") for row in rows), \
                    f"no row for {contender.name} on {input_name}"
    assert "- makedumpfile raced: " in results
    goals = results.split("## Goals (issue 13)")[1].split("\n## ")[0]
    assert "not judged (--quick)" in goals
    assert "met**" not in goals  # neither **met** nor **NOT met** from one run on small inputs
    assert "| SshTarget, kdump pattern |" in results  # root and sshd are there (./dev setup)
    manifest = results.split("## Integrity manifest")[1].split("\n## ")[0]
    assert " A/A | " in manifest and "| 6.1 512 MiB | 31 | " in manifest and "| 6.1 512 MiB | 1 | " in manifest
    assert (out / "vs_makedumpfile.png").stat().st_size > 0


def test_the_hashing_beside_benchmark_gives_each_arm_a_ratio_a_round(real_vmcore, tmp_path):
    from benchmarks.hashing_beside import ARMS, measure

    crash = real_vmcore(kernel="6.1", mem_mib=512, workload=True)
    ratios = measure(crash.path, tmp_path, 31, 2)
    assert list(ratios) == list(ARMS[1:])
    assert all(len(values) == 2 and all(value > 0 for value in values) for values in ratios.values())
