"""The integrity manifest: what a dump held when it left the collector, for checking it where it
lands (``vmcore-save --verify``).

The save job wraps the target's file in a HashingFile (formats and targets know nothing of it).
The manifest (``<dump>.manifest.json`` beside the dump, renamed with it) holds a digest of each
CHUNK_SIZE chunk of the final file, a root hash over them, the file's size and whether the dump
is complete. A chunk's digest is the SHA-256 of the SHA-256 digests of its BLOCK_SIZE blocks in
order. A check then names the first damaged chunk, not only "the file differs".

Writers write at any offsets, and rewrite their header at the end. The dump's own thread only
queues each write's buffer (a view, not a copy) for fastcopy.FileHasher, which hashes each block
once every byte of it is written, beside the dump (issue 14: the hash must not slow a one-thread
dump): the compiled module on a thread of its own that never takes the GIL (a Python thread
sharing the GIL with the dump cost 2-4% even though hashlib releases it), its pure-Python twin
on a Python thread. Memory is the sequential streams' current blocks plus the bytes written out
of order (the descriptors of the pages the value order sends first), never the dump: past
HOLD_BYTES of those, the chunk holding most of them is given up (not checked) rather than memory
grown. The file's first block (the headers written again at the end) and blocks with holes
(zeros in the file) are hashed when the manifest is made, so the dump's end waits for about one
block's hashing whatever the dump's size. A chunk whose content is not known is recorded as null
and not checked: a write there failed, or came after a block of it was hashed.

So a writer must not change a buffer after write_at returns (the Sink contract; the kdump and
ELF writers hand over a new buffer each time: tests/test_integrity.py checks both); resizing
one would raise BufferError.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import CollectorError
from .fastcopy import FileHasher
from .targets import Target, TargetFile

CHUNK_SIZE = 4 << 20
# Each block is one SHA-256 call (in the twin one hashlib call, which gives up the GIL and takes
# it back: 64 KiB blocks, 16 times as many, made the dump's own thread wait measurably).
BLOCK_SIZE = 1 << 20
MANIFEST_SUFFIX = ".manifest.json"
KIND, VERSION, HASH = "vmcore-collector manifest", 2, "sha256 of sha256 blocks"
# Bytes queued for the hashing and not yet taken in: the dump waits beyond that.
HASH_AHEAD = 8 << 20
# The blocks within this many bytes of the file's start are hashed when the manifest is made:
# the kdump writer rewrites its header (at 0) and sub-header (one page on, up to 64 KiB pages).
HEAD_BYTES = 128 << 10
# Bytes kept for blocks not yet wholly written (with a piece's own cost, PIECE_BYTES): past
# this, the chunk that holds most of them is given up (a capture kernel may have 128 MiB).
HOLD_BYTES = 32 << 20
PIECE_BYTES = 200
# When a write fails, the writes before it within this many bytes may not have reached the
# target either (an SFTP target acknowledges up to 4 MiB later): their chunks are not checked.
UNSURE_BYTES = 8 << 20
# The names a dump has in a dump directory, in the order --verify looks for them there.
DUMP_NAMES = ("vmcore", "vmcore.flat", "vmcore-incomplete")
EXIT_INTACT, EXIT_DAMAGED, EXIT_NO_MANIFEST = 0, 1, 2
READ_BYTES = 1 << 20


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunk_digest(block_digests: list[bytes]) -> str:
    """A chunk's digest: the SHA-256 of its blocks' SHA-256 digests, in order."""
    return _digest(b"".join(block_digests))


@dataclass(frozen=True)
class Manifest:
    size: int                        # bytes the dump file holds
    complete: bool                   # the dump is complete (else cut short, flagged incomplete)
    chunks: tuple[str | None, ...]   # digest of each chunk (chunk_digest); None: not known, not checked
    chunk_size: int = CHUNK_SIZE
    block_size: int = BLOCK_SIZE

    @property
    def root(self) -> str:
        """SHA-256 of the chunks' binary digests in order (32 zero bytes for an unknown one)."""
        return _digest(b"".join(bytes(32) if chunk is None else bytes.fromhex(chunk) for chunk in self.chunks))

    def to_json(self) -> bytes:
        """One chunk per line, so that two manifests compare with diff."""
        head = {"manifest": KIND, "version": VERSION, "hash": HASH, "complete": self.complete,
                "size": self.size, "chunk_size": self.chunk_size, "block_size": self.block_size,
                "root": self.root}
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
            if fields.get("failed"):
                raise CollectorError(f"{name}: the save could not make the manifest ({fields['failed']}): "
                                     "there is nothing to check the dump against")
            if fields.get("version") != VERSION or fields.get("hash") != HASH:
                raise ValueError(f"version {fields.get('version')} with {fields.get('hash')}: this tool reads "
                                 f"version {VERSION} with {HASH}")
            manifest = cls(int(fields["size"]), bool(fields["complete"]),
                           tuple(None if chunk is None else str(chunk) for chunk in fields["chunks"]),
                           int(fields["chunk_size"]), int(fields["block_size"]))
            if (manifest.block_size <= 0 or manifest.chunk_size <= 0 or manifest.chunk_size % manifest.block_size
                    or any(chunk is not None and len(bytes.fromhex(chunk)) != 32 for chunk in manifest.chunks)):
                raise ValueError("chunk size, block size or chunk hashes malformed")
        except (ValueError, KeyError, TypeError) as e:
            raise CollectorError(f"{name} is not a manifest this tool can read ({e})") from None
        if fields.get("root") != manifest.root:
            raise _Damaged(f"{name} is DAMAGED: its root hash does not match its chunk hashes")
        return manifest


# Written when the dump starts, over the space the manifest will take (manifest_bound): a dump
# cut short by a full target still has room for its manifest. JSON allows the trailing spaces.
PENDING = json.dumps({"manifest": KIND, "version": VERSION, "pending": True}).encode() + b"\n"


def failure_record(reason: str) -> bytes:
    """What stands in for the manifest when the hashing failed: why, for --verify to say."""
    return json.dumps({"manifest": KIND, "version": VERSION, "failed": reason}).encode() + b"\n"


def manifest_bound(dump_size_bound: int) -> int:
    """The most bytes the manifest of a dump of at most ``dump_size_bound`` bytes can take."""
    chunks = -(-dump_size_bound // CHUNK_SIZE) + 1
    largest = Manifest(dump_size_bound, False, ("0" * 64,) * chunks)
    return max(len(largest.to_json()), len(PENDING))


class Hasher(Protocol):
    """What HashingFile asks of a fastcopy.FileHasher, the compiled one's or the twin's."""

    def take(self, offset: int, data: memoryview) -> None: ...
    def failed(self, offset: int, end: int) -> None: ...
    def result(self) -> tuple[int, list[bytes | None]]: ...


# FileHasher(chunk_size, block_size, head_bytes, hold_bytes, piece_bytes, unsure_bytes, ahead_bytes)
MakeHasher = Callable[[int, int, int, int, int, int, int], Hasher]


class HashingFile:
    """A TargetFile that hashes what is written through it (fastcopy.FileHasher, beside the
    dump); ``manifest()`` says what the file holds. Writes that fail are not taken for content.
    A writer must not change a buffer after write_at returns (the Sink contract; the kdump and
    ELF writers hand over a new buffer each time: tests/test_integrity.py checks both)."""

    def __init__(self, file: TargetFile, chunk_size: int = CHUNK_SIZE, block_size: int = BLOCK_SIZE,
                 head_bytes: int = HEAD_BYTES, hold_bytes: int = HOLD_BYTES,
                 hasher: MakeHasher | None = None) -> None:
        """``hasher``: fastcopy.FileHasher unless given (benchmarks.hashing_beside races the
        twin's against it)."""
        self.file = file
        self.chunk_size, self.block_size = chunk_size, block_size
        make_hasher = hasher or FileHasher
        self._hasher = make_hasher(chunk_size, block_size, head_bytes, hold_bytes, PIECE_BYTES, UNSURE_BYTES,
                                   HASH_AHEAD)
        self._error: Exception | None = None
        self._outcome: tuple[int, list[bytes | None]] | None = None

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        # Handed over before it is made: the hashing then goes on while this thread waits for
        # the target. A write that fails is taken back.
        self._hand(self._hasher.take, offset, view)
        try:
            self.file.write_at(offset, data)
        except OSError:
            self._hand(self._hasher.failed, offset, offset + len(view))
            raise

    def reserve(self, offset: int, length: int) -> None:
        """Space reserved reads as zeros: it changes no byte the manifest covers (--verify
        takes zeros past the end for it)."""
        self.file.reserve(offset, length)

    def sync(self) -> None:
        try:
            self.file.sync()
        except OSError:
            self._hand(self._hasher.failed, -1, -1)
            raise

    def close(self) -> None:
        """Close the file; the writes handed over are hashed (manifest() still works)."""
        try:
            self.file.close()
        finally:
            self._finish()

    def manifest(self, complete: bool) -> Manifest:
        """What the file holds now; call after the last write. CollectorError if the hashing
        failed (the dump does not: it is only not checkable)."""
        self._finish()
        if self._outcome is None:
            error = self._error
            raise CollectorError(f"hashing the dump failed ({type(error).__name__}: {error})")
        size, chunks = self._outcome
        return Manifest(size, complete, tuple(None if chunk is None else chunk.hex() for chunk in chunks),
                        self.chunk_size, self.block_size)

    def _hand(self, action: Callable[[int, Any], None], offset: int, data: Any) -> None:
        if self._error is None:
            try:
                action(offset, data)
            except Exception as e:  # raised by manifest(); the dump goes on
                self._error = e

    def _finish(self) -> None:
        if self._outcome is None and self._error is None:
            try:
                self._outcome = self._hasher.result()
            except Exception as e:
                self._error = e


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
        self.recorded = False  # the file holds the manifest, or why there is none: it goes with the dump
        if not target.streams_only:  # a stream cannot be written twice: its manifest comes at the end
            self._try("reserving space for", self._reserve, dump_size_bound)

    def _reserve(self, dump_size_bound: int) -> None:
        self.file = self.target.create(self.path)
        self.file.write_at(0, PENDING.ljust(manifest_bound(dump_size_bound), b" "))

    def write(self, hashed: HashingFile, complete: bool, dump_error: str | None = None) -> None:
        """Write, sync and close the manifest of the dump written through ``hashed`` (under
        the dump's incomplete name). If the hashing failed, the file says why
        instead. After the dump itself failed on the target (``dump_error``), a manifest that
        cannot be written either is not one more warning: the dump's INCOMPLETE line names the
        cause."""
        self._try("writing", self._write, hashed, complete, quiet=dump_error is not None)

    def _write(self, hashed: HashingFile, complete: bool) -> None:
        failure = None
        try:
            content = hashed.manifest(complete).to_json()
        except CollectorError as e:
            content, failure = failure_record(str(e)), e
        file, self.file = self.file or self.target.create(self.path), None
        try:
            file.write_at(0, content)  # over the placeholder, which is longer: trailing spaces
            file.sync()
        finally:
            file.close()
        self.recorded = True
        if failure is not None:
            raise failure

    def commit(self, final_dump_path: str) -> None:
        """Rename the manifest with the dump, if it was written (else the placeholder stays
        under the incomplete name: the save stopped before it)."""
        if self.recorded:
            self._try("renaming", self.target.commit, self.path, manifest_path(final_dump_path))

    def close(self) -> None:
        if self.file is not None:
            self._try("closing", self.file.close)
            self.file = None

    def _try(self, doing: str, action: Callable[..., None], *args: Any, quiet: bool = False) -> None:
        try:
            action(*args)
        except (OSError, CollectorError) as e:
            reason = str(e) if isinstance(e, CollectorError) else e.strerror or str(e) or type(e).__name__
            if not quiet:
                self.warn(f"warning: {doing} the manifest {self.path}: {reason}; the dump cannot be checked "
                          "with --verify")


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
            if _hash_range(f, start, end, manifest.block_size) != expected:
                raise _Damaged(f"{dump} is DAMAGED: bytes {start}-{end - 1} (chunk {index} of "
                               f"{len(manifest.chunks)}) differ from what was written")
            checked += end - start
        _check_tail(f, dump, manifest, length)
    return checked


def _hash_range(f: Any, start: int, end: int, block_size: int) -> str:
    """The chunk digest (chunk_digest) of the file's bytes [start, end)."""
    step = block_size * max(1, READ_BYTES // block_size)
    digests = []
    for offset in range(start, end, step):
        want = min(step, end - offset)
        data = memoryview(os.pread(f.fileno(), want, offset).ljust(want, b"\0"))  # past the end: a hole
        digests += [hashlib.sha256(data[at:at + block_size]).digest() for at in range(0, want, block_size)]
    return chunk_digest(digests)


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
