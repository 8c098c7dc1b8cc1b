"""Other tools accept our files: makedumpfile -R rebuilds our flat stream byte for byte, crash
opens our kdump files."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import run_save
from tests.support.vmcore_factory import OSRELEASE

pytestmark = pytest.mark.vmcore(low_memory=True, random_pages=64, zero_pages=16)


@pytest.mark.skipif(not shutil.which("makedumpfile"), reason="makedumpfile not installed")
@pytest.mark.parametrize("compress", ["zstd", "zlib", "none"])
def test_makedumpfile_rearranges_flat_stream_identically(tmp_path, vmcore, compress):
    run_save(str(vmcore), "--output", str(tmp_path / "dump"), "--compress", compress, "-d", "1", check=True)
    run_save(str(vmcore), "--output", str(tmp_path / "dump.flat"), "--format", "flat",
             "--compress", compress, "-d", "1", check=True)
    with open(tmp_path / "dump.flat", "rb") as stream:
        subprocess.run(["makedumpfile", "-R", str(tmp_path / "rebuilt")], stdin=stream, check=True,
                       capture_output=True)
    assert (tmp_path / "rebuilt").read_bytes() == (tmp_path / "dump").read_bytes()


@pytest.mark.skipif(not shutil.which("crash"), reason="crash not installed")
@pytest.mark.parametrize("compress", ["zstd", "zlib"])
def test_crash_reads_release_from_our_kdump(tmp_path, vmcore, compress):
    run_save(str(vmcore), "--output", str(tmp_path / "dump"), "--compress", compress, check=True)
    proc = subprocess.run(["crash", "--osrelease", str(tmp_path / "dump")], capture_output=True, text=True)
    assert proc.stdout.strip() == OSRELEASE, proc.stdout + proc.stderr
