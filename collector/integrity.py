"""The integrity manifest: what a dump held when it left the collector, for checking it where it
lands (``vmcore-save --verify``).

The save job wraps the target's file in a HashingFile (formats and targets know nothing of it).
The manifest (``<dump>.manifest.json`` beside the dump, renamed with it) holds the SHA-256 of
each CHUNK_SIZE chunk of the final file, a root hash over them, the file's size and whether the
dump is complete. A check then names the first damaged chunk, not only "the file differs".

Writers write at any offsets, and rewrite their header at the end. A chunk is hashed once every
byte of it is written (on a thread beside the dump: hashlib releases the GIL); until then only
the bytes written are kept, as sparse extents, so memory is the sequential streams' current
chunks plus what was written out of order, never the dump. The first chunk (the header) and
chunks with holes (zeros in the file) are hashed when the manifest is made. A chunk whose
content is not known is recorded as null and not checked: a write there failed, or came after
the chunk was hashed.

The extents are views of the writers' own buffers, not copies (issue 14: the hash must not slow
a one-thread dump): each copy, and each chunk's pieces joined, took fresh memory, and its page
faults cost the dump's own thread more than the hashing costs the hashing thread (33,500 more
faults, some 130 ms, on a 100 MiB dump). What is left is the first chunk hashed at the end and
fresh memory, once, for the bytes held (the first chunk, the chunk being filled): about 10 ms
whatever the dump's size. So a writer must not change a buffer after write_at returns (the Sink
contract; the kdump and ELF writers hand over a new buffer each time: tests/test_integrity.py
checks both); resizing one would raise BufferError. A chunk left open with less than half of a
write keeps a copy of its part, not a hold on the whole buffer.
"""

from __future__ import annotations

import hashlib
import json
import os
from bisect import bisect_left, bisect_right
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .errors import CollectorError
from .targets import Target, TargetFile

CHUNK_SIZE = 4 << 20
MANIFEST_SUFFIX = ".manifest.json"
KIND, VERSION, HASH = "vmcore-collector manifest", 1, "sha256"
# Chunks handed to the hashing thread and not yet hashed: the dump waits beyond that.
HASH_AHEAD = 2
# When a write fails, the writes before it within this many bytes may not have reached the
# target either (an SFTP target acknowledges up to 4 MiB later): their chunks are not checked.
UNSURE_BYTES = 8 << 20
# The names a dump has in a dump directory, in the order --verify looks for them there.
DUMP_NAMES = ("vmcore", "vmcore.flat", "vmcore-incomplete")
EXIT_INTACT, EXIT_DAMAGED, EXIT_NO_MANIFEST = 0, 1, 2
READ_BYTES = 1 << 20


Buffer = bytes | bytearray | memoryview


def _digest(data: Buffer) -> str:
    return hashlib.sha256(data).hexdigest()


def _digest_parts(parts: list[Buffer]) -> str:
    """The SHA-256 of the parts one after the other, without joining them."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


@dataclass(frozen=True)
class Manifest:
    size: int                        # bytes the dump file holds
    complete: bool                   # the dump is complete (else cut short, flagged incomplete)
    chunks: tuple[str | None, ...]   # SHA-256 of each chunk; None: not known, not checked
    chunk_size: int = CHUNK_SIZE

    @property
    def root(self) -> str:
        """SHA-256 of the chunks' binary digests in order (32 zero bytes for an unknown one)."""
        return _digest(b"".join(bytes(32) if chunk is None else bytes.fromhex(chunk) for chunk in self.chunks))

    def to_json(self) -> bytes:
        """One chunk per line, so that two manifests compare with diff."""
        head = {"manifest": KIND, "version": VERSION, "hash": HASH, "complete": self.complete,
                "size": self.size, "chunk_size": self.chunk_size, "root": self.root}
        chunks = ",\n".join(f"  {json.dumps(chunk)}" for chunk in self.chunks)
        return (json.dumps(head)[:-1] + f',\n "chunks": [\n{chunks}\n ]}}\n').encode()

    @classmethod
    def from_json(cls, text: bytes, name: str) -> Manifest:
        """The manifest in ``text`` (from file ``name``); CollectorError if it is none."""
        try:
            fields = json.loads(text)
            if not isinstance(fields, dict) or fields.get("manifest") != KIND:
                raise ValueError("not a vmcore-collector manifest")
            if fields.get("pending"):
                raise CollectorError(f"{name}: the save stopped before it wrote the manifest: "
                                     "there is nothing to check the dump against")
            if fields.get("version") != VERSION or fields.get("hash") != HASH:
                raise ValueError(f"version {fields.get('version')} with {fields.get('hash')}: this tool reads "
                                 f"version {VERSION} with {HASH}")
            manifest = cls(int(fields["size"]), bool(fields["complete"]),
                           tuple(None if chunk is None else str(chunk) for chunk in fields["chunks"]),
                           int(fields["chunk_size"]))
            if manifest.chunk_size <= 0 or any(chunk is not None and len(bytes.fromhex(chunk)) != 32
                                               for chunk in manifest.chunks):
                raise ValueError("chunk size or chunk hashes malformed")
        except (ValueError, KeyError, TypeError) as e:
            raise CollectorError(f"{name} is not a manifest this tool can read ({e})") from None
        if fields.get("root") != manifest.root:
            raise _Damaged(f"{name} is DAMAGED: its root hash does not match its chunk hashes")
        return manifest


# Written when the dump starts, over the space the manifest will take (manifest_bound): a dump
# cut short by a full target still has room for its manifest. JSON allows the trailing spaces.
PENDING = json.dumps({"manifest": KIND, "version": VERSION, "pending": True}).encode() + b"\n"


def manifest_bound(dump_size_bound: int) -> int:
    """The most bytes the manifest of a dump of at most ``dump_size_bound`` bytes can take."""
    chunks = -(-dump_size_bound // CHUNK_SIZE) + 1
    largest = Manifest(dump_size_bound, False, ("0" * 64,) * chunks)
    return max(len(largest.to_json()), len(PENDING))


class _Extents:
    """The bytes written so far into one chunk: sorted, non-overlapping (start, data) pieces,
    a later write replacing what it overlaps. Pieces are views (module docstring)."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.pieces: list[Buffer] = []
        self.covered = 0

    def put(self, start: int, data: Buffer) -> None:
        end = start + len(data)
        lo = bisect_right(self.starts, start) - 1
        if lo < 0 or self.starts[lo] + len(self.pieces[lo]) <= start:
            lo += 1
        hi = bisect_left(self.starts, end)
        starts, pieces = [start], [data]
        if lo < hi:
            first, last = self.starts[lo], self.starts[hi - 1]
            if first < start:
                starts.insert(0, first)
                pieces.insert(0, self.pieces[lo][:start - first])
            tail = self.pieces[hi - 1][end - last:]
            if tail:
                starts.append(end)
                pieces.append(tail)
            self.covered -= sum(len(piece) for piece in self.pieces[lo:hi])
        self.starts[lo:hi] = starts
        self.pieces[lo:hi] = pieces
        self.covered += sum(len(piece) for piece in pieces)

    def parts(self, length: int) -> list[Buffer]:
        """The chunk's first ``length`` bytes in order, zeros where nothing was written."""
        parts: list[Buffer] = []
        at = 0
        for start, piece in zip(self.starts, self.pieces, strict=True):
            if start >= length:
                break
            if start > at:
                parts.append(bytes(start - at))
            parts.append(piece[:length - start])
            at = start + len(parts[-1])
        if at < length:
            parts.append(bytes(length - at))
        return parts


class HashingFile:
    """A TargetFile that hashes what is written through it (module docstring); ``manifest()``
    says what the file holds. Writes that fail are not taken for content."""

    def __init__(self, file: TargetFile, chunk_size: int = CHUNK_SIZE) -> None:
        self.file = file
        self.chunk_size = chunk_size
        self.size = 0          # end of the furthest write that succeeded
        self._unsure_end = 0   # end of the furthest write that failed
        self._open: dict[int, _Extents] = {}
        self._hashed: dict[int, Future[str]] = {}
        self._unknown: set[int] = set()
        self._queue: deque[Future[str]] = deque()
        # Chunks written within the last UNSURE_BYTES written, oldest first: chunk -> bytes
        # written (the clock) when it was last written to.
        self._recent: OrderedDict[int, int] = OrderedDict()
        self._clock = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="hash")

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        try:
            self.file.write_at(offset, data)
        except OSError:
            self._failed(offset, offset + len(view))
            raise
        self._take(offset, view)

    def reserve(self, offset: int, length: int) -> None:
        """Space reserved reads as zeros: it changes no byte the manifest covers (--verify
        takes zeros past the end for it)."""
        self.file.reserve(offset, length)

    def sync(self) -> None:
        try:
            self.file.sync()
        except OSError:
            self._failed(self.size, self.size)
            raise

    def close(self) -> None:
        """Close the file; the chunks queued for hashing are hashed (manifest() still works)."""
        try:
            self.file.close()
        finally:
            self._pool.shutdown(wait=True)

    def _take(self, offset: int, view: memoryview) -> None:
        if not view:  # writes nothing, not even the file's size
            return
        end = offset + len(view)
        self.size = max(self.size, end)
        self._clock += len(view)
        cs = self.chunk_size
        for index in range(offset // cs, -(-end // cs)):
            self._recent[index] = self._clock
            self._recent.move_to_end(index)
        while next(iter(self._recent.values())) < self._clock - UNSURE_BYTES:
            self._recent.popitem(last=False)
        for index in range(offset // cs, -(-end // cs)):
            start = index * cs
            piece = view[max(offset, start) - offset:min(end, start + cs) - offset]
            if index in self._hashed or index in self._unknown:
                self._unknown.add(index)  # rewritten after it was hashed: its content is not known
                continue
            extents = self._open.get(index)
            if extents is None:
                extents = self._open[index] = _Extents()
            extents.put(max(offset, start) - start, piece)
            # The first chunk holds the header, which formats write again at the end.
            if extents.covered == cs and index != 0:
                self._hash(index, extents.pieces)
            elif 2 * len(piece) < len(view):  # left open with a small part of a large write: a copy
                extents.put(max(offset, start) - start, bytes(piece))  # (module docstring)

    def _hash(self, index: int, parts: list[Buffer]) -> None:
        del self._open[index]
        while len(self._queue) >= HASH_AHEAD:
            self._queue.popleft().result()
        future = self._pool.submit(_digest_parts, parts)
        self._hashed[index] = future
        self._queue.append(future)

    def _failed(self, offset: int, end: int) -> None:
        """What a failed write or sync makes unknown: its own bytes and those of the writes
        just before it."""
        self._unsure_end = max(self._unsure_end, end)
        cs = self.chunk_size
        unknown = {*self._recent, *range(offset // cs, max(offset // cs + 1, -(-end // cs)))}
        self._unknown |= unknown
        for index in unknown:
            self._open.pop(index, None)

    def manifest(self, complete: bool) -> Manifest:
        """What the file holds now; call after the last write."""
        cs = self.chunk_size
        chunks: list[str | None] = []
        for index in range(-(-max(self.size, self._unsure_end) // cs)):
            start = index * cs
            if index in self._unknown or start >= self.size:
                chunks.append(None)
            elif index in self._hashed:
                chunks.append(self._hashed[index].result())
            else:
                length = min(cs, self.size - start)
                extents = self._open.get(index)
                chunks.append(_digest(bytes(length)) if extents is None else _digest_parts(extents.parts(length)))
        return Manifest(self.size, complete, tuple(chunks), cs)


def manifest_path(dump_path: str) -> str:
    return dump_path + MANIFEST_SUFFIX


class ManifestFile:
    """The manifest beside a dump being written to ``target``: its space taken when the dump
    starts (where the target writes at offsets), written and committed with the dump. Whatever
    fails here is a warning: the dump matters more than its manifest."""

    def __init__(self, target: Target, dump_path: str, dump_size_bound: int, warn: Callable[[str], None]) -> None:
        self.target = target
        self.path = manifest_path(dump_path)
        self.warn = warn
        self.file: TargetFile | None = None
        if not target.streams_only:  # a stream cannot be written twice: its manifest comes at the end
            self._try("reserving space for", self._reserve, dump_size_bound)

    def _reserve(self, dump_size_bound: int) -> None:
        self.file = self.target.create(self.path)
        self.file.write_at(0, PENDING.ljust(manifest_bound(dump_size_bound), b" "))

    def write(self, manifest: Manifest, dump_error: str | None = None) -> bool:
        """Write, sync and close the manifest (under the dump's incomplete name); whether it is.
        After the dump itself failed on the target (``dump_error``), a manifest that cannot be
        written either is not one more warning: the dump's INCOMPLETE line names the cause."""
        return self._try("writing", self._write, manifest, quiet=dump_error is not None)

    def _write(self, manifest: Manifest) -> None:
        file, self.file = self.file or self.target.create(self.path), None
        try:
            file.write_at(0, manifest.to_json())  # over the placeholder, which is longer: trailing spaces
            file.sync()
        finally:
            file.close()

    def commit(self, final_dump_path: str) -> None:
        self._try("renaming", self.target.commit, self.path, manifest_path(final_dump_path))

    def close(self) -> None:
        if self.file is not None:
            self._try("closing", self.file.close)
            self.file = None

    def _try(self, doing: str, action: Callable[..., None], *args: Any, quiet: bool = False) -> bool:
        try:
            action(*args)
        except (OSError, CollectorError) as e:
            reason = str(e) if isinstance(e, CollectorError) else e.strerror or str(e) or type(e).__name__
            if not quiet:
                self.warn(f"warning: {doing} the manifest {self.path}: {reason}; the dump cannot be checked "
                          "with --verify")
            return False
        return True


class _Damaged(Exception):
    """A check found damage (exit 1); the message names where."""


@dataclass(frozen=True)
class VerifyOptions:
    """--verify's input, checked on creation like savejob.SaveOptions."""

    path: str

    def __post_init__(self) -> None:
        if not self.path:
            raise CollectorError("--verify needs a dump file or a dump directory")
        if self.path == "-":
            raise CollectorError("--verify -: a check reads the dump and its manifest beside it; give a file")


@dataclass(frozen=True)
class Verdict:
    text: str
    exit_code: int  # EXIT_INTACT, EXIT_DAMAGED (EXIT_NO_MANIFEST raises CollectorError)


def verify(options: VerifyOptions) -> Verdict:
    """Check a dump (or the dump in a dump directory) against its manifest. CollectorError
    (exit 2) when there is no dump or no manifest to check against."""
    dump = _dump_file(options.path)
    name = manifest_path(dump)
    try:
        with open(name, "rb") as f:
            text = f.read()
    except FileNotFoundError:
        raise CollectorError(f"{dump}: no manifest ({os.path.basename(name)} is not beside it): "
                             "nothing to check against") from None
    except OSError as e:
        raise CollectorError(f"cannot read the manifest {name}: {e.strerror}") from None
    try:
        manifest = Manifest.from_json(text, name)
        checked = _check(dump, manifest)
    except _Damaged as e:
        return Verdict(str(e), EXIT_DAMAGED)
    known = sum(chunk is not None for chunk in manifest.chunks)
    if manifest.complete and known == len(manifest.chunks):
        return Verdict(f"{dump}: intact ({manifest.size} bytes in {known} chunks match its manifest)", EXIT_INTACT)
    state = "a complete dump" if manifest.complete else "an INCOMPLETE dump (its save was cut short)"
    return Verdict(f"{dump}: intact as far as known, {state}: {checked} bytes in {known} of "
                   f"{len(manifest.chunks)} chunks match its manifest (the others' content is not known "
                   "to it: writes there failed)", EXIT_INTACT)


def _dump_file(path: str) -> str:
    if os.path.isdir(path):
        for candidate in DUMP_NAMES:
            if os.path.isfile(os.path.join(path, candidate)):
                return os.path.join(path, candidate)
        raise CollectorError(f"--verify {path}: no dump in this directory (none of {', '.join(DUMP_NAMES)})")
    if not os.path.exists(path):
        raise CollectorError(f"--verify {path}: no such file or directory")
    if not os.path.isfile(path):
        raise CollectorError(f"--verify {path}: not a regular file; give a dump file or a dump directory")
    return path


def _check(dump: str, manifest: Manifest) -> int:
    """Bytes checked; raises _Damaged naming the first damaged range."""
    cs, size = manifest.chunk_size, manifest.size
    checked = 0
    # A write lost after a failure may be what made the file this long: before it, a file
    # ending early is a hole, zeros, as it would be had that write landed.
    last_unknown = max((i for i, chunk in enumerate(manifest.chunks) if chunk is None), default=-1)
    try:
        f = open(dump, "rb", buffering=0)
    except OSError as e:
        raise CollectorError(f"cannot open {dump}: {e.strerror}") from None
    with f:
        length = os.fstat(f.fileno()).st_size
        for index, expected in enumerate(manifest.chunks):
            start = index * cs
            if expected is None or start >= size:
                continue
            end = min(start + cs, size)
            if length < end and index > last_unknown:
                raise _Damaged(f"{dump} is DAMAGED: bytes {max(start, length)}-{size - 1} are missing "
                               f"(the file is {length} bytes, its manifest says {size})")
            if _hash_range(f, start, end) != expected:
                raise _Damaged(f"{dump} is DAMAGED: bytes {start}-{end - 1} (chunk {index} of "
                               f"{len(manifest.chunks)}) differ from what was written")
            checked += end - start
        _check_tail(f, dump, manifest, length)
    return checked


def _hash_range(f: Any, start: int, end: int) -> str:
    digest = hashlib.sha256()
    for offset in range(start, end, READ_BYTES):
        want = min(READ_BYTES, end - offset)
        digest.update(os.pread(f.fileno(), want, offset).ljust(want, b"\0"))  # past the end: a hole
    return digest.hexdigest()


def _check_tail(f: Any, dump: str, manifest: Manifest, length: int) -> None:
    """Past the manifest's size a file may hold zeros (space reserved, never written) and,
    within the chunks of failed writes, anything."""
    cs, offset = manifest.chunk_size, manifest.size
    while offset < length:
        index = offset // cs
        if index < len(manifest.chunks) and manifest.chunks[index] is None:
            offset = (index + 1) * cs
            continue
        data = os.pread(f.fileno(), min(READ_BYTES, length - offset, (index + 1) * cs - offset), offset)
        if data.strip(b"\0"):
            raise _Damaged(f"{dump} is DAMAGED: bytes {manifest.size}-{length - 1} are past the end its "
                           f"manifest gives ({manifest.size} bytes) and not zeros")
        offset += len(data)
