"""makedumpfile's flattened format: a dump as a sequential stream, for pipes.

A 4096-byte header (signature "makedumpfile", type 1, version 1; big-endian), then records
(int64 offset, int64 size, both big-endian, then size bytes that belong at offset in the real
file); later records for the same bytes win; offset = size = -1 ends the stream.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

from ..errors import InputError
from ..source.structs import Record

FLAT_SIGNATURE = b"makedumpfile"
FLAT_HEADER_SIZE = 4096
FLAT_HEADER = Record("makedumpfile_header", [("signature", "16s"), ("type", "q"), ("version", "q")], ">")
FLAT_RECORD = Record("makedumpfile_data_header", [("offset", "q"), ("buf_size", "q")], ">")
END_OFFSET = -1
# makedumpfile -R reads a record's data in one buffer: keep records at most this large.
MAX_RECORD_BYTES = 16 << 20


class FlatSink:
    """A Sink that turns positioned writes into flattened records on a sequential stream."""

    def __init__(self, write: Callable[[bytes | bytearray | memoryview], object]) -> None:
        self._write = write
        self._write(FLAT_HEADER.build(signature=FLAT_SIGNATURE, type=1, version=1)
                    .ljust(FLAT_HEADER_SIZE, b"\0"))

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        for start in range(0, len(view), MAX_RECORD_BYTES):
            piece = view[start:start + MAX_RECORD_BYTES]
            self._write(FLAT_RECORD.build(offset=offset + start, buf_size=len(piece)))
            self._write(piece)

    def reserve(self, offset: int, length: int) -> None:
        """A stream cannot reserve space."""

    def close(self) -> None:
        self._write(FLAT_RECORD.build(offset=END_OFFSET, buf_size=END_OFFSET))


def is_flat(head: bytes) -> bool:
    return head[:len(FLAT_SIGNATURE)] == FLAT_SIGNATURE


def rearrange(stream: BinaryIO, write_at: Callable[[int, bytes], None]) -> int:
    """Replay a flattened stream into positioned writes (what ``makedumpfile -R`` does).

    Returns the number of records. A stream without the end marker is an InputError: the
    dump it carried was cut short.
    """
    header = _read_exact(stream, FLAT_HEADER_SIZE, "flattened header")
    parsed = FLAT_HEADER.parse(header)
    if not is_flat(parsed.signature) or parsed.type != 1:
        raise InputError("not a flattened dump (no makedumpfile signature)")
    records = 0
    while True:
        rec = FLAT_RECORD.parse(_read_exact(stream, FLAT_RECORD.size, "record header"))
        if rec.offset == END_OFFSET and rec.buf_size == END_OFFSET:
            return records
        if rec.offset < 0 or rec.buf_size < 0 or rec.buf_size > 1 << 31:
            raise InputError(f"flattened record {records} is damaged "
                             f"(offset {rec.offset}, size {rec.buf_size})")
        write_at(rec.offset, _read_exact(stream, rec.buf_size, f"record {records} data"))
        records += 1


def _read_exact(stream: BinaryIO, length: int, what: str) -> bytes:
    chunks = []
    remaining = length
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            raise InputError(f"flattened stream ends inside the {what} (no end marker: cut short)")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
