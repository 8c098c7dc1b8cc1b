"""Pure-Python twin of _fastcopy.pyx: the readable reference, used when the compiled module is
missing or VMCORE_COLLECTOR_PURE_PYTHON=1. Same functions, same results (compressed bytes may
differ where python-zstandard bundles another libzstd than the system's; sizes, zero flags and
the pages they decompress to do not)."""

from __future__ import annotations

import hashlib
import queue
import struct
import threading
import zlib
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable, Collection
from functools import cache, partial
from typing import TYPE_CHECKING, Any

from .dump_level import DL_CACHE, DL_CACHE_PRIVATE, DL_FREE, DL_USER
from .kernel.name_hash import NAME_HASH_BITS, name_hash
from .kernel.page_encoding import (
    CLASS_CACHE,
    CLASS_CACHE_PRIVATE,
    CLASS_FREE,
    CLASS_HWPOISON,
    CLASS_OFFLINE,
    CLASS_USER,
    COUNT_BAD_ORDER,
    ORDER_FLAGS_BYTE,
    ORDER_U8,
    PARAM_INDEX,
)
from .pipeline.compression import FLAG_ZLIB, FLAG_ZSTD, LEVEL_RANGES

if TYPE_CHECKING:
    from ._fastcopy import Bytes, Words, WritableBytes  # the buffer types of the contract, _fastcopy.pyi

# page_desc_t as the kdump format declares it (collector/formats/kdump.py PAGE_DESC; the
# compiled module declares the same struct, tests/test_fastcopy.py pins them together).
_PAGE_DESC = struct.Struct("<qIIQ")
PAGE_DESC_SIZE = _PAGE_DESC.size


class PageEncoder:
    """Zero check and compression of pages, one independent frame each (every page
    decompresses on its own to page_size bytes), stored as is when compressing does not make
    it smaller. One encoder per thread: it owns its compression context."""

    def __init__(self, page_flag: int, level: int, page_size: int) -> None:
        if page_flag not in (0, FLAG_ZLIB, FLAG_ZSTD):
            raise ValueError(f"compression flag {page_flag:#x} is not one the encoder writes")
        if page_flag:
            low, high = LEVEL_RANGES["zstd" if page_flag == FLAG_ZSTD else "zlib"]
            if not low <= level <= high:
                raise ValueError(f"compression level {level} is not in {low}..{high}")
        self.page_flag, self.level, self.page_size = page_flag, level, page_size
        self._zero_page = bytes(page_size)
        self._compress: Callable[[Any], bytes] | None = None
        if page_flag == FLAG_ZSTD:
            import zstandard

            self._compress = zstandard.ZstdCompressor(level=level, write_checksum=False,
                                                      write_content_size=True).compress
        elif page_flag == FLAG_ZLIB:
            self._compress = partial(zlib.compress, level=level)

    def encode(self, src: Bytes | None, src_page: int, bitmap: Bytes, first_bit: int, npages: int,
               detect_zero: bool, data: WritableBytes, sizes: Words,
               raw: WritableBytes) -> tuple[int, int, int, int]:
        """Encode the pages whose bit is set among ``npages`` pages: page i is page
        ``src_page + i`` of ``src`` (None: pages that read as zeros) and bit ``first_bit + i``
        of ``bitmap``. For the n-th selected page, sizes[n] is its stored size (0: all zeros,
        stored nowhere; only with detect_zero) and raw[n] 1 if it is stored as is; the stored
        pages follow each other in ``data``. Stops early when sizes or data are full.

        Returns (pages consumed, pages selected, bytes of data, zero pages).
        """
        ps = self.page_size
        if len(raw) < len(sizes):
            raise ValueError("raw is shorter than sizes")
        if src is not None and (src_page < 0 or (src_page + npages) * ps > len(src)):
            raise ValueError("pages run past the end of the source")
        if first_bit < 0 or first_bit + npages > len(bitmap) * 8:
            raise ValueError("pages run past the end of the bitmap")
        view = None if src is None else memoryview(src)
        i = n = pos = nzero = 0
        while i < npages:
            bit = first_bit + i
            if not bitmap[bit >> 3] >> (bit & 7) & 1:
                i += 1
                continue
            if n == len(sizes) or pos + ps > len(data):
                break
            page = self._zero_page if view is None else view[(src_page + i) * ps:(src_page + i + 1) * ps]
            raw[n] = 0
            if detect_zero and page == self._zero_page:
                sizes[n] = 0
                nzero += 1
            else:
                frame: bytes | memoryview = self._compress(page) if self._compress else b""
                if not 0 < len(frame) < ps:  # not smaller: stored as is, as makedumpfile does
                    frame, raw[n] = page, 1
                data[pos:pos + len(frame)] = frame
                sizes[n] = len(frame)
                pos += len(frame)
            n += 1
            i += 1
        return i, n, pos, nzero


def clear_zero_pages(src: Bytes | None, src_page: int, bitmap: WritableBytes, first_bit: int, npages: int,
                     page_size: int) -> int:
    """Clear the bit of each selected page that is all zeros (page i is page src_page + i of
    src, None: all zeros, and bit first_bit + i); return how many were cleared."""
    if src is not None and (src_page < 0 or (src_page + npages) * page_size > len(src)):
        raise ValueError("pages run past the end of the source")
    if first_bit < 0 or first_bit + npages > len(bitmap) * 8:
        raise ValueError("pages run past the end of the bitmap")
    view = None if src is None else memoryview(src)
    zero_page = bytes(page_size)
    cleared = 0
    for i in range(npages):
        bit = first_bit + i
        if not bitmap[bit >> 3] >> (bit & 7) & 1:
            continue
        if view is None or view[(src_page + i) * page_size:(src_page + i + 1) * page_size] == zero_page:
            bitmap[bit >> 3] &= ~(1 << (bit & 7)) & 0xFF
            cleared += 1
    return cleared


def kdump_descs(sizes: Words, raw: Bytes, count: int, data_offset: int, zero_offset: int, page_size: int,
                page_flag: int, out: WritableBytes) -> None:
    """Pack the page_desc of ``count`` encoded pages (PageEncoder.encode's sizes and raw) into
    out: stored pages at data_offset onwards, back to back; zero pages point at zero_offset."""
    if len(out) < count * PAGE_DESC_SIZE or len(sizes) < count or len(raw) < count:
        raise ValueError("buffers too short for the descriptors")
    for i in range(count):
        if sizes[i] == 0:
            _PAGE_DESC.pack_into(out, i * PAGE_DESC_SIZE, zero_offset, page_size, 0, 0)
        else:
            _PAGE_DESC.pack_into(out, i * PAGE_DESC_SIZE, data_offset, sizes[i], 0 if raw[i] else page_flag, 0)
            data_offset += sizes[i]


def span_end(bitmap: Bytes, start: int, end: int, max_set: int) -> int:
    """The bit after the ``max_set``-th set bit at or after ``start``, or ``end`` if there are
    fewer: [start, span_end) holds at most max_set selected pages."""
    seen = 0
    for bit in range(start, end):
        if bitmap[bit >> 3] >> (bit & 7) & 1:
            seen += 1
            if seen == max_set:
                return bit + 1
    return end


def span_end_within(selected: Bytes, kept: Bytes, start: int, end: int, max_set: int) -> int:
    """Like span_end over ``selected`` (a subset of ``kept``), but the span also ends before a
    kept page that is not selected: from its first selected page on, [start, span_end) holds
    no such page, so its pages' descriptors are neighbours in the dump."""
    bit = start
    while bit < end and not selected[bit >> 3] >> (bit & 7) & 1:
        bit += 1
    seen = 0
    while bit < end:
        if selected[bit >> 3] >> (bit & 7) & 1:
            seen += 1
            if seen == max_set:
                return bit + 1
        elif kept[bit >> 3] >> (bit & 7) & 1:
            return bit
        bit += 1
    return end


def count_bits(bitmap: Bytes, start: int, end: int) -> int:
    """Number of set bits in [start, end) of an LSB-first bitmap."""
    return sum((bitmap[bit >> 3] >> (bit & 7)) & 1 for bit in range(start, end))


def kallsyms_find(names: Bytes, count: int, token_table: Bytes, token_index: Bytes, first_token_ok: Bytes,
                  token_lengths: Bytes, length_ok: Bytes, name_ok: Bytes,
                  wanted: Collection[bytes]) -> list[tuple[int, bytes]]:
    """[(index, name)] of the symbols among the first ``count`` of a kernel's compressed
    kallsyms_names whose name without its type letter is in ``wanted``; a name is expanded only
    if ``first_token_ok`` allows its first token and ``length_ok`` its expanded length (at most
    255; token_lengths: each token's), and looked up only if its bit in ``name_ok`` is set
    (kernel/name_hash.py) (kernel/kallsyms.py says why this is enough)."""
    if len(name_ok) != (1 << NAME_HASH_BITS) >> 3:
        raise ValueError("name_ok is not a name_hash bitmap")
    tokens = []
    for byte in range(256):
        start = token_index[2 * byte] | token_index[2 * byte + 1] << 8
        end = bytes(token_table).find(b"\0", start)
        tokens.append(bytes(token_table[start:end if end >= 0 else len(token_table)]))
    found, off, size = [], 0, len(names)
    for index in range(count):
        if off >= size:
            break
        length = names[off]
        off += 1
        if length & 0x80:  # a "big" symbol: the length takes two bytes (Linux 6.1+)
            if off >= size:
                break
            length = (length & 0x7F) | names[off] << 7
            off += 1
        if off + length > size:
            break
        expanded = sum(token_lengths[byte] for byte in names[off:off + length])
        if length and first_token_ok[names[off]] and expanded <= 255 and length_ok[expanded]:
            name = b"".join(tokens[byte] for byte in names[off:off + length])[:1024]
            # (the bit checked only for a wanted name: the same result, the twin's own speed)
            if name[1:] in wanted and (name_ok[(bit := name_hash(name[1:])) >> 3] >> (bit & 7)) & 1:
                found.append((index, name))
        off += length
    return found


def bit_runs(bitmap: Bytes, start: int, end: int) -> list[tuple[int, int]]:
    """Runs of set bits in [start, end) as a list of (first, last + 1) bit numbers."""
    runs: list[tuple[int, int]] = []
    run_start = None
    for bit in range(start, end):
        if (bitmap[bit >> 3] >> (bit & 7)) & 1:
            if run_start is None:
                run_start = bit
        elif run_start is not None:
            runs.append((run_start, bit))
            run_start = None
    if run_start is not None:
        runs.append((run_start, end))
    return runs


def classify_pages(pages: Bytes, npages: int, p: Words, bitmap: WritableBytes, first_bit: int, first_pfn: int,
                   counts: Words, slab_bits: WritableBytes, first_slab_bits: WritableBytes,
                   first_caches: Words, slab_cache_offset: int) -> None:
    """Clear the bits of excluded pages among ``npages`` struct pages (pfn first_pfn + i is
    bit first_bit + i of bitmap) and add the cleared pages to counts[class].

    The order of the tests is makedumpfile's: compound tails go with their head; free buddy
    blocks and unaccepted memory (free); cache without private; all cache; user data; at every
    level hwpoison pages (reading them can machine-check) and logically offline pages.
    counts[COUNT_BAD_ORDER] counts buddy blocks whose order is implausible (kept).
    Kept slab pages (a slab's head and its tails) get their bit set in ``slab_bits`` (laid out
    as ``bitmap``) unless it is empty: the dump writes them early (scan/value.py); those of a
    slab whose struct slab's slab_cache (at ``slab_cache_offset``) is one of ``first_caches``
    get it in ``first_slab_bits`` instead: they are written earlier still.
    """
    q = {name: p[index] for name, index in PARAM_INDEX.items()}
    size, level = q["struct_size"], q["dump_level"]
    view = memoryview(pages)

    def u64(offset: int) -> int:
        return int.from_bytes(view[offset:offset + 8], "little")

    def flag(flags: int, bit: int) -> bool:
        return bit >= 0 and bool(flags >> bit & 1)

    def type_is(mapcount: int, name: str) -> bool:
        return q[name] >= 0 and mapcount == q[name]

    i = 0
    while i < npages:
        base = i * size
        flags = u64(base + q["off_flags"])
        mapping = u64(base + q["off_mapping"])
        mapcount = int.from_bytes(view[base + q["off_mapcount"]:base + q["off_mapcount"] + 4], "little")
        private = u64(base + q["off_private"]) if q["off_private"] >= 0 else 0
        head = u64(base + q["off_compound_head"])
        order, dtor, hugetlb_flag = 0, -1, False
        if flags & q["head_mask"] and i + 1 < npages:
            tail = base + size
            if q["order_mode"] == ORDER_U8:
                order = view[tail + q["off_order"]]
            elif q["order_mode"] == ORDER_FLAGS_BYTE:
                order = u64(tail + q["off_flags"]) & 0xFF
            if q["off_dtor"] >= 0:
                dtor = view[tail + q["off_dtor"]]
            hugetlb_flag = flag(u64(tail + q["off_flags"]), q["pg_hugetlb"])
            if order >= 64 or (first_pfn + i) & ((1 << order) - 1):
                order = 0  # not a plausible compound page: judge the head alone
        nr = 1 << order
        slab = flag(flags, q["pg_slab"]) or type_is(mapcount, "slab_value")
        cache = flag(flags, q["pg_lru"]) or (flag(flags, q["pg_swapcache"]) and
                                             (q["pg_swapbacked"] < 0 or flag(flags, q["pg_swapbacked"])))
        anon = bool(mapping & 1) and not slab
        hugetlb = hugetlb_flag or type_is(mapcount, "hugetlb_value") or (
            q["hugetlb_dtor"] >= 0 and order > 0 and dtor == q["hugetlb_dtor"])
        buddy = not slab and type_is(mapcount, "buddy_value")
        unaccepted = type_is(mapcount, "unaccepted_value")
        cls = None
        if head & 1:
            pass  # a compound tail: excluded with its head or kept
        elif level & DL_FREE and buddy:
            if private < q["max_order"]:
                nr, cls = 1 << private, CLASS_FREE
            else:
                counts[COUNT_BAD_ORDER] += 1
        elif level & DL_FREE and unaccepted:
            nr, cls = 1 << (q["max_order"] - 1), CLASS_FREE
        elif level & DL_CACHE and cache and not flag(flags, q["pg_private"]) and not anon:
            cls = CLASS_CACHE
        elif level & DL_CACHE_PRIVATE and cache and not anon:
            cls = CLASS_CACHE_PRIVATE if flag(flags, q["pg_private"]) else CLASS_CACHE
        elif level & DL_USER and (anon or hugetlb):
            cls = CLASS_USER
        elif flag(flags, q["pg_hwpoison"]):
            cls = CLASS_HWPOISON
        elif q["offline_value"] >= 0 and not flag(flags, q["pg_slab"]) and mapcount == q["offline_value"]:
            cls = CLASS_OFFLINE
        if cls is None:
            if slab and not head & 1 and len(slab_bits):
                first = 0 <= slab_cache_offset <= size - 8 and u64(base + slab_cache_offset) in first_caches
                target = first_slab_bits if first else slab_bits
                for bit in range(first_bit + i, first_bit + min(i + nr, npages)):
                    target[bit >> 3] |= 1 << (bit & 7)
            i += 1
            continue
        end = min(i + nr, npages)
        for j in range(i, end):
            bit = first_bit + j
            if bitmap[bit >> 3] & (1 << (bit & 7)):
                bitmap[bit >> 3] &= ~(1 << (bit & 7)) & 0xFF
                counts[cls] += 1
        i = end


# The integrity manifest's hashing (collector/integrity.py has the rules; the compiled module
# does the same on a thread of its own that never takes the GIL). Writers write at any offsets
# and rewrite their header at the end. A block is hashed once every byte of it is written; until
# then only the bytes written are kept, as sparse extents, so memory is the sequential streams'
# current blocks plus what was written out of order (the descriptors of the pages the value
# order sends first), never the dump; past hold_bytes of those, the chunk holding most of them is
# given up (not checked) rather than memory grown. The blocks within head_bytes of the start
# (the headers written again at the end) and blocks with holes (zeros in the file) are hashed
# when the result is asked for, so the dump's end waits for about one block's hashing. A chunk
# whose content is not known is None: a write there failed, or came after a block of it was
# hashed. Here the pieces are views of the writers' buffers, not copies, except a small part (up
# to COPY_BYTES, less than half) of a write: its block may stay open until the dump ends (the one
# where the descriptors end and the page data begins), and a view would hold the whole buffer.
# Copying larger parts (the tails of the page data's writes, whose block the next write
# completes) while holding the GIL made the dump's thread wait.
COPY_BYTES = 64 << 10
# Writes go to the hashing thread in batches of this many bytes or writes (each wakes it).
BATCH_BYTES, BATCH_WRITES = 1 << 20, 64


def _digest_parts(parts: list[Bytes]) -> bytes:
    """The SHA-256 of the parts one after the other, without joining them."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.digest()


@cache
def _zeros_digest(length: int) -> bytes:
    return hashlib.sha256(bytes(length)).digest()


class FileHasher:
    """Block and chunk digests of a file written at any offsets (above), on a hashing thread:
    ``take`` hands a write over before it is made (the buffer must not change afterwards),
    ``failed`` says a write (offset -1: a sync) failed, ``result`` waits for the thread and
    gives the file's size and each chunk's SHA-256 of its blocks' SHA-256 digests. An error of
    the hashing is raised by ``result``, never by the dump's own calls."""

    def __init__(self, chunk_size: int, block_size: int, head_bytes: int, hold_bytes: int, piece_bytes: int,
                 unsure_bytes: int, ahead_bytes: int) -> None:
        if block_size <= 0 or chunk_size <= 0 or chunk_size % block_size:
            raise ValueError(f"chunk size {chunk_size} is not a multiple of block size {block_size}")
        self._hashes = _Hashes(chunk_size, block_size, head_bytes, hold_bytes, piece_bytes, unsure_bytes)
        self._ahead_bytes = ahead_bytes
        # (offset, end, view) each, view None for a write that failed; None: no more writes.
        self._batch: list[tuple[int, int, memoryview | None]] = []
        self._batch_bytes = 0
        self._batches: queue.SimpleQueue[list[tuple[int, int, memoryview | None]] | None] = queue.SimpleQueue()
        self._sent = 0    # bytes handed to the hashing thread
        self._taken = 0   # of those, bytes it has taken in
        self._room = threading.Condition()
        self._error: BaseException | None = None
        self._outcome: tuple[int, list[bytes | None]] | None = None
        self._thread = threading.Thread(target=self._run, name="hash", daemon=True)
        self._thread.start()

    def take(self, offset: int, data: Bytes) -> None:
        if self._outcome is not None or not self._thread.is_alive():
            raise ValueError("take after result")
        view = memoryview(data).cast("B")
        if view:
            self._batch.append((offset, offset + len(view), view))
            self._batch_bytes += len(view)
            if self._batch_bytes >= BATCH_BYTES or len(self._batch) >= BATCH_WRITES:
                self._hand_over()

    def failed(self, offset: int, end: int) -> None:
        if self._outcome is not None or not self._thread.is_alive():
            raise ValueError("failed after result")
        self._batch.append((offset, end, None))
        self._hand_over()

    def result(self) -> tuple[int, list[bytes | None]]:
        if self._thread.is_alive():
            self._hand_over()
            self._batches.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error
        if self._outcome is None:
            self._outcome = self._hashes.result()
        return self._outcome

    def _hand_over(self) -> None:
        if not self._batch:
            return
        self._batches.put(self._batch)
        self._sent += self._batch_bytes
        self._batch, self._batch_bytes = [], 0
        if self._sent - self._taken > self._ahead_bytes:
            with self._room:
                while self._sent - self._taken > self._ahead_bytes:
                    self._room.wait()

    def _run(self) -> None:
        while (batch := self._batches.get()) is not None:
            taken = 0
            for offset, end, view in batch:
                try:
                    if self._error is None:
                        self._hashes.take(offset, view) if view is not None else self._hashes.failed(offset, end)
                except BaseException as e:  # raised by result(); the dump goes on
                    self._error = e
                taken += 0 if view is None else len(view)
            with self._room:
                self._taken += taken
                self._room.notify()


class _Extents:
    """The bytes written so far into one block: sorted, non-overlapping (start, data) pieces,
    a later write replacing what it overlaps. Pieces are views (above)."""

    def __init__(self, piece_bytes: int) -> None:
        self.piece_bytes = piece_bytes
        self.starts: list[int] = []
        self.pieces: list[Bytes] = []
        self.covered = 0

    def put(self, start: int, data: Bytes) -> None:
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
        return self.covered + self.piece_bytes * len(self.pieces)

    def parts(self, length: int) -> list[Bytes]:
        """The block's first ``length`` bytes in order, zeros where nothing was written."""
        parts: list[Bytes] = []
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

    def __init__(self, chunk_size: int, block_size: int, head_bytes: int, hold_bytes: int, piece_bytes: int,
                 unsure_bytes: int) -> None:
        self.chunk_size, self.block_size = chunk_size, block_size
        self.piece_bytes, self.unsure_bytes = piece_bytes, unsure_bytes
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
        self.done: dict[int, bytes] = {}                     # chunk -> its digest
        self.unknown: set[int] = set()
        # Chunks written within the last unsure_bytes written, oldest first: chunk -> bytes
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
        while next(iter(self.recent.values())) < self.clock - self.unsure_bytes:
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
                    extents = self.open[block] = _Extents(self.piece_bytes)
                held = extents.held
                extents.put(lo - start, piece)
                if extents.covered == bs and block >= self.head_blocks:
                    del self.open[block]
                    self._hold(chunk, -held)
                    digests[block - chunk * bpc] = _digest_parts(extents.pieces)
                    continue
                if len(piece) <= COPY_BYTES and 2 * len(piece) < len(view):  # (FileHasher)
                    extents.put(lo - start, bytes(piece))
                self._hold(chunk, extents.held - held)
            if None not in digests:
                self.done[chunk] = _digest_parts([digest for digest in digests if digest is not None])
                del self.digests[chunk]
        if self.holding > self.hold_bytes:  # the chunk holding most (the lowest of equals) is given up
            self._give_up({max(self.held, key=lambda chunk: (self.held[chunk], -chunk))})

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

    def result(self) -> tuple[int, list[bytes | None]]:
        """The file's size and each chunk's digest (None: not known)."""
        cs, bs = self.chunk_size, self.block_size
        chunks: list[bytes | None] = []
        for chunk in range(-(-max(self.size, self.unsure_end) // cs)):
            start = chunk * cs
            if chunk in self.unknown or start >= self.size:
                chunks.append(None)
            elif chunk in self.done:
                chunks.append(self.done[chunk])
            else:
                length = min(cs, self.size - start)
                digests = self.digests.get(chunk, [None] * self.blocks_per_chunk)
                chunks.append(_digest_parts([
                    digest if (digest := digests[index]) is not None
                    else self._open_block_digest(chunk * self.blocks_per_chunk + index, min(bs, length - index * bs))
                    for index in range(-(-length // bs))]))
        return self.size, chunks

    def _open_block_digest(self, block: int, length: int) -> bytes:
        """The digest of a block not hashed yet: its first ``length`` bytes, zeros where
        nothing was written."""
        extents = self.open.get(block)
        return _zeros_digest(length) if extents is None else _digest_parts(extents.parts(length))
