"""The crashed kernel's log (what dmesg showed), read from its memory through VMCOREINFO.

Two layouts, chosen in ``read_log``:
- Linux 5.10+: the lockless printk ringbuffer (kernel/printk/printk_ringbuffer.[ch]), SYMBOL(prb).
- Linux 3.5-5.9: structured records in log_buf, SYMBOL(log_buf) with log_first_idx/log_next_idx.
Older kernels (a plain text log_buf) are not supported.

Output follows makedumpfile --dump-dmesg: ``[%5lu.%06lu] text`` per record, and since makedumpfile
1.7.5 (commit 48bb1e0) the printk caller id after the timestamp, ``[    T123] `` for a task or
``[      C1] `` for a CPU, when VMCOREINFO exports OFFSET(printk_info.caller_id) (Linux 5.10+,
every kernel) or OFFSET(printk_log.caller_id) (Linux 5.1-5.9 with CONFIG_PRINTK_CALLER);
DmesgFormat.PLAIN leaves it out, as makedumpfile 1.7.4 and older print. A newline inside a
record continues on a line indented to the text, bytes that are neither printable nor white
space as ``\\xNN``. Records that cannot be read (overwritten, half written, bad lengths) are
replaced by one ``[ gap: N records unreadable ]`` line per run; every loop is bounded by the
size of the buffer it walks, so a damaged log ends the walk instead of looping.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InputError
from ..source.vmcoreinfo import VmcoreInfo
from .arch import kernel_memory
from .memory import MemoryImage, TranslationError
from .page_cache import PageCache

ReadFn = Callable[[int, int], bytes]  # (kernel virtual address, length) -> bytes

# Lockless ringbuffer constants (printk_ringbuffer.h, 64-bit unsigned long).
DESC_STATE_SHIFT = 62                       # the top 2 bits of state_var are the state
DESC_ID_MASK = (1 << DESC_STATE_SHIFT) - 1  # the rest is the descriptor id
DESC_RESERVED, DESC_COMMITTED, DESC_FINALIZED, DESC_REUSABLE = 0, 1, 2, 3
LPOS_DATALESS_BIT = 0x1                     # real lpos values are 8-byte aligned
EMPTY_LINE_LPOS = 0x3                       # data-less record of an empty line (NO_LPOS before 6.7)
BLOCK_ID_SIZE = 8                           # each data block starts with its descriptor id
U64_MASK = (1 << 64) - 1
# The kernel caps log_buf_len at 2 GiB (LOG_BUF_LEN_MAX) and keeps one descriptor per 32 bytes
# of text on average (PRB_AVGBITS): larger values are damage, not a big log.
MAX_DATA_SIZE_BITS = 31
MAX_DESC_COUNT_BITS = MAX_DATA_SIZE_BITS - 5
# printk_info.text_len is 16 bits: a longer block cannot be a record's.
MAX_BLOCK_SIZE = BLOCK_ID_SIZE + 0xFFFF + 7

# Kernel memory is read a page at a time and a few pages are kept: records are read in order,
# so neighbouring reads hit the same page, and memory use stays bounded whatever the log size.
# A page is the unit of both translation and dump exclusion: reading whole pages never touches
# memory the log does not use.
READ_PAGE_SIZE = 4096
READ_CACHE_PAGES = 64

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class Unread(enum.Enum):
    """Why a ringbuffer record gives no text."""

    # Its text was overwritten by newer records: it left the log, as the kernel's own reader
    # counts it (oldest records; also older than a kept empty line, which has no text to lose).
    EXPIRED = "expired"
    UNREADABLE = "unreadable"  # damaged, half written, or its text was lost


class DmesgError(InputError):
    """The kernel log cannot be found or read at all."""


class DmesgFormat(enum.Enum):
    """How records are printed: as current makedumpfile (the caller id where the kernel keeps
    one) or plain (no caller id, as makedumpfile 1.7.4 and older and vmcore-dmesg print)."""

    CALLER_ID = "caller-id"
    PLAIN = "plain"


# The kernel sets this bit of caller_id when a CPU (in interrupt context) printed, not a task.
CALLER_ID_CPU = 0x80000000
# makedumpfile's PID_CHARS_DEFAULT: the caller id is right-aligned in this many columns.
CALLER_ID_WIDTH = 8


@dataclass(frozen=True)
class LogRecord:
    ts_nsec: int
    text: bytes
    caller_id: int | None = None  # None: the kernel's VMCOREINFO exports no caller_id offset


@dataclass(frozen=True)
class Gap:
    """Records that could not be read; ``records`` None when the damage hides how many."""

    records: int | None


LogEntry = LogRecord | Gap


def kernel_log(image: MemoryImage, style: DmesgFormat = DmesgFormat.CALLER_ID) -> str:
    """The crashed kernel's log as text, makedumpfile --dump-dmesg style; DmesgError if the
    log cannot be found or read."""
    if image.vmcoreinfo is None:
        raise DmesgError("no VMCOREINFO: the kernel log cannot be found")
    try:
        kernel = kernel_memory(image)
    except TranslationError as e:
        raise DmesgError(f"kernel log unreadable: {e}") from None
    return log_text(kernel.read, image.vmcoreinfo, style)


def log_text(read: ReadFn, info: VmcoreInfo, style: DmesgFormat = DmesgFormat.CALLER_ID) -> str:
    """The log as text from kernel memory ``read``; DmesgError for whatever stops the reading
    (an unmapped address, a page left out of a dump, a log that cannot be found)."""
    try:
        cache = PageCache(lambda number: read(number * READ_PAGE_SIZE, READ_PAGE_SIZE), READ_PAGE_SIZE,
                          READ_CACHE_PAGES)
        return format_log(read_log(cache.read, info), style)
    except DmesgError:
        raise
    except (TranslationError, InputError) as e:
        raise DmesgError(f"kernel log unreadable: {e}") from None


def read_log(read: ReadFn, info: VmcoreInfo) -> list[LogEntry]:
    """The log's records in order, with gaps where records are unreadable."""
    # Linux 5.10 replaced the structured log_buf (3.5-5.9) by the lockless ringbuffer.
    if "prb" in info.symbols:
        return _PrintkRingbuffer(read, info).entries()
    if "log_first_idx" in info.symbols:
        return _StructuredLogBuf(read, info).entries()
    raise DmesgError("VMCOREINFO has neither SYMBOL(prb) (Linux 5.10+) nor SYMBOL(log_first_idx) "
                     "(Linux 3.5-5.9): the kernel log format is not supported")


def format_log(entries: list[LogEntry], style: DmesgFormat = DmesgFormat.CALLER_ID) -> str:
    return "".join(format_entry(entry, style) for entry in entries)


def format_entry(entry: LogEntry, style: DmesgFormat = DmesgFormat.CALLER_ID) -> str:
    if isinstance(entry, Gap):
        count = "some" if entry.records is None else str(entry.records)
        return f"[ gap: {count} records unreadable ]\n"
    seconds, nanoseconds = divmod(entry.ts_nsec, 1_000_000_000)
    prefix = f"[{seconds:5d}.{nanoseconds // 1000:06d}] "
    if entry.caller_id is not None and style is DmesgFormat.CALLER_ID:
        kind = "C" if entry.caller_id & CALLER_ID_CPU else "T"
        prefix += f"[{kind + str(entry.caller_id & ~CALLER_ID_CPU):>{CALLER_ID_WIDTH}}] "
    newline = "\n" + " " * len(prefix)
    return prefix + "".join(_CHAR_TEXT[byte] if byte != 0x0A else newline for byte in entry.text) + "\n"


def _char_text(byte: int) -> str:
    # isprint() or isspace() in the C locale, as makedumpfile tests; the escape shows the byte
    # value (makedumpfile 1.7.2 sign-extends bytes >= 0x80 to "\xffffffNN"; vmcore-dmesg and
    # the kernel's own /dev/kmsg print "\xNN", as here).
    if 0x20 <= byte < 0x7F or byte in b"\t\n\v\f\r":
        return chr(byte)
    return f"\\x{byte:02x}"


_CHAR_TEXT = [_char_text(byte) for byte in range(256)]


class _Layout:
    """Sizes and offsets from VMCOREINFO; a missing one is a DmesgError naming it."""

    def __init__(self, info: VmcoreInfo) -> None:
        self.info = info

    def _get(self, table: dict[str, int], kind: str, name: str) -> int:
        value = table.get(name)
        if value is None:
            raise DmesgError(f"VMCOREINFO has no {kind}({name}): the kernel log cannot be read")
        return value

    def symbol(self, name: str) -> int:
        return self._get(self.info.symbols, "SYMBOL", name)

    def size(self, name: str) -> int:
        return self._get(self.info.sizes, "SIZE", name)

    def offset(self, name: str) -> int:
        return self._get(self.info.offsets, "OFFSET", name)


def _u16(buf: bytes, offset: int) -> int:
    return _U16.unpack_from(buf, offset)[0]


def _u32(buf: bytes, offset: int) -> int:
    return _U32.unpack_from(buf, offset)[0]


def _u64(buf: bytes, offset: int) -> int:
    return _U64.unpack_from(buf, offset)[0]


def log_ranges(read: ReadFn, info: VmcoreInfo) -> list[tuple[int, int]]:
    """Where the log lies in kernel memory, as (start, end) address ranges: the ringbuffer's
    struct and its three arrays whole (crash reads all of them), or the structured log_buf;
    DmesgError (or TranslationError) when it cannot be found."""
    layout = _Layout(info)
    if "prb" in info.symbols:
        ring = _PrintkRingbuffer(read, info)
        start = ring.address
        return [(layout.symbol("prb"), layout.symbol("prb") + 8),
                (start, start + layout.size("printk_ringbuffer")),
                (ring.descs, ring.descs + ring.count * ring.desc_size),
                (ring.infos, ring.infos + ring.count * ring.info_size),
                (ring.text_data, ring.text_data + ring.data_size)]
    if "log_first_idx" in info.symbols:
        log = _StructuredLogBuf(read, info)
        return [(log.buf, log.buf + log.buf_len)]
    raise DmesgError("VMCOREINFO names no kernel log")


class _PrintkRingbuffer:
    """Linux 5.10+: descriptors (state, data block position) and infos (timestamp, text length)
    in two arrays indexed by id modulo their count, text in a ring of data blocks."""

    def __init__(self, read: ReadFn, info: VmcoreInfo) -> None:
        layout = _Layout(info)
        self.read = read
        rb_addr = _u64(read(layout.symbol("prb"), 8), 0)  # prb is a pointer to the ringbuffer
        self.address = rb_addr
        rb = read(rb_addr, layout.size("printk_ringbuffer"))
        counter = layout.offset("atomic_long_t.counter")
        desc_ring = layout.offset("printk_ringbuffer.desc_ring")
        text_ring = layout.offset("printk_ringbuffer.text_data_ring")
        try:
            count_bits = _u32(rb, desc_ring + layout.offset("prb_desc_ring.count_bits"))
            self.descs = _u64(rb, desc_ring + layout.offset("prb_desc_ring.descs"))
            self.infos = _u64(rb, desc_ring + layout.offset("prb_desc_ring.infos"))
            self.head_id = _u64(rb, desc_ring + layout.offset("prb_desc_ring.head_id") + counter)
            self.tail_id = _u64(rb, desc_ring + layout.offset("prb_desc_ring.tail_id") + counter)
            size_bits = _u32(rb, text_ring + layout.offset("prb_data_ring.size_bits"))
            self.text_data = _u64(rb, text_ring + layout.offset("prb_data_ring.data"))
        except struct.error:
            raise DmesgError("VMCOREINFO offsets lie outside SIZE(printk_ringbuffer)") from None
        if count_bits > MAX_DESC_COUNT_BITS or not 3 <= size_bits <= MAX_DATA_SIZE_BITS:
            raise DmesgError(f"printk ringbuffer is damaged (count_bits {count_bits}, "
                             f"size_bits {size_bits})")
        self.count = 1 << count_bits
        self.size_bits = size_bits
        self.data_size = 1 << size_bits
        self.desc_size = layout.size("prb_desc")
        self.info_size = layout.size("printk_info")
        self.off_state = layout.offset("prb_desc.state_var") + counter
        blk = layout.offset("prb_desc.text_blk_lpos")
        self.off_begin = blk + layout.offset("prb_data_blk_lpos.begin")
        self.off_next = blk + layout.offset("prb_data_blk_lpos.next")
        self.off_ts = layout.offset("printk_info.ts_nsec")
        self.off_text_len = layout.offset("printk_info.text_len")
        self.off_caller = info.offsets.get("printk_info.caller_id")
        if max(self.off_state, self.off_begin, self.off_next) + 8 > self.desc_size or \
                max(self.off_ts + 8, self.off_text_len + 2, (self.off_caller or 0) + 4) > self.info_size:
            raise DmesgError("VMCOREINFO offsets lie outside SIZE(prb_desc) or SIZE(printk_info)")

    def entries(self) -> list[LogEntry]:
        # Ids run from tail to head. The ring holds at most `count` of them: a wider span means
        # a damaged tail_id, and only the newest `count` ids can still be in the ring.
        span = min(((self.head_id - self.tail_id) & DESC_ID_MASK) + 1, self.count)
        first = (self.head_id - span + 1) & DESC_ID_MASK
        entries: list[LogEntry] = []
        unreadable = 0
        for step in range(span):
            desc_id = (first + step) & DESC_ID_MASK
            record = self._record(desc_id)
            if isinstance(record, LogRecord):
                if unreadable:
                    entries.append(Gap(unreadable))
                    unreadable = 0
                entries.append(record)
            elif record is Unread.UNREADABLE:
                unreadable += 1
        if unreadable:
            entries.append(Gap(unreadable))
        return entries

    def _record(self, desc_id: int) -> LogRecord | Unread:
        index = desc_id % self.count
        desc = self.read(self.descs + index * self.desc_size, self.desc_size)
        state_var = _u64(desc, self.off_state)
        if state_var & DESC_ID_MASK != desc_id:
            return Unread.UNREADABLE  # the descriptor was reused or is being reserved
        state = state_var >> DESC_STATE_SHIFT
        if state == DESC_REUSABLE:
            return Unread.EXPIRED
        # DESC_COMMITTED (a continuation could still have extended it) and DESC_FINALIZED both
        # hold a complete text, and makedumpfile prints both; DESC_RESERVED is still being written.
        if state not in (DESC_COMMITTED, DESC_FINALIZED):
            return Unread.UNREADABLE
        text = self._text(desc_id, _u64(desc, self.off_begin), _u64(desc, self.off_next))
        if text is None:
            return Unread.UNREADABLE
        info = self.read(self.infos + index * self.info_size, self.info_size)
        text_len = _u16(info, self.off_text_len)
        if text_len > len(text):  # the kernel's copy_data refuses such a record too
            return Unread.UNREADABLE
        caller = None if self.off_caller is None else _u32(info, self.off_caller)
        return LogRecord(_u64(info, self.off_ts), text[:text_len], caller)

    def _text(self, desc_id: int, begin: int, next_lpos: int) -> bytes | None:
        """The data of a block (kernel get_data), without its id; None if invalid or lost."""
        if begin & LPOS_DATALESS_BIT and next_lpos & LPOS_DATALESS_BIT:
            # Empty lines have no data block; any other data-less block lost its text.
            return b"" if begin == next_lpos == EMPTY_LINE_LPOS else None
        if begin % BLOCK_ID_SIZE or next_lpos % BLOCK_ID_SIZE:
            return None
        wrap_of = lambda lpos: lpos >> self.size_bits  # noqa: E731
        if wrap_of(begin) == wrap_of(next_lpos) and begin < next_lpos:
            start, length = begin & (self.data_size - 1), next_lpos - begin
        elif wrap_of((begin + self.data_size) & U64_MASK) == wrap_of(next_lpos):
            # A block that would cross the end of the ring is stored from its start.
            start, length = 0, next_lpos & (self.data_size - 1)
        else:
            return None
        if not BLOCK_ID_SIZE <= length <= MAX_BLOCK_SIZE:
            return None
        block = self.read(self.text_data + start, length)
        if _u64(block, 0) != desc_id:  # the writer stamps each block with its descriptor's id
            return None
        return block[BLOCK_ID_SIZE:]


class _StructuredLogBuf:
    """Linux 3.5-5.9: records chained by length in log_buf, from log_first_idx to log_next_idx;
    a zero length marks the end of the buffer, the next record is at its start."""

    def __init__(self, read: ReadFn, info: VmcoreInfo) -> None:
        layout = _Layout(info)
        # The record struct is "log" in Linux 3.5-3.10, "printk_log" from 3.11.
        name = "printk_log" if "printk_log" in info.sizes else "log"
        self.read = read
        self.header_size = layout.size(name)
        self.off_ts = layout.offset(f"{name}.ts_nsec")
        self.off_len = layout.offset(f"{name}.len")
        self.off_text_len = layout.offset(f"{name}.text_len")
        self.off_dict_len = layout.offset(f"{name}.dict_len")
        self.off_caller = info.offsets.get(f"{name}.caller_id")  # CONFIG_PRINTK_CALLER, Linux 5.1+
        if max(self.off_ts + 8, self.off_len + 2, self.off_text_len + 2, self.off_dict_len + 2,
               (self.off_caller or 0) + 4) > self.header_size:
            raise DmesgError(f"VMCOREINFO offsets lie outside SIZE({name})")
        self.buf = _u64(read(layout.symbol("log_buf"), 8), 0)  # char *log_buf
        self.buf_len = _u32(read(layout.symbol("log_buf_len"), 4), 0)
        self.first_idx = _u32(read(layout.symbol("log_first_idx"), 4), 0)
        self.next_idx = _u32(read(layout.symbol("log_next_idx"), 4), 0)
        if not 0 < self.buf_len <= 1 << MAX_DATA_SIZE_BITS:
            raise DmesgError(f"log_buf_len {self.buf_len} is damaged")

    def entries(self) -> list[LogEntry]:
        entries: list[LogEntry] = []
        idx = self.first_idx
        # Every record takes at least a header; one more step for the wrap marker.
        for _ in range(self.buf_len // self.header_size + 2):
            if idx == self.next_idx:
                return entries
            if idx + self.header_size > self.buf_len:
                break
            header = self.read(self.buf + idx, self.header_size)
            length = _u16(header, self.off_len)
            if length == 0:
                if idx == 0:
                    break  # a wrap marker at the start would loop
                idx = 0
                continue
            text_len = _u16(header, self.off_text_len)
            dict_len = _u16(header, self.off_dict_len)
            if length < self.header_size + text_len + dict_len or idx + length > self.buf_len:
                break
            text = self.read(self.buf + idx + self.header_size, text_len)
            caller = None if self.off_caller is None else _u32(header, self.off_caller)
            entries.append(LogRecord(_u64(header, self.off_ts), text, caller))
            idx += length
        # The records are chained by their lengths: after a damaged one the rest cannot be found.
        entries.append(Gap(None))
        return entries

