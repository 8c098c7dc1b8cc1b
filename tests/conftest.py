import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.support.vmcore_factory import PAGE_SIZE, SegmentSpec, build_vmcore, vmcoreinfo_text

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


def synthetic_memory(random_pages: int = 16, zero_pages: int = 0, low_memory: bool = False) -> list[SegmentSpec]:
    """At 1 MiB random pages, then zero pages (as zero pages of real memory, which dump level 1
    excludes), and below 640 KiB the BIOS's low memory if asked."""
    segments = [SegmentSpec(0x1000, os.urandom(0x9EC00))] if low_memory else []
    segments.append(SegmentSpec(0x100000, os.urandom(random_pages * PAGE_SIZE) + bytes(zero_pages * PAGE_SIZE)))
    return segments


@pytest.fixture
def vmcore_segments(request: pytest.FixtureRequest) -> list[SegmentSpec]:
    """The memory of the ``vmcore`` fixture: ``synthetic_memory()``, which a module or a test
    shapes with ``@pytest.mark.vmcore(random_pages=, zero_pages=, low_memory=)``."""
    marker = request.node.get_closest_marker("vmcore")
    return synthetic_memory(**(marker.kwargs if marker else {}))


@pytest.fixture
def vmcore(tmp_path: Path, vmcore_segments: list[SegmentSpec]) -> Path:
    """tmp_path/vmcore: a synthetic vmcore of ``vmcore_segments`` with a minimal VMCOREINFO."""
    path = tmp_path / "vmcore"
    path.write_bytes(build_vmcore(vmcore_segments, vmcoreinfo_text()))
    return path


from tests.testbed.fixtures import pytest_configure, real_vmcore  # noqa: E402,F401
