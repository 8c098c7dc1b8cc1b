"""Synthetic kernel logs, written the way the kernel writes them, for collector.dmesg tests.

PrintkRing models the Linux 5.10+ lockless ringbuffer writer (kernel/printk/printk_ringbuffer.c:
desc_reserve, data_alloc, data_push_tail) with the x86_64 layout Debian 6.1 exports in VMCOREINFO;
StructuredLogBuf models log_store() of Linux 3.11-5.9. Both place their memory in one image at
a direct-map address, so a synthetic ELF vmcore can hold it (KernelMemory then translates through
the PT_LOAD's p_vaddr).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from collector.kernel.memory import TranslationError

DIRECT_MAP = 0xFFFF888000000000
IMAGE_PADDR = 0x1000000
IMAGE_VADDR = DIRECT_MAP + IMAGE_PADDR
PAGE = 4096
U64 = (1 << 64) - 1
ID_MASK = (1 << 62) - 1
RESERVED, COMMITTED, FINALIZED, REUSABLE = 0, 1, 2, 3
FAILED_LPOS, EMPTY_LINE_LPOS = 0x1, 0x3

# Debian 6.1's VMCOREINFO for the ringbuffer (SYMBOL(prb) added per image).
RING_VMCOREINFO = """SIZE(printk_ringbuffer)=88
OFFSET(printk_ringbuffer.desc_ring)=0
OFFSET(printk_ringbuffer.text_data_ring)=48
OFFSET(printk_ringbuffer.fail)=80
SIZE(prb_desc_ring)=48
OFFSET(prb_desc_ring.count_bits)=0
OFFSET(prb_desc_ring.descs)=8
OFFSET(prb_desc_ring.infos)=16
OFFSET(prb_desc_ring.head_id)=24
OFFSET(prb_desc_ring.tail_id)=32
SIZE(prb_desc)=24
OFFSET(prb_desc.state_var)=0
OFFSET(prb_desc.text_blk_lpos)=8
SIZE(prb_data_blk_lpos)=16
OFFSET(prb_data_blk_lpos.begin)=0
OFFSET(prb_data_blk_lpos.next)=8
SIZE(printk_info)=88
OFFSET(printk_info.seq)=0
OFFSET(printk_info.ts_nsec)=8
OFFSET(printk_info.text_len)=16
OFFSET(printk_info.caller_id)=20
OFFSET(printk_info.dev_info)=24
SIZE(prb_data_ring)=32
OFFSET(prb_data_ring.size_bits)=0
OFFSET(prb_data_ring.data)=8
OFFSET(prb_data_ring.head_lpos)=16
OFFSET(prb_data_ring.tail_lpos)=24
SIZE(atomic_long_t)=8
OFFSET(atomic_long_t.counter)=0
"""
DESC_SIZE, INFO_SIZE = 24, 88

# Linux 3.11-5.9 struct printk_log without CONFIG_PRINTK_CALLER, and with it (5.1+: u32 caller_id,
# the struct padded to its u64 alignment).
LOG_HEADER = struct.Struct("<QHHHBB")
LOG_HEADER_CALLER = struct.Struct("<QHHHBBI4x")
LOG_VMCOREINFO = """SIZE(printk_log)=16
OFFSET(printk_log.ts_nsec)=0
OFFSET(printk_log.len)=8
OFFSET(printk_log.text_len)=10
OFFSET(printk_log.dict_len)=12
"""


def _align(n: int, to: int) -> int:
    return -(-n // to) * to


class MemoryImage:
    """Bytes at IMAGE_VADDR; reads outside raise TranslationError like unmapped kernel memory."""

    def __init__(self, size: int) -> None:
        self.data = bytearray(_align(size, PAGE))
        self.reads = 0

    def read(self, vaddr: int, length: int) -> bytes:
        self.reads += 1
        offset = vaddr - IMAGE_VADDR
        if length < 0 or offset < 0 or offset + length > len(self.data):
            raise TranslationError(f"{vaddr:#x} is not mapped")
        return bytes(self.data[offset:offset + length])

    def put(self, offset: int, fmt: str, *values: int) -> None:
        struct.pack_into(fmt, self.data, offset, *values)


@dataclass
class RingRecord:
    desc_id: int
    ts_nsec: int
    text: bytes
    state: int
    caller_id: int = 0


class PrintkRing:
    """A lockless printk ringbuffer filled by the kernel's writer algorithm."""

    # Image layout (offsets from IMAGE_VADDR).
    PRB_POINTER, RING_STRUCT, DESCS = 0x0, 0x100, PAGE

    def __init__(self, count_bits: int, size_bits: int) -> None:
        self.count, self.size = 1 << count_bits, 1 << size_bits
        self.count_bits, self.size_bits = count_bits, size_bits
        self.infos = _align(self.DESCS + self.count * DESC_SIZE, PAGE)
        self.text = _align(self.infos + self.count * INFO_SIZE, PAGE)
        self.image = MemoryImage(self.text + self.size)
        # Initial values as _DEFINE_PRINTKRB sets them: they overflow on the first wraps.
        self.head_id = self.tail_id = (-(self.count + 1)) & ID_MASK
        self._set_desc(self.head_id, REUSABLE, FAILED_LPOS, FAILED_LPOS)
        self.data_head = self.data_tail = (-self.size) & U64
        self.live: list[int] = []          # ids whose data block is valid, oldest first
        self.blocks: dict[int, tuple[int, int]] = {}
        self.records: dict[int, RingRecord] = {}
        self.seq = 0

    @property
    def vmcoreinfo(self) -> str:
        return RING_VMCOREINFO + f"SYMBOL(prb)={IMAGE_VADDR + self.PRB_POINTER:x}\n"

    def _desc_offset(self, desc_id: int) -> int:
        return self.DESCS + (desc_id % self.count) * DESC_SIZE

    def _set_desc(self, desc_id: int, state: int, begin: int, next_lpos: int) -> None:
        self.image.put(self._desc_offset(desc_id), "<QQQ", (state << 62) | desc_id, begin, next_lpos)

    def set_state(self, desc_id: int, state: int) -> None:
        offset = self._desc_offset(desc_id)
        self.image.put(offset, "<Q", (state << 62) | desc_id)
        if desc_id in self.records:
            self.records[desc_id].state = state

    def _expire_through(self, desc_id: int) -> None:
        """data_push_tail: invalidate the oldest data blocks up to and including desc_id's."""
        while desc_id in self.live:
            oldest = self.live.pop(0)
            self.set_state(oldest, REUSABLE)
            self.data_tail = self.blocks[oldest][1]

    def append(self, ts_nsec: int, text: bytes, state: int = FINALIZED, caller_id: int = 0) -> int:
        """``caller_id``: the task id, or CPU number | 0x80000000 (the kernel's printk_caller_id)."""
        assert 8 + len(text) <= self.size // 2, "the kernel refuses blocks larger than half the ring"
        new_id = (self.head_id + 1) & ID_MASK
        # desc_reserve: the slot's previous occupant must be the tail; push the tail past it.
        if (new_id - self.count) & ID_MASK == self.tail_id:
            self._expire_through(self.tail_id)
            self.set_state(self.tail_id, REUSABLE)
            self.tail_id = (self.tail_id + 1) & ID_MASK
        self.head_id = new_id
        if not text:
            begin = next_lpos = EMPTY_LINE_LPOS
        else:
            block = _align(8 + len(text), 8)
            begin = self.data_head
            next_lpos = (begin + block) & U64
            wraps = begin >> self.size_bits != next_lpos >> self.size_bits
            if wraps:  # get_next_lpos: a wrapping block is stored from the start of the ring
                next_lpos = ((next_lpos & ~(self.size - 1)) + block) & U64
            limit = (next_lpos - self.size) & U64
            while 0 < (limit - self.data_tail) & U64 <= self.size:
                if not self.live:
                    self.data_tail = limit
                    break
                self._expire_through(self.live[0])
            self.image.put(self.text + (begin & (self.size - 1)), "<Q", new_id)
            start = 0 if wraps else begin & (self.size - 1)
            self.image.put(self.text + start, "<Q", new_id)
            self.image.data[self.text + start + 8:self.text + start + 8 + len(text)] = text
            self.data_head = next_lpos
            self.live.append(new_id)
            self.blocks[new_id] = (begin, next_lpos)
        self._set_desc(new_id, state, begin, next_lpos)
        info = self.infos + (new_id % self.count) * INFO_SIZE
        self.image.data[info:info + INFO_SIZE] = bytes(INFO_SIZE)
        self.image.put(info, "<QQHxxI", self.seq, ts_nsec, len(text), caller_id)
        self.seq += 1
        self.records[new_id] = RingRecord(new_id, ts_nsec, text, state, caller_id)
        return new_id

    def finish(self) -> None:
        """Write the printk_ringbuffer struct and the prb pointer into the image."""
        ring = self.RING_STRUCT
        self.image.put(self.PRB_POINTER, "<Q", IMAGE_VADDR + ring)
        self.image.put(ring, "<IxxxxQQQQ", self.count_bits, IMAGE_VADDR + self.DESCS,
                       IMAGE_VADDR + self.infos, self.head_id, self.tail_id)
        self.image.put(ring + 48, "<IxxxxQQQ", self.size_bits, IMAGE_VADDR + self.text,
                       self.data_head, self.data_tail)

    def ids(self) -> list[int]:
        """Ids from tail to head, as the reader walks them."""
        span = ((self.head_id - self.tail_id) & ID_MASK) + 1
        return [(self.tail_id + i) & ID_MASK for i in range(span)]

    def text_offset(self, desc_id: int) -> int:
        """Image offset of the record's data block (its id; the text follows)."""
        begin, next_lpos = self.blocks[desc_id]
        wraps = begin >> self.size_bits != next_lpos >> self.size_bits
        return self.text + (0 if wraps else begin & (self.size - 1))


class StructuredLogBuf:
    """log_buf of Linux 3.11-5.9 filled by the kernel's log_store() algorithm."""

    SYMBOLS, BUF = 0x0, PAGE

    def __init__(self, buf_len: int, caller_id: bool = False) -> None:
        self.buf_len = buf_len
        self.header = LOG_HEADER_CALLER if caller_id else LOG_HEADER
        self.image = MemoryImage(self.BUF + buf_len)
        self.first_idx = self.next_idx = 0
        self.first_seq = self.next_seq = 0
        self.records: list[tuple[int, int, bytes]] = []  # (seq, ts, text) still in the buffer
        self.starts: dict[int, int] = {}                  # seq -> idx

    @property
    def vmcoreinfo(self) -> str:
        base = IMAGE_VADDR + self.SYMBOLS
        layout = LOG_VMCOREINFO
        if self.header is LOG_HEADER_CALLER:
            layout = layout.replace("SIZE(printk_log)=16", "SIZE(printk_log)=24") + "OFFSET(printk_log.caller_id)=16\n"
        return layout + (f"SYMBOL(log_buf)={base:x}\nSYMBOL(log_buf_len)={base + 8:x}\n"
                                 f"SYMBOL(log_first_idx)={base + 16:x}\nSYMBOL(log_next_idx)={base + 24:x}\n")

    def _len_at(self, idx: int) -> int:
        return struct.unpack_from("<H", self.image.data, self.BUF + idx + 8)[0]

    def _next(self, idx: int) -> int:
        length = self._len_at(idx)
        return self._len_at(0) if length == 0 else idx + length

    def _has_space(self, size: int, empty: bool) -> bool:
        if self.next_idx > self.first_idx or empty:
            free = max(self.buf_len - self.next_idx, self.first_idx)
        else:
            free = self.first_idx - self.next_idx
        return free >= size + self.header.size  # room for a wrap marker too

    def append(self, ts_nsec: int, text: bytes, dictionary: bytes = b"", caller_id: int = 0) -> None:
        header = self.header
        size = _align(header.size + len(text) + len(dictionary), 8)
        while self.first_seq < self.next_seq and not self._has_space(size, False):
            self.first_idx = self._next(self.first_idx)
            self.first_seq += 1
        assert self._has_space(size, self.first_seq == self.next_seq), "message too large for the test buffer"
        if self.next_idx + size + header.size > self.buf_len:
            marker = self.BUF + self.next_idx  # an empty header: the buffer wraps here
            self.image.data[marker:marker + header.size] = bytes(header.size)
            self.next_idx = 0
        at = self.BUF + self.next_idx
        self.image.data[at:at + size] = bytes(size)
        caller = (caller_id,) if header is LOG_HEADER_CALLER else ()
        fields = (ts_nsec, size, len(text), len(dictionary), 0, 6, *caller)
        header.pack_into(self.image.data, at, *fields)
        text_at = at + header.size
        self.image.data[text_at:text_at + len(text)] = text
        self.image.data[text_at + len(text):text_at + len(text) + len(dictionary)] = dictionary
        self.starts[self.next_seq] = self.next_idx
        self.records.append((self.next_seq, ts_nsec, text))
        self.next_idx += size
        self.next_seq += 1

    def finish(self) -> None:
        self.image.put(self.SYMBOLS, "<QIxxxxIxxxxI", IMAGE_VADDR + self.BUF, self.buf_len,
                       self.first_idx, self.next_idx)

    def kept(self) -> list[tuple[int, int, bytes]]:
        return [r for r in self.records if r[0] >= self.first_seq]

