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
# What the kernel writes: keys like OSRELEASE, BUILD-ID, OFFSET(page.flags); values printable.
# A line with other bytes is damage, even when it has an '='.
_KEY = re.compile(r"^[A-Za-z0-9_-]+$|^[A-Z]+\([A-Za-z0-9_.]+\)$")
_VALUE = re.compile(r"^[\x20-\x7e]*$")
# A note whose text has this many lines that parse is a VMCOREINFO, whatever it is called.
LOOKS_LIKE_MIN_LINES = 3
# Unprefixed keys whose value is hexadecimal (printed with %lx by the kernel).
_HEX_KEYS = {"KERNELOFFSET"}
_NUMERIC_KEYS = {"PAGESIZE", "CRASHTIME", *_HEX_KEYS}


def _parse_int(text: str, base: int) -> int:
    text = text.strip()
    if base == 16 or text.lower().startswith(("0x", "-0x")):
        return int(text, 16)
    return int(text, 10)


def _is_int(text: str, base: int) -> bool:
    try:
        _parse_int(text, base)
    except ValueError:
        return False
    return True


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
    entries: list[tuple[str, str]] = field(default_factory=list)  # the lines that parse, in order
    bad_keys: set[str] = field(default_factory=set)  # keys whose value does not parse

    @classmethod
    def parse(cls, data: bytes) -> VmcoreInfo:
        text = data.split(b"\0", 1)[0].decode("utf-8", "replace")
        info = cls(text)
        tables = {"SYMBOL": info.symbols, "SIZE": info.sizes, "OFFSET": info.offsets,
                  "LENGTH": info.lengths, "NUMBER": info.numbers}
        for line in text.splitlines():
            if not line.strip():
                continue
            key, sep, value = line.partition("=")
            if not sep or not _KEY.match(key) or not _VALUE.match(value):
                info.problems.append(f"no KEY=VALUE: {line[:60]!r}")
                continue
            prefixed = _PREFIXED.match(key)
            if prefixed is None:
                if key in _NUMERIC_KEYS and not _is_int(value, 16 if key in _HEX_KEYS else 10):
                    info.problems.append(f"{key} has a non-numeric value {value[:40]!r}")
                    info.bad_keys.add(key)
                    continue
                info.values[key] = value
                info.entries.append((key, value))
                continue
            kind, name = prefixed.groups()
            try:
                tables[kind][name] = _parse_int(value, 16 if kind == "SYMBOL" else 10)
            except ValueError:
                info.problems.append(f"{key} has a non-numeric value {value[:40]!r}")
                info.bad_keys.add(key)
                continue
            info.entries.append((key, value))
        return info

    def looks_like_vmcoreinfo(self) -> bool:
        """Text like the kernel's VMCOREINFO (for a note that lost its name)."""
        return len(self.entries) >= LOOKS_LIKE_MIN_LINES and bool(self.symbols or self.osrelease)

    def repaired(self, values: dict[str, str]) -> bytes:
        """The note's text with only the lines that parse and ``values`` set (replacing the
        line of the same key where there is one, else appended)."""
        lines = [(key, values.get(key, value)) for key, value in self.entries]
        lines += [(key, value) for key, value in values.items() if key not in dict(self.entries)]
        return "".join(f"{key}={value}\n" for key, value in lines).encode()

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
