"""The hash kallsyms_find (_fastcopy.pyx) sorts symbol names out with before it makes any a
Python object: FNV-1a, 32 bits, over the name without its type letter, its low NAME_HASH_BITS
bits a bit number in the bitmap of the names wanted. A name whose bit is clear is not wanted;
one whose bit is set is looked up (some 60 names set 0.1% of the 65536 bits)."""

from __future__ import annotations

from collections.abc import Iterable

FNV_BASIS, FNV_PRIME = 2166136261, 16777619
NAME_HASH_BITS = 16


def name_hash(name: bytes) -> int:
    digest = FNV_BASIS
    for byte in name:
        digest = ((digest ^ byte) * FNV_PRIME) & 0xFFFFFFFF
    return digest & ((1 << NAME_HASH_BITS) - 1)


def name_bitmap(names: Iterable[bytes]) -> bytes:
    """The bitmap (LSB first) with the bit of each of ``names`` set."""
    bitmap = bytearray(1 << NAME_HASH_BITS >> 3)
    for name in names:
        bit = name_hash(name)
        bitmap[bit >> 3] |= 1 << (bit & 7)
    return bytes(bitmap)
