"""The crashed kernel's own symbol table (kallsyms), read from the dump without debug info.

Since Linux 6.0 (commit 5fd8fea935a1, "vmcoreinfo: include kallsyms symbols", which drgn uses
for its debug-info-free mode) VMCOREINFO names kallsyms_names, kallsyms_token_table,
kallsyms_token_index, kallsyms_num_syms and kallsyms_offsets. Names are compressed: a length
(one byte, two if its top bit is set since Linux 6.1, commit 73bbb94466fd "kallsyms: support
"big" kernel symbols"), then that many token bytes, each expanding through the token table; the
first character of the expansion is the symbol's type letter. Only wanted names are expanded:
a name can match only if the expansion of its first token is a type letter and a prefix of a
wanted name, and only if the name's expanded length is a wanted one, which leaves a few percent
of the ~100000 names; of those, only the names whose hash bit is set become Python objects
(kernel/name_hash.py).

Addresses: kallsyms_offsets holds one s32 per symbol, read in one of four ways over the
releases; the table itself does not say which, so the one that gives every symbol VMCOREINFO also
names (_stext, swapper_pg_dir, init_uts_ns, ...) its VMCOREINFO address is used, and a table no
way decodes is not used at all:
- ``relative_base - 1 - offset`` for negative offsets, absolute for the others (per-CPU
  symbols): CONFIG_KALLSYMS_ABSOLUTE_PERCPU (x86_64 SMP) with kallsyms_relative_base;
- ``relative_base + (u32)offset``: the other architectures (arm64) with kallsyms_relative_base;
- ``_text + (u32)offset``: since the base was dropped (Linux 6.15, commit 64e166099b69
  "kallsyms: get rid of kallsyms_relative_base"), _text being VMCOREINFO's _stext here;
- ``&kallsyms_offsets[i] + offset``, place-relative: Debian's 7.2.12 (its _stext decodes so and
  no other way; the commit is not identified here).
"""

from __future__ import annotations

import bisect
import struct
import sys
from array import array
from collections.abc import Callable, Iterable

from .. import fastcopy
from ..source.vmcoreinfo import VmcoreInfo
from .memory import KernelMemory, TranslationError
from .name_hash import name_bitmap

REQUIRED = ("kallsyms_names", "kallsyms_num_syms", "kallsyms_token_table", "kallsyms_token_index",
            "kallsyms_offsets")
TYPE_LETTERS = b"tTdDbBrRAaWwVv"
# VMCOREINFO symbols that kallsyms also holds, at the same address: they tell how its addresses
# are to be read (not mem_section or vmemmap: VMCOREINFO gives the pointers' values).
KNOWN_SYMBOLS = ("_stext", "swapper_pg_dir", "init_uts_ns", "init_top_pgt", "prb", "printk_rb_static",
                 "clear_seq", "node_online_map")
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
        self._offsets_address = info.symbols["kallsyms_offsets"]
        self._known = {name: address for name, address in info.symbols.items() if name in KNOWN_SYMBOLS}
        self._relative_base = (struct.unpack("<Q", kernel.read(info.symbols["kallsyms_relative_base"], 8))[0]
                               if "kallsyms_relative_base" in info.symbols else None)
        self._decode: Callable[[int, int], int] | None = None
        # Read once for the classifier's and the value order's lookups (1-3 MB); the save drops
        # it after the last (forget_names).
        self._names_blob: bytes | None = None

    def forget_names(self) -> None:
        """Drop the copy of kallsyms_names the lookups share (1.4 MiB on Debian 6.1, 3.2 MiB on
        7.2): held through the pages phase, it raised a save's peak RSS by as much. A later
        lookup reads it again."""
        self._names_blob = None

    def addresses(self, names: Iterable[str]) -> dict[str, tuple[str, int, int]]:
        """name -> (type letter, address, the next symbol's address) for each wanted name the
        table has (kallsyms is in address order: the next symbol is where a function ends);
        TranslationError if the table's addresses decode in no known way."""
        wanted = set(names)
        found = self._found(wanted | set(self._known))
        decode = self._decoding(found)
        result: dict[str, tuple[str, int, int]] = {}
        for name, (letter, index) in found.items():
            if name in wanted:
                offset, following = struct.unpack("<ii", self.kernel.read(self._offsets_address + 4 * index, 8))
                result[name] = (letter, decode(index, offset), decode(index + 1, following))
        return result

    def _decoding(self, found: dict[str, tuple[str, int]]) -> Callable[[int, int], int]:
        """The way of reading kallsyms_offsets (module docstring) that gives the symbols
        VMCOREINFO names their VMCOREINFO addresses."""
        if self._decode is not None:
            return self._decode
        indexes = {name: found[name][1] for name in self._known if name in found}
        text = self._known.get("_stext")
        if text is None or "_stext" not in indexes:
            raise TranslationError("kallsyms or VMCOREINFO has no _stext: kallsyms addresses cannot be checked")
        offsets = {name: struct.unpack("<i", self.kernel.read(self._offsets_address + 4 * index, 4))[0]
                   for name, index in indexes.items()}
        ways: list[Callable[[int, int], int]] = []
        base = self._relative_base
        if base is not None:
            ways.append(lambda _, offset: base - 1 - offset if offset < 0 else offset)
            ways.append(lambda _, offset: base + (offset & 0xFFFFFFFF))
        ways.append(lambda _, offset: text + (offset & 0xFFFFFFFF))
        table = self._offsets_address
        ways.append(lambda index, offset: (table + 4 * index + offset) & 0xFFFFFFFFFFFFFFFF)
        for way in ways:
            if all(way(indexes[name], offsets[name]) == self._known[name] for name in indexes):
                self._decode = way
                return way
        raise TranslationError(f"kallsyms addresses decode in no known way (VMCOREINFO's _stext is {text:#x})")

    def _found(self, names: Iterable[str]) -> dict[str, tuple[str, int]]:
        """name -> (type letter, index) of the first symbol of each wanted name, but the last."""
        wanted = {name.encode() for name in names}
        prefixes = {name[:end] for name in wanted for end in range(len(name) + 1)}
        first_ok = bytes(bool(token) and token[0] in TYPE_LETTERS and token[1:] in prefixes for token in self.tokens)
        token_lengths = bytes(min(len(token), 255) for token in self.tokens)
        lengths = {1 + len(name) for name in wanted}
        length_ok = bytes(length in lengths for length in range(256))
        if self._names_blob is None:
            self._names_blob = self.kernel.read(self.symbols["kallsyms_names"], self.names_size)
        found = fastcopy.kallsyms_find(self._names_blob, self.count, self.token_table, self.token_index, first_ok,
                                       token_lengths, length_ok, name_bitmap(wanted), wanted)
        result: dict[str, tuple[str, int]] = {}
        for index, name in found:
            if index + 1 < self.count:
                result.setdefault(name[1:].decode(errors="replace"), (chr(name[0]), index))
        return result

    def function_starts(self, addresses: Iterable[int]) -> list[int]:
        """The address of the symbol at or below each of ``addresses`` (where the function
        holding a return address starts); kallsyms_offsets is in address order."""
        decode = self._decode or self._decoding(self._found(set(self._known)))
        offsets = array("i", self.kernel.read(self._offsets_address, 4 * self.count))
        if sys.byteorder != "little":
            offsets.byteswap()
        symbols = range(self.count)
        starts = []
        for address in addresses:
            index = bisect.bisect_right(symbols, address, key=lambda i: decode(i, offsets[i])) - 1
            if index >= 0:
                starts.append(decode(index, offsets[index]))
        return starts
