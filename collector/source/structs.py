"""Declarative binary records: every on-disk structure is described once and parsed here."""

from __future__ import annotations

import struct
from collections import namedtuple
from typing import Any

from ..errors import InputError


class Record:
    """A fixed-size binary structure described by (field, struct format) pairs.

    A field whose format ends in ``x`` is padding: it carries no value and is written as zeros.
    """

    def __init__(self, name: str, fields: list[tuple[str, str]], byteorder: str = "<") -> None:
        self.name = name
        self._struct = struct.Struct(byteorder + "".join(fmt for _, fmt in fields))
        self.fields = tuple(field for field, fmt in fields if not fmt.endswith("x"))
        self.type: Any = namedtuple(name, self.fields)  # type: ignore[misc]
        self.size = self._struct.size

    def parse(self, buf: Any, offset: int = 0) -> Any:
        """Parse one record at ``offset``; a short buffer is an InputError naming the record."""
        if offset < 0 or len(buf) - offset < self.size:
            raise InputError(f"truncated {self.name} at offset {offset}")
        return self.type._make(self._struct.unpack_from(buf, offset))

    def build(self, **values: Any) -> bytes:
        """Serialise a record; every non-padding field must be given."""
        return self._struct.pack(*(values[f] for f in self.fields))

    def pack(self, *values: Any) -> bytes:
        """Serialise from values in field order: the hot-path form of build()."""
        return self._struct.pack(*values)
