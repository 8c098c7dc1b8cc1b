"""The integrity manifest: what a dump held when it left the collector, for checking it where it
lands (``vmcore-save --verify``).

The save job wraps the target's file in a HashingFile (formats and targets know nothing of it).
The manifest (``<dump>.manifest.json`` beside the dump, renamed with it) holds a digest of each
CHUNK_SIZE chunk of the final file, a root hash over them, the file's size and whether the dump
is complete. A chunk's digest is the SHA-256 of the SHA-256 digests of its BLOCK_SIZE blocks in
order. A check then names the first damaged chunk, not only "the file differs".

Writers write at any offsets, and rewrite their header at the end. The dump's own thread only
hands each write's buffer (a view, not a copy) to a hashing thread, in batches; everything else
happens there (issue 14: the hash must not slow a one-thread dump). A block is hashed once every
byte of it is written (hashlib releases the GIL); until then only the bytes written are kept,
as sparse extents, so memory is the sequential streams' current blocks plus what was written
out of order (the descriptors of the pages the value order sends first), never the dump; past
HOLD_BYTES of those, the chunk holding most of them is given up (not checked) rather than
memory grown. The file's first block (the headers written again at the end) and blocks with
holes (zeros in the file) are hashed when the manifest is made, so the dump's end waits for
about one block's hashing whatever the dump's size (with whole 4 MiB chunks it was the first
chunk and the last one, some 6 ms). A chunk whose content is not known is recorded as null and
not checked: a write there failed, or came after a block of it was hashed.

So a writer must not change a buffer after write_at returns (the Sink contract; the kdump and
ELF writers hand over a new buffer each time: tests/test_integrity.py checks both); resizing
one would raise BufferError. A block left open with a small part (up to COPY_BYTES, less than
half) of a write keeps a copy of it, not a hold on the whole buffer, as such a block may stay
open until the dump ends (the one where the descriptors end and the page data begins). Larger
parts stay views, not copied: they are the tails of the page data's 1 MiB writes, whose block
the next write completes, and copying them (fresh memory: page faults) while holding the GIL
made the dump's thread wait.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import queue
import threading
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import CollectorError
from .targets import Target, TargetFile

CHUNK_SIZE = 4 << 20
# Each block is one hashlib call, which gives up the GIL and takes it back: 64 KiB blocks, 16
# times as many, made the dump's own thread wait for it measurably (issue 14).
BLOCK_SIZE = 1 << 20
MANIFEST_SUFFIX = ".manifest.json"
KIND, VERSION, HASH = "vmcore-collector manifest", 2, "sha256 of sha256 blocks"
# Bytes handed to the hashing thread and not yet taken in: the dump waits beyond that.
HASH_AHEAD = 8 << 20
# Writes are handed over in batches of this many bytes or writes (each batch wakes the thread).
BATCH_BYTES, BATCH_WRITES = 1 << 20, 64
# The blocks within this many bytes of the file's start are hashed when the manifest is made:
# the kdump writer rewrites its header (at 0) and sub-header (one page on, up to 64 KiB pages).
HEAD_BYTES = 128 << 10
# Bytes kept for blocks not yet wholly written (with a piece's own cost, PIECE_BYTES): past
# this, the chunk that holds most of them is given up (a capture kernel may have 128 MiB).
HOLD_BYTES = 32 << 20
PIECE_BYTES = 200
COPY_BYTES = 64 << 10  # (module docstring)
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


def _digest_parts(parts: list[Buffer]) -> bytes:
    """The SHA-256 of the parts one after the other, without joining them."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.digest()


@functools.cache
def _zeros_digest(length: int) -> bytes:
    return hashlib.sha256(bytes(length)).digest()


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


class _Extents:
    """The bytes written so far into one block: sorted, non-overlapping (start, data) pieces,
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

    @property
    def held(self) -> int:
        """What keeping these pieces costs, about."""
        return self.covered + PIECE_BYTES * len(self.pieces)

    def parts(self, length: int) -> list[Buffer]:
        """The block's first ``length`` bytes in order, zeros where nothing was written."""
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


class _Hashes:
    """What the hashing thread knows of the file: the blocks hashed, the blocks still open, the
    chunks done and those whose content is not known. Only that thread touches it, until the
    manifest is made."""

    def __init__(self, chunk_size: int, block_size: int, head_bytes: int, hold_bytes: int) -> None:
        self.chunk_size, self.block_size = chunk_size, block_size
        self.blocks_per_chunk = chunk_size // block_size
        self.head_blocks = -(-head_bytes // block_size)
        self.hold_bytes = hold_bytes
        self.size = 0          # end of the furthest write that succeeded
        self.size_before = 0   # what it was before the last write taken (which may fail)
        self.unsure_end = 0    # end of the furthest write that failed
        self.open: dict[int, _Extents] = {}                  # block -> what is written of it
        self.held: dict[int, int] = {}                       # chunk -> what its open blocks hold
        self.holding = 0                                     # all of those
        self.digests: dict[int, list[bytes | None]] = {}     # chunk -> its blocks' digests so far
        self.done: dict[int, str] = {}                       # chunk -> its digest
        self.unknown: set[int] = set()
        # Chunks written within the last UNSURE_BYTES written, oldest first: chunk -> bytes
        # written (the clock) when it was last written to.
        self.recent: OrderedDict[int, int] = OrderedDict()
        self.clock = 0

    def take(self, offset: int, view: memoryview) -> None:
        end = offset + len(view)
        self.size_before, self.size = self.size, max(self.size, end)
        self.clock += len(view)
        cs, bs = self.chunk_size, self.block_size
        for chunk in range(offset // cs, -(-end // cs)):
            self.recent[chunk] = self.clock
            self.recent.move_to_end(chunk)
        while next(iter(self.recent.values())) < self.clock - UNSURE_BYTES:
            self.recent.popitem(last=False)
        bpc = self.blocks_per_chunk
        for chunk in range(offset // cs, -(-end // cs)):
            if chunk in self.unknown:
                continue
            first, last = max(offset // bs, chunk * bpc), min(-(-end // bs), (chunk + 1) * bpc)
            digests = self._digests(chunk)
            if chunk in self.done or digests[first - chunk * bpc:last - chunk * bpc].count(None) != last - first:
                self._give_up({chunk})  # rewritten after it was hashed: its content is not known
                continue
            # The blocks this write covers whole are hashed from it at once (what was written
            # of them before is replaced), the others (edges, the head) kept as extents.
            whole_first, whole_last = max(-(-offset // bs), self.head_blocks, first), min(end // bs, last)
            if whole_first < whole_last:
                if self.held.get(chunk):
                    for block in range(whole_first, whole_last):
                        if (extents := self.open.pop(block, None)) is not None:
                            self._hold(chunk, -extents.held)
                digests[whole_first - chunk * bpc:whole_last - chunk * bpc] = [
                    hashlib.sha256(view[at - offset:at - offset + bs]).digest()
                    for at in range(whole_first * bs, whole_last * bs, bs)]
            for block in (*range(first, min(whole_first, last)), *range(max(whole_last, whole_first, first), last)):
                start = block * bs
                lo, hi = max(offset, start), min(end, start + bs)
                piece = view[lo - offset:hi - offset]
                extents = self.open.get(block)
                if extents is None:
                    extents = self.open[block] = _Extents()
                held = extents.held
                extents.put(lo - start, piece)
                if extents.covered == bs and block >= self.head_blocks:
                    del self.open[block]
                    self._hold(chunk, -held)
                    digests[block - chunk * bpc] = _digest_parts(extents.pieces)
                    continue
                if len(piece) <= COPY_BYTES and 2 * len(piece) < len(view):  # (module docstring)
                    extents.put(lo - start, bytes(piece))
                self._hold(chunk, extents.held - held)
            if None not in digests:
                self.done[chunk] = chunk_digest([digest for digest in digests if digest is not None])
                del self.digests[chunk]
        if self.holding > self.hold_bytes:
            self._give_up({max(self.held, key=self.held.__getitem__)})

    def failed(self, offset: int, end: int) -> None:
        """What a failed write or sync (offset -1: at the end of what was written) makes
        unknown: its own bytes and those of the writes just before it. A failed write that
        was not empty is the one taken last: it did not make the file that long."""
        if offset < 0:
            offset = end = self.size
        elif end > offset:
            self.size = self.size_before
        self.unsure_end = max(self.unsure_end, end)
        cs = self.chunk_size
        self._give_up({*self.recent, *range(offset // cs, max(offset // cs + 1, -(-end // cs)))})

    def _hold(self, chunk: int, change: int) -> None:
        self.held[chunk] = self.held.get(chunk, 0) + change
        self.holding += change

    def _digests(self, chunk: int) -> list[bytes | None]:
        digests = self.digests.get(chunk)
        if digests is None:
            digests = self.digests[chunk] = [None] * self.blocks_per_chunk
        return digests

    def _give_up(self, chunks: set[int]) -> None:
        self.unknown |= chunks
        for chunk in chunks:
            self.done.pop(chunk, None)
            self.digests.pop(chunk, None)
            held = self.held.pop(chunk, None)
            if held is not None:
                self.holding -= held
                first = chunk * self.blocks_per_chunk
                for block in range(first, first + self.blocks_per_chunk):
                    self.open.pop(block, None)

    def manifest(self, complete: bool) -> Manifest:
        cs, bs = self.chunk_size, self.block_size
        chunks: list[str | None] = []
        for chunk in range(-(-max(self.size, self.unsure_end) // cs)):
            start = chunk * cs
            if chunk in self.unknown or start >= self.size:
                chunks.append(None)
            elif chunk in self.done:
                chunks.append(self.done[chunk])
            else:
                length = min(cs, self.size - start)
                digests = self.digests.get(chunk, [None] * self.blocks_per_chunk)
                chunks.append(chunk_digest([
                    digest if (digest := digests[index]) is not None
                    else self._open_block_digest(chunk * self.blocks_per_chunk + index, min(bs, length - index * bs))
                    for index in range(-(-length // bs))]))
        return Manifest(self.size, complete, tuple(chunks), cs, bs)

    def _open_block_digest(self, block: int, length: int) -> bytes:
        """The digest of a block not hashed yet: its first ``length`` bytes, zeros where
        nothing was written."""
        extents = self.open.get(block)
        return _zeros_digest(length) if extents is None else _digest_parts(extents.parts(length))


class HashingFile:
    """A TargetFile that hashes what is written through it (module docstring); ``manifest()``
    says what the file holds. Writes that fail are not taken for content."""

    def __init__(self, file: TargetFile, chunk_size: int = CHUNK_SIZE, block_size: int = BLOCK_SIZE,
                 head_bytes: int = HEAD_BYTES, hold_bytes: int = HOLD_BYTES) -> None:
        self.file = file
        self._hashes = _Hashes(chunk_size, block_size, head_bytes, hold_bytes)
        # Writes go to the hashing thread in batches (each wakes it): (offset, end, view) each,
        # view None for a write that failed; None: no more writes.
        self._batch: list[tuple[int, int, memoryview | None]] = []
        self._batch_bytes = 0
        self._batches: queue.SimpleQueue[list[tuple[int, int, memoryview | None]] | None] = queue.SimpleQueue()
        self._sent = 0    # bytes handed to the hashing thread
        self._taken = 0   # of those, bytes it has taken in
        self._room = threading.Condition()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="hash", daemon=True)
        self._thread.start()

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        if view:  # (an empty write changes nothing, not even the file's size)
            # Handed over before it is made: the hashing thread then takes its batch in while
            # this one waits for the target without the GIL, rather than wakes to contend for
            # it (issue 14: 0.5-0.7% of a -d 31 dump's time). A write that fails is taken back.
            self._batch.append((offset, offset + len(view), view))
            self._batch_bytes += len(view)
            if self._batch_bytes >= BATCH_BYTES or len(self._batch) >= BATCH_WRITES:
                self._hand_over()
        try:
            self.file.write_at(offset, data)
        except OSError:
            self._batch.append((offset, offset + len(view), None))
            self._hand_over()
            raise

    def reserve(self, offset: int, length: int) -> None:
        """Space reserved reads as zeros: it changes no byte the manifest covers (--verify
        takes zeros past the end for it)."""
        self.file.reserve(offset, length)

    def sync(self) -> None:
        try:
            self.file.sync()
        except OSError:
            self._batch.append((-1, -1, None))
            raise
        finally:
            self._hand_over()

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
        if self._error is not None:
            raise CollectorError(f"hashing the dump failed ({type(self._error).__name__}: {self._error})")
        return self._hashes.manifest(complete)

    def _hand_over(self) -> None:
        if not self._batch:
            return
        self._batches.put(self._batch)
        self._sent += self._batch_bytes
        self._batch, self._batch_bytes = [], 0
        if self._sent - self._taken > HASH_AHEAD:
            with self._room:
                while self._sent - self._taken > HASH_AHEAD:
                    self._room.wait()

    def _finish(self) -> None:
        if self._thread.is_alive():
            self._hand_over()
            self._batches.put(None)
            self._thread.join()

    def _run(self) -> None:
        while (batch := self._batches.get()) is not None:
            taken = 0
            for offset, end, view in batch:
                try:
                    if self._error is None:
                        self._hashes.take(offset, view) if view is not None else self._hashes.failed(offset, end)
                except BaseException as e:  # raised by manifest(); the dump goes on
                    self._error = e
                taken += 0 if view is None else len(view)
            with self._room:
                self._taken += taken
                self._room.notify()


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
