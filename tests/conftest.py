import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

REPO = Path(__file__).resolve().parent.parent

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=60)
settings.load_profile("ci" if os.environ.get("CI") else "default")


def run_save(*args: str, check: bool = False, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the vmcore-save command line as a user would (a separate process)."""
    proc = subprocess.run([sys.executable, "-m", "collector", *args], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"vmcore-save {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def save_in_process(*args: str, check: bool = False) -> int:
    """vmcore-save's main() in this process: fast enough to run per hypothesis example."""
    from collector.cli import main

    rc = main(["--quiet", *args])
    if check and rc != 0:
        raise AssertionError(f"vmcore-save {' '.join(args)} exited {rc}")
    return rc


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2 MiB tmpfs: a dump target that fills up (mounting needs root)."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    yield mnt
    gc.collect()  # drgn programs still holding the dump open
    subprocess.run(["umount", "--lazy", str(mnt)], check=True)


@pytest.fixture(scope="session")
def save():
    return save_in_process


from tests.testbed.fixtures import pytest_configure, real_vmcore  # noqa: E402,F401
