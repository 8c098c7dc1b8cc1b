"""The page scanner: the compiled _fastcopy module, or its pure-Python twin.

VMCORE_COLLECTOR_PURE_PYTHON=1 forces the twin. If the compiled module cannot be imported the
twin is used with one warning line: a dump must never fail because an optimisation is missing.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType
from typing import TYPE_CHECKING

PURE_PYTHON_ENV = "VMCORE_COLLECTOR_PURE_PYTHON"


def _load() -> tuple[ModuleType, bool]:
    """(implementation, compiled?); the twin is imported only when it is the one used."""
    if os.environ.get(PURE_PYTHON_ENV) != "1":
        try:
            from . import _fastcopy

            return _fastcopy, True
        except ImportError as e:
            print(f"vmcore-save: warning: compiled page scanner unavailable ({e}); "
                  "using the pure-Python one (slower)", file=sys.stderr)
    from . import _fastcopy_py

    return _fastcopy_py, False


if TYPE_CHECKING:  # both implementations keep _fastcopy.pyi's contract (tests/test_scanner_contract.py)
    from . import _fastcopy as impl

    COMPILED: bool
else:
    impl, COMPILED = _load()

PageEncoder = impl.PageEncoder
kdump_descs = impl.kdump_descs
span_end = impl.span_end
span_end_within = impl.span_end_within
kallsyms_find = impl.kallsyms_find
clear_zero_pages = impl.clear_zero_pages
count_bits = impl.count_bits
bit_runs = impl.bit_runs
classify_pages = impl.classify_pages
FileHasher = impl.FileHasher
