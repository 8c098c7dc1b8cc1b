"""The size syntax of --min-free and the configuration's min_free: ``123``, ``64K``, ``512M``,
``2G``, ``1T`` (powers of 1024). Its own module: the capture configuration checks sizes without
importing the save job."""

from __future__ import annotations

import re

from .errors import CollectorError


def parse_size(text: str, option: str = "--min-free") -> int:
    """Bytes from ``text``; CollectorError naming ``option`` if it is not a size."""
    match = re.fullmatch(r"(\d+)([KMGT]?)", text.strip().upper())
    if match is None:
        raise CollectorError(f"{option} {text!r} is not a size (use e.g. 512M or 2G)")
    return int(match.group(1)) << (10 * " KMGT".index(match.group(2) or " "))
