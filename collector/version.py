"""--version for every command: ``PROGRAM VERSION``, the version being the installed package's
metadata (setup.py's version, the one source: nothing in the package repeats it). The capture
initramfs carries that metadata (arm._stage_distribution_metadata), so the capture kernel's
commands answer the same."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .errors import CollectorError

DISTRIBUTION = "vmcore-collector"


def version() -> str:
    # Imported here: importlib.metadata costs every start ~50 ms, and only --version needs it.
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version(DISTRIBUTION)
    except PackageNotFoundError:
        raise CollectorError(f"the {DISTRIBUTION} package metadata is not installed: "
                             "install the package (pip install .) to know its version") from None


class VersionAction(argparse.Action):
    """``--version``: prints ``PROGRAM VERSION`` on standard output and exits 0."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 help: str = "print the program's name and version, and exit") -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        sys.stdout.write(f"{parser.prog.split()[0]} {version()}\n")
        parser.exit()
