"""pytest glue. In a conftest.py:

    from tests.testbed.fixtures import real_vmcore, pytest_configure  # noqa: F401

``real_vmcore`` (session-scoped) is :func:`tests.testbed.get_vmcore`; tests call
``real_vmcore(kernel="6.1", mem_mib=512, workload=True)``. ``pytest_configure``
registers the ``realkernel`` marker (deselect with ``-m "not realkernel"``).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .vmcore import Vmcore, get_vmcore


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "realkernel: boots real Debian kernels in QEMU (TCG); slow the first time, then cached"
    )


@pytest.fixture(scope="session")
def real_vmcore() -> Callable[..., Vmcore]:
    """The test bed's get_vmcore: a cached vmcore of a real crash, built on first use."""
    return get_vmcore
