"""Real-kernel test bed: crash Debian kernels in QEMU (TCG) and collect their vmcores.

Public API:
    get_vmcore(...) -> Vmcore              cached vmcore of a real crash (or QMP dump)
    run_in_capture_kernel(...) -> CaptureRun   run a command inside a real capture kernel
CLI: ``python -m tests.testbed vmcore ...`` / ``python -m tests.testbed capture ...``.
pytest: ``from tests.testbed.fixtures import real_vmcore``.
"""

from .errors import TestbedError
from .vmcore import CaptureRun, Vmcore, get_vmcore, run_in_capture_kernel

__all__ = ["CaptureRun", "TestbedError", "Vmcore", "get_vmcore", "run_in_capture_kernel"]
