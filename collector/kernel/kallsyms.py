"""The crashed kernel's own symbol table (kallsyms), read from the dump without debug info.

Since Linux 6.0 (commit 5fd8fea935a1, "vmcoreinfo: include kallsyms symbols", which drgn uses
for its debug-info-free mode) VMCOREINFO names kallsyms_names, kallsyms_token_table,
kallsyms_token_index, kallsyms_num_syms and kallsyms_offsets. Names are compressed: a length
(one byte, two if its top bit is set since Linux 6.1, commit 73bbb94466fd "kallsyms: support
"big" kernel symbols"), then that many token bytes, each expanding through the token table; the
first character of the expansion is the symbol's type letter. Only wanted names are expanded:
a name can match only if the expansion of its first token is a prefix of a wanted typed name
(or the other way round), which leaves a few percent of the ~100000 names.

Addresses: kallsyms_offsets holds one s32 per symbol. With kallsyms_relative_base (before Linux
6.15) and CONFIG_KALLSYMS_ABSOLUTE_PERCPU (x86_64 SMP), a negative offset means
``relative_base - 1 - offset`` and a non-negative one is absolute (per-CPU symbols); without
absolute per-CPU symbols, ``relative_base + (u32)offset``; since the base was dropped (Linux
6.15, commit 64e166099b69 "kallsyms: get rid of kallsyms_relative_base"), ``_text + (u32)offset``.
"""

from __future__ import annotations

import bisect
import struct
from array import array
from collections.abc import Iterable

from .. import fastcopy
from ..source.vmcoreinfo import VmcoreInfo
from .memory import KernelMemory, TranslationError

REQUIRED = ("kallsyms_names", "kallsyms_num_syms", "kallsyms_token_table", "kallsyms_token_index",
            "kallsyms_offsets")
TYPE_LETTERS = b"tTdDbBrRAaWwVv"
MAX_NAMES_BYTES = 64 << 20  # far beyond any kernel's table: a damaged count stays bounded


class Kallsyms:
    """Finds the addresses of named symbols; TranslationError if the table cannot be read."""

    def __init__(self, kernel: KernelMemory, info: VmcoreInfo) -> None:
        missing = [name for name in REQUIRED if name not in info.symbols]
        if missing:
            raise TranslationError(f"VMCOREINFO lacks SYMBOL({missing[0]}) (Linux 6.0+ exports it)")
        self.kernel = kernel
        self.symbols = info.symbols
        self.count = struct.unpack("<I", kernel.read(info.symbols["kallsyms_num_syms"], 4))[0]
        self.token_index = kernel.read(info.symbols["kallsyms_token_index"], 512)
        index = struct.unpack("<256H", self.token_index)
        self.token_table = kernel.read(info.symbols["kallsyms_token_table"], max(index) + 256)
        tokens = [self.token_table[start:self.token_table.find(b"\0", start)] for start in index]
        self.tokens = tokens
        names_start = info.symbols["kallsyms_names"]
        after = [address for address in info.symbols.values() if address > names_start]
        self.names_size = min(min(after, default=names_start + MAX_NAMES_BYTES) - names_start, MAX_NAMES_BYTES)
        if "kallsyms_relative_base" in info.symbols:
            self.base = struct.unpack("<Q", kernel.read(info.symbols["kallsyms_relative_base"], 8))[0]
            self.text_base = False
        elif "_stext" in info.symbols:
            self.base, self.text_base = info.symbols["_stext"], True
        else:
            raise TranslationError("VMCOREINFO lacks SYMBOL(kallsyms_relative_base) and SYMBOL(_stext)")

    def addresses(self, names: Iterable[str]) -> dict[str, tuple[str, int, int]]:
        """name -> (type letter, address, the next symbol's address) for each wanted name the
        table has (kallsyms is in address order: the next symbol is where a function ends)."""
        wanted = {name.encode() for name in names}
        typed = {bytes([letter]) + name for name in wanted for letter in TYPE_LETTERS}
        prefixes = {name[:end] for name in typed for end in range(1, len(name) + 1)}
        first_ok = bytes(token in prefixes or any(token[:end] in typed for end in range(1, len(token) + 1))
                         for token in self.tokens)
        token_lengths = bytes(min(len(token), 255) for token in self.tokens)
        lengths = {len(name) for name in typed}
        length_ok = bytes(length in lengths for length in range(256))
        names_blob = self.kernel.read(self.symbols["kallsyms_names"], self.names_size)
        found = fastcopy.kallsyms_find(names_blob, self.count, self.token_table, self.token_index, first_ok,
                                       token_lengths, length_ok, wanted)
        result: dict[str, tuple[str, int, int]] = {}
        for index, name in found:
            if index + 1 >= self.count:
                continue
            offset, following = struct.unpack("<ii", self.kernel.read(self.symbols["kallsyms_offsets"] + 4 * index, 8))
            result.setdefault(name[1:].decode(errors="replace"),
                              (chr(name[0]), self._address(offset), self._address(following)))
        return result

    def function_starts(self, addresses: Iterable[int]) -> list[int]:
        """The address of the symbol at or below each of ``addresses`` (where the function
        holding a return address starts); kallsyms_offsets is in address order."""
        offsets = array("i", self.kernel.read(self.symbols["kallsyms_offsets"], 4 * self.count))
        starts = []
        for address in addresses:
            index = bisect.bisect_right(offsets, address, key=self._address) - 1
            if index >= 0:
                starts.append(self._address(offsets[index]))
        return starts

    def _address(self, offset: int) -> int:
        if self.text_base:
            return self.base + (offset & 0xFFFFFFFF)
        if offset < 0:  # CONFIG_KALLSYMS_ABSOLUTE_PERCPU: relative to the base, downwards
            return self.base - 1 - offset
        # Non-negative: absolute (a per-CPU symbol) with absolute per-CPU symbols, else relative.
        return offset if offset < 1 << 24 else self.base + offset
