"""VMCOREINFO: the kernel's own description of its memory layout, as typed values.

The note is text, one ``KEY=VALUE`` per line (kernel/vmcore_info.c). Prefixed keys carry their
type: ``SYMBOL(name)`` hex address, ``SIZE(type)``/``OFFSET(type.member)``/``LENGTH(name)``
unsigned decimal, ``NUMBER(name)`` signed decimal. Lines that do not parse are kept aside as
problems (reported once) rather than failing the dump: a dump is still possible without them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_PREFIXED = re.compile(r"^(SYMBOL|SIZE|OFFSET|LENGTH|NUMBER)\(([^()]+)\)$")
# Unprefixed keys whose value is hexadecimal (printed with %lx by the kernel).
_HEX_KEYS = {"KERNELOFFSET"}


def _parse_int(text: str, base: int) -> int:
    text = text.strip()
    if base == 16 or text.lower().startswith(("0x", "-0x")):
        return int(text, 16)
    return int(text, 10)


@dataclass
class VmcoreInfo:
    text: str
    symbols: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)
    lengths: dict[str, int] = field(default_factory=dict)
    numbers: dict[str, int] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, data: bytes) -> "VmcoreInfo":
        text = data.split(b"\0", 1)[0].decode("utf-8", "replace")
        info = cls(text)
        tables = {"SYMBOL": info.symbols, "SIZE": info.sizes, "OFFSET": info.offsets,
                  "LENGTH": info.lengths, "NUMBER": info.numbers}
        for line in text.splitlines():
            if not line.strip():
                continue
            key, sep, value = line.partition("=")
            if not sep or not key:
                info.problems.append(f"no KEY=VALUE: {line[:60]!r}")
                continue
            prefixed = _PREFIXED.match(key)
            if prefixed is None:
                info.values[key] = value
                continue
            kind, name = prefixed.groups()
            try:
                tables[kind][name] = _parse_int(value, 16 if kind == "SYMBOL" else 10)
            except ValueError:
                info.problems.append(f"{key} has a non-numeric value {value[:40]!r}")
        return info

    def integer(self, key: str) -> int | None:
        """An unprefixed numeric key (PAGESIZE, CRASHTIME, KERNELOFFSET), None if absent or bad."""
        value = self.values.get(key)
        if value is None:
            return None
        try:
            return _parse_int(value, 16 if key in _HEX_KEYS else 10)
        except ValueError:
            return None

    @property
    def osrelease(self) -> str | None:
        return self.values.get("OSRELEASE")

    @property
    def page_size(self) -> int | None:
        size = self.integer("PAGESIZE")
        if size is None or size < 512 or size & (size - 1):
            return None
        return size
