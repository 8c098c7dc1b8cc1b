"""The kernel log from a vmcore or a dump: real crashes against makedumpfile --dump-dmesg and the
guest's serial console, synthetic logs written by the kernel's own algorithms (wrapping, damaged
records, garbage lengths), and the command line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Container
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.formats.kdump_image import KdumpImage, PageNotInDump
from collector.kernel.dmesg import (
    DmesgError,
    DmesgFormat,
    Gap,
    LogEntry,
    LogRecord,
    format_entry,
    format_log,
    log_text,
)
from collector.kernel.triage import parse_log
from collector.open_dump import kernel_log_of_file
from collector.source.vmcoreinfo import VmcoreInfo
from tests.conftest import run_save
from tests.support.dumpcheck import dump_files
from tests.support.printk_factory import (
    COMMITTED,
    FAILED_LPOS,
    FINALIZED,
    IMAGE_PADDR,
    IMAGE_VADDR,
    INFO_SIZE,
    RESERVED,
    REUSABLE,
    PrintkRing,
    StructuredLogBuf,
)
from tests.support.sshd import SSHD, start_sshd
from tests.support.vmcore_factory import SegmentSpec, build_vmcore, vmcoreinfo_text

# ---------------------------------------------------------------- output format


def test_format_matches_makedumpfile():
    line = "[    8.914140] sysrq: Trigger a crash\n"
    assert format_entry(LogRecord(8_914_140_123, b"sysrq: Trigger a crash")) == line
    assert format_entry(LogRecord(123_456_789_000_000, b"x")) == "[123456.789000] x\n"
    # A newline inside a record continues indented to the text (makedumpfile's dump_record).
    assert format_entry(LogRecord(0, b"a\nb")) == "[    0.000000] a\n               b\n"
    # Tabs and other white space pass; other bytes are escaped with their value.
    assert format_entry(LogRecord(0, b"\ttab\x01\x7f\xc3\xa9")) == "[    0.000000] \ttab\\x01\\x7f\\xc3\\xa9\n"
    assert format_entry(LogRecord(1_000, b"")) == "[    0.000001] \n"
    assert format_entry(Gap(3)) == "[ gap: 3 records unreadable ]\n"


def test_caller_id_follows_the_timestamp_as_makedumpfile_1_7_5_prints_it():
    """A task's id as T<pid>, a CPU's (bit 31 set) as C<cpu>, right-aligned in 8 columns; a
    continuation line is indented past it; plain leaves it out; a kernel that exports no
    caller_id offset gets none."""
    assert format_entry(LogRecord(8_914_140_123, b"sysrq: Trigger a crash", 123)) == \
        "[    8.914140] [    T123] sysrq: Trigger a crash\n"
    assert format_entry(LogRecord(0, b"irq", 0x80000001)) == "[    0.000000] [      C1] irq\n"
    assert format_entry(LogRecord(0, b"x", 4194304)) == "[    0.000000] [T4194304] x\n"
    assert format_entry(LogRecord(0, b"a\nb", 7)) == "[    0.000000] [      T7] a\n" + " " * 26 + "b\n"
    assert format_entry(LogRecord(0, b"x", 123), DmesgFormat.PLAIN) == "[    0.000000] x\n"
    assert format_entry(LogRecord(0, b"x")) == "[    0.000000] x\n"


# ---------------------------------------------------------------- synthetic lockless ringbuffer

texts = st.binary(min_size=0, max_size=40)
messages = st.lists(st.tuples(st.integers(0, 2**64 - 1), texts), min_size=0, max_size=120)


def ring_with(msgs, count_bits=4, size_bits=8) -> PrintkRing:
    ring = PrintkRing(count_bits, size_bits)
    for ts, text in msgs:
        ring.append(ts, text)
    ring.finish()
    return ring


def expected_ring_entries(ring: PrintkRing, damaged: Container[int] = frozenset()) -> list[LogEntry]:
    """What the reader must give: every readable record in id order, a gap per run of
    damaged or half-written ones; expired records (REUSABLE) are gone, as for the kernel."""
    entries: list[LogEntry] = []
    unreadable = 0
    for desc_id in ring.ids():
        record = ring.records.get(desc_id)
        if record is None or record.state == REUSABLE:
            continue
        if desc_id in damaged or record.state == RESERVED:
            unreadable += 1
            continue
        if unreadable:
            entries.append(Gap(unreadable))
            unreadable = 0
        entries.append(LogRecord(record.ts_nsec, record.text, record.caller_id))
    if unreadable:
        entries.append(Gap(unreadable))
    return entries


def read_ring(ring: PrintkRing, style: DmesgFormat = DmesgFormat.CALLER_ID) -> str:
    return log_text(ring.image.read, VmcoreInfo.parse(ring.vmcoreinfo.encode()), style)


@given(messages, st.integers(2, 6), st.integers(7, 10))
def test_ring_gives_every_record_still_in_it(msgs, count_bits, size_bits):
    """Wraparound of descriptors, of data blocks (blocks stored from the ring's start), id and
    lpos overflow (the kernel's initial values overflow on the first wraps), empty lines."""
    ring = ring_with(msgs, count_bits, size_bits)
    expected = expected_ring_entries(ring)
    assert not any(isinstance(e, Gap) for e in expected)
    assert read_ring(ring) == format_log(expected)
    if msgs:  # the newest record is always there
        assert read_ring(ring).endswith(format_entry(LogRecord(*msgs[-1], caller_id=0)))


def test_empty_ring_gives_an_empty_log():
    assert read_ring(ring_with([])) == ""


callers = st.one_of(st.integers(0, 4194304), st.integers(0, 8191).map(lambda cpu: cpu | 0x80000000))


@given(st.lists(st.tuples(st.integers(0, 2**40), texts, callers), max_size=60))
def test_ring_gives_each_record_its_caller_id(msgs):
    ring = PrintkRing(4, 9)
    for ts, text, caller in msgs:
        ring.append(ts, text, caller_id=caller)
    ring.finish()
    expected = expected_ring_entries(ring)
    assert read_ring(ring) == format_log(expected)
    assert read_ring(ring, DmesgFormat.PLAIN) == format_log([LogRecord(e.ts_nsec, e.text) if isinstance(e, LogRecord)
                                                             else e for e in expected])


def test_ring_without_a_caller_id_offset_in_vmcoreinfo_prints_none():
    ring = ring_with([(1000, b"old kernel")])
    info = VmcoreInfo.parse(ring.vmcoreinfo.replace("OFFSET(printk_info.caller_id)=20\n", "").encode())
    assert log_text(ring.image.read, info) == "[    0.000001] old kernel\n"


def test_committed_record_is_printed_reserved_is_a_gap():
    ring = PrintkRing(4, 9)
    for n in range(5):
        ring.append(n * 1000, f"record {n}".encode())
    ring.append(6000, b"not finalized yet", state=COMMITTED)
    ring.append(7000, b"being written", state=RESERVED)
    ring.finish()
    lines = read_ring(ring).splitlines()
    assert lines[-2:] == ["[    0.000006] [      T0] not finalized yet", "[ gap: 1 records unreadable ]"]


DAMAGE = ("reserved", "wrong id", "text_len too long", "block id", "garbage lpos", "data lost")


def damage(ring: PrintkRing, desc_id: int, kind: str, garbage: int) -> None:
    desc = ring._desc_offset(desc_id)
    info = ring.infos + (desc_id % ring.count) * INFO_SIZE
    if kind == "reserved":
        ring.set_state(desc_id, RESERVED)
    elif kind == "wrong id":
        ring.image.put(desc, "<Q", (FINALIZED << 62) | ((desc_id + 1 + garbage % 1000) % (1 << 62)))
    elif kind == "text_len too long":
        ring.image.put(info + 16, "<H", 0xFFFF)
    elif kind == "block id":
        ring.image.put(ring.text_offset(desc_id), "<Q", desc_id ^ (1 + garbage % 255))
    elif kind == "garbage lpos":
        ring.image.put(desc + 8, "<QQ", garbage | 1, (garbage * 3) & ~1 & (2**64 - 1))
    elif kind == "data lost":
        ring.image.put(desc + 8, "<QQ", FAILED_LPOS, FAILED_LPOS)


@given(st.lists(st.tuples(st.integers(0, 2**40), st.binary(min_size=1, max_size=30)), min_size=1, max_size=60),
       st.data())
def test_damaged_records_become_gaps_and_every_intact_record_is_printed(msgs, data):
    ring = ring_with(msgs, 4, 9)
    live = [i for i in ring.ids() if i in ring.records and ring.records[i].state == FINALIZED]
    chosen = data.draw(st.lists(st.sampled_from(live), unique=True, max_size=len(live)))
    for desc_id in chosen:
        damage(ring, desc_id, data.draw(st.sampled_from(DAMAGE)), data.draw(st.integers(0, 2**64 - 1)))
    assert read_ring(ring) == format_log(expected_ring_entries(ring, set(chosen)))


def test_expired_record_between_kept_ones_is_skipped_like_the_kernel():
    """An empty line keeps its descriptor when the text of later records expires (it has no
    data block to lose): the expired ones after it are simply gone, not a gap."""
    ring = PrintkRing(5, 8)
    ring.append(1, b"")
    for n in range(12):
        ring.append(n + 2, b"x" * 20)
    ring.finish()
    states = [ring.records[i].state for i in ring.ids() if i in ring.records]
    assert states[0] == FINALIZED and REUSABLE in states[1:]
    assert "gap" not in read_ring(ring)
    assert read_ring(ring).startswith("[    0.000000] [      T0] \n")


@settings(max_examples=300)
@given(st.lists(st.tuples(st.integers(0, 2**40), texts), max_size=40), st.integers(2, 5),
       st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=40), st.data())
def test_random_corruption_never_raises_anything_but_dmesg_error(msgs, count_bits, flips, data):
    ring = ring_with(msgs, count_bits, 8)
    # Corrupt anywhere: the pointer, the ring struct (ids, bits, addresses), descs, infos, text.
    hot = [0, PrintkRing.RING_STRUCT, PrintkRing.RING_STRUCT + 48, PrintkRing.DESCS, ring.infos, ring.text]
    for where, value in flips:
        offset = (data.draw(st.sampled_from(hot)) + where % 256) % len(ring.image.data)
        ring.image.data[offset] = value
    try:
        text = read_ring(ring)
    except DmesgError:
        return
    assert text == "" or text.endswith("\n")
    # Every loop is bounded by the ring: reads stay proportional to its size, whatever the ids say.
    assert ring.image.reads <= 4 * (ring.count + len(ring.image.data) // 4096) + 16


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_garbage_ids_and_sizes_are_bounded(head_id, tail_id, count_bits, size_bits):
    ring = ring_with([(1, b"a"), (2, b"b")], 3, 8)
    ring.image.put(PrintkRing.RING_STRUCT, "<I", count_bits)
    ring.image.put(PrintkRing.RING_STRUCT + 24, "<QQ", head_id, tail_id)
    ring.image.put(PrintkRing.RING_STRUCT + 48, "<I", size_bits)
    try:
        read_ring(ring)
    except DmesgError as e:
        assert "\n" not in str(e)
    assert ring.image.reads <= 4 * 2**12 + 64


def test_missing_vmcoreinfo_key_is_named():
    ring = ring_with([(1, b"a")])
    info = VmcoreInfo.parse(ring.vmcoreinfo.replace("OFFSET(prb_desc_ring.infos)=16\n", "").encode())
    with pytest.raises(DmesgError, match=r"OFFSET\(prb_desc_ring.infos\)"):
        log_text(ring.image.read, info)
    with pytest.raises(DmesgError, match="neither SYMBOL\\(prb\\)"):
        log_text(ring.image.read, VmcoreInfo.parse(b"OSRELEASE=2.6.32\n"))


# ---------------------------------------------------------------- synthetic structured log_buf (3.5-5.9)

def log_buf_with(msgs, buf_len=512) -> StructuredLogBuf:
    log = StructuredLogBuf(buf_len)
    for ts, text, dictionary in msgs:
        log.append(ts, text, dictionary)
    log.finish()
    return log


def read_log_buf(log: StructuredLogBuf, vmcoreinfo: str | None = None) -> str:
    return log_text(log.image.read, VmcoreInfo.parse((vmcoreinfo or log.vmcoreinfo).encode()))


log_messages = st.lists(st.tuples(st.integers(0, 2**64 - 1), texts, st.binary(max_size=30)), max_size=80)


@given(log_messages, st.integers(256, 1024))
def test_log_buf_gives_every_record_still_in_it(msgs, buf_len):
    """Wrapping (zero-length marker), records dropped to make room; dictionaries are not printed
    (makedumpfile and vmcore-dmesg print none either)."""
    log = log_buf_with(msgs, buf_len)
    expected = [LogRecord(ts, text) for _, ts, text in log.kept()]
    assert read_log_buf(log) == format_log(expected)


@given(st.lists(st.tuples(st.integers(0, 2**40), texts, callers), max_size=60))
def test_log_buf_with_config_printk_caller_gives_each_record_its_caller_id(msgs):
    """Linux 5.1-5.9 built with CONFIG_PRINTK_CALLER: printk_log.caller_id, in VMCOREINFO."""
    log = StructuredLogBuf(1024, caller_id=True)
    for ts, text, caller in msgs:
        log.append(ts, text, caller_id=caller)
    log.finish()
    kept = {seq for seq, _, _ in log.kept()}
    expected = [LogRecord(ts, text, caller) for seq, (ts, text, caller) in enumerate(msgs) if seq in kept]
    assert read_log_buf(log) == format_log(expected)


def test_log_buf_of_linux_3_5_to_3_10_uses_struct_log():
    log = log_buf_with([(1, b"one", b""), (2, b"two", b"SUBSYSTEM=pci")])
    old_names = log.vmcoreinfo.replace("printk_log", "log")
    assert read_log_buf(log, old_names) == "[    0.000000] one\n[    0.000000] two\n"


@given(st.lists(st.tuples(st.integers(0, 2**40), st.binary(min_size=1, max_size=20), st.just(b"")),
                min_size=2, max_size=40), st.data())
def test_log_buf_garbage_length_keeps_records_before_it(msgs, data):
    log = log_buf_with(msgs, 2048)
    kept = log.kept()
    victim = data.draw(st.integers(0, len(kept) - 1))
    idx = log.starts[kept[victim][0]]
    log.image.put(log.BUF + idx + 8, "<H", data.draw(st.integers(1, 15)))  # shorter than a header
    text = read_log_buf(log)
    assert text == format_log([LogRecord(ts, t) for _, ts, t in kept[:victim]] + [Gap(None)])


@settings(max_examples=300)
@given(log_messages, st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=30))
def test_log_buf_random_corruption_never_raises_anything_but_dmesg_error(msgs, flips):
    log = log_buf_with(msgs, 512)
    for where, value in flips:
        log.image.data[where % (log.BUF + 512)] = value
    try:
        read_log_buf(log)
    except DmesgError:
        return
    assert log.image.reads <= 4 * (512 // 16 + 2) + 16


# ---------------------------------------------------------------- command line, synthetic vmcore

def synthetic_vmcore(tmp_path: Path, ring: PrintkRing | None) -> Path:
    """An ELF vmcore whose PT_LOAD holds the log at a direct-map address (no page tables needed)."""
    data = bytes(ring.image.data) if ring else bytes(8192)
    info = vmcoreinfo_text(extra=ring.vmcoreinfo if ring else "")
    path = tmp_path / "vmcore"
    path.write_bytes(build_vmcore([SegmentSpec(IMAGE_PADDR, data, vaddr=IMAGE_VADDR)], info))
    return path


def test_dump_directory_gets_the_log_first_then_the_dump(tmp_path):
    ring = ring_with([(n * 10**7, f"line {n}".encode()) for n in range(30)], 5, 10)
    vmcore = synthetic_vmcore(tmp_path, ring)
    proc = run_save(str(vmcore), str(tmp_path / "crash"), "-q")
    assert proc.returncode == 0, proc.stderr
    (dump_dir,) = (tmp_path / "crash").iterdir()
    assert dump_files(dump_dir) == ["vmcore", "vmcore-dmesg.txt", "vmcore-triage.json", "vmcore-triage.txt",
                                     "vmcore.manifest.json"]
    log = (dump_dir / "vmcore-dmesg.txt").read_text()
    assert log == read_ring(ring) and "line 29" in log
    assert (dump_dir / "vmcore-dmesg.txt").stat().st_mtime_ns <= (dump_dir / "vmcore").stat().st_mtime_ns
    proc = run_save("--dmesg", str(vmcore))
    assert proc.returncode == 0 and proc.stdout == log


def test_dmesg_only_writes_just_the_log(tmp_path):
    vmcore = synthetic_vmcore(tmp_path, ring_with([(1, b"hello")]))
    proc = run_save(str(vmcore), str(tmp_path / "crash"), "--dmesg-only")
    assert proc.returncode == 0, proc.stderr
    (dump_dir,) = (tmp_path / "crash").iterdir()
    assert dump_files(dump_dir) == ["vmcore-dmesg.txt"]
    assert (dump_dir / "vmcore-dmesg.txt").read_text() == "[    0.000000] [      T0] hello\n"


def test_log_failure_is_one_warning_and_the_dump_goes_on(tmp_path):
    vmcore = synthetic_vmcore(tmp_path, None)  # VMCOREINFO without any log symbol
    proc = run_save(str(vmcore), str(tmp_path / "crash"), "-q")
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "kernel log" in line]
    assert len(warnings) == 1 and warnings[0].startswith("vmcore-save: warning: kernel log not saved")
    (dump_dir,) = (tmp_path / "crash").iterdir()
    assert dump_files(dump_dir) == ["vmcore", "vmcore-triage.json", "vmcore-triage.txt", "vmcore.manifest.json"]
    # With --dmesg-only the log is the whole job: one error line, non-zero exit, no directory.
    proc = run_save(str(vmcore), str(tmp_path / "only"), "--dmesg-only")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "only").exists()


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists(SSHD), reason="sshd needs root and openssh-server")
@pytest.mark.parametrize("sftp", [True, False], ids=["sftp", "shell"])
def test_ssh_dump_directory_gets_the_log(tmp_path, sftp):
    """The log goes through the Target interface: over SFTP, and through the shell (cat) when
    the server has no SFTP."""
    ring = ring_with([(n, f"over ssh {n}".encode()) for n in range(10)], 5, 10)
    vmcore = synthetic_vmcore(tmp_path, ring)
    server = start_sshd(tmp_path / "sshd", sftp=sftp)
    try:
        dumps = tmp_path / "dumps"
        proc = run_save(str(vmcore), server.url(str(dumps)), "-q", "--ssh-key", str(server.client_key),
                        "--known-hosts", str(server.known_hosts))
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr
    (dump_dir,) = dumps.iterdir()
    dump = "vmcore" if sftp else "vmcore.flat"
    assert {p.name for p in dump_dir.iterdir()} == {dump, f"{dump}.manifest.json", "vmcore-dmesg.txt",
                                                    "vmcore-triage.json", "vmcore-triage.txt"}
    assert (dump_dir / "vmcore-dmesg.txt").read_text() == read_ring(ring)


@pytest.mark.parametrize("content", [b"", b"hello\n" * 100, b"KDUMP   " + bytes(600),
                                     b"makedumpfile\0\0\0\0" + bytes(100)])
def test_dmesg_of_bad_input_is_one_line(tmp_path, content):
    path = tmp_path / "bad"
    path.write_bytes(content)
    proc = run_save("--dmesg", str(path))
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr


# ---------------------------------------------------------------- real crashes (tests/testbed)

REAL = [("6.1", "pvh", "load"), ("6.1", "bios", "file"), ("6.12", "pvh", "load")]


@pytest.fixture(scope="module", params=REAL, ids=lambda p: "-".join(p))
def crash(request, real_vmcore):
    kernel, boot, kexec = request.param
    return real_vmcore(kernel=kernel, mem_mib=512, workload=True, boot=boot, kexec=kexec)


@pytest.fixture(scope="module")
def crash_log(crash) -> str:
    return kernel_log_of_file(str(crash.path))


@pytest.fixture(scope="module")
def crash_log_plain(crash) -> str:
    """Without the caller id: the lines of makedumpfile 1.7.4 and older, and of the console."""
    return kernel_log_of_file(str(crash.path), DmesgFormat.PLAIN)


@pytest.mark.realkernel
def test_log_holds_the_marker_and_the_crash_with_its_backtrace(crash, crash_log):
    lines = crash_log.splitlines()
    assert any(line.endswith(f"] {crash.marker}") for line in lines)
    assert any(line.endswith("] Linux version " + crash.osrelease) or f"Linux version {crash.osrelease} " in line
               for line in lines[:3])
    trigger = next(i for i, line in enumerate(lines) if line.endswith("] sysrq: Trigger a crash"))
    panic = next(i for i, line in enumerate(lines) if "] Kernel panic - not syncing: sysrq triggered crash" in line)
    trace = next(i for i, line in enumerate(lines) if line.endswith("] Call Trace:"))
    assert trigger < panic < trace
    assert any("sysrq_handle_crash+" in line for line in lines[trace:trace + 10])


@pytest.mark.realkernel
@pytest.mark.skipif(not shutil.which("makedumpfile"), reason="makedumpfile not installed")
def test_plain_log_equals_makedumpfile_1_7_2_line_for_line(crash, crash_log_plain, tmp_path):
    """Debian's makedumpfile 1.7.2 --dump-dmesg (no caller id), 6.12 included (its ringbuffer
    layout is the one 1.7.2 knows)."""
    theirs = makedumpfile_dmesg("makedumpfile", crash.path, tmp_path)
    assert crash_log_plain.splitlines() == theirs
    assert len(theirs) > 300


UPSTREAM_MAKEDUMPFILE = Path(__file__).resolve().parents[2] / "shared" / "tools" / "makedumpfile"


@pytest.mark.realkernel
@pytest.mark.skipif(not UPSTREAM_MAKEDUMPFILE.exists(),
                    reason=f"upstream makedumpfile 1.7.5+ (which prints the caller id) not at {UPSTREAM_MAKEDUMPFILE}")
def test_log_equals_upstream_makedumpfile_with_the_caller_id_line_for_line(crash, crash_log, tmp_path):
    theirs = makedumpfile_dmesg(str(UPSTREAM_MAKEDUMPFILE), crash.path, tmp_path)
    assert crash_log.splitlines() == theirs
    assert all(re.match(r"\[ *\d+\.\d{6}\] \[ *[TC]\d+\] ", line) for line in theirs if line.startswith("["))


def makedumpfile_dmesg(program: str, vmcore: Path, tmp_path: Path) -> list[str]:
    out = tmp_path / "makedumpfile-dmesg.txt"
    out.unlink(missing_ok=True)
    proc = subprocess.run([program, "--dump-dmesg", str(vmcore), str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out.read_text(errors="surrogateescape").splitlines()


@pytest.mark.realkernel
def test_triage_reads_the_log_with_caller_ids_as_without(crash_log, crash_log_plain):
    report = parse_log(crash_log)
    assert report.panic and report.trace
    assert report == parse_log(crash_log_plain)


@pytest.mark.realkernel
def test_every_console_line_of_the_crashed_kernel_is_in_the_log(crash, crash_log_plain):
    """Independent of makedumpfile: what the crashed kernel printed on its serial console (up to
    the capture kernel's first line) appears in the log, line for line."""
    console = Path(crash.console_log).read_text(errors="replace").splitlines()
    boots = [i for i, line in enumerate(console) if "] Linux version " in line]
    printed = [line.rstrip("\r") for line in console[:boots[1]] if re.match(r"\[ *\d+\.\d{6}\] ", line)]
    ours = set(crash_log_plain.splitlines())
    assert len(printed) > 300
    assert [line for line in printed if line not in ours] == []


@pytest.mark.realkernel
def test_dmesg_of_a_level_31_dump_equals_the_vmcore(crash, crash_log, tmp_path):
    """The pages holding the log (kernel data) survive every dump level: --dmesg on a -d 31
    kdump file reads it through the dump's own VMCOREINFO, phys_base and page tables."""
    out = tmp_path / "dump"
    run_save(str(crash.path), "--output", str(out), "-d", "31", check=True)
    proc = run_save("--dmesg", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == crash_log


@pytest.mark.realkernel
def test_dump_directory_of_a_real_crash_gets_log_and_vmcore(crash, crash_log, tmp_path):
    proc = run_save(str(crash.path), str(tmp_path / "crash"), "-q")
    assert proc.returncode == 0, proc.stderr
    (dump_dir,) = (tmp_path / "crash").iterdir()
    assert dump_files(dump_dir) == ["vmcore", "vmcore-dmesg.txt", "vmcore-triage.json", "vmcore-triage.txt",
                                     "vmcore.manifest.json"]
    assert (dump_dir / "vmcore-dmesg.txt").read_text() == crash_log


@pytest.mark.realkernel
def test_page_left_out_of_a_dump_is_a_clear_error_not_zeros(crash, tmp_path):
    out = tmp_path / "dump"
    run_save(str(crash.path), "--output", str(out), "-d", "31", check=True)
    with KdumpImage(str(out)) as dump:
        excluded = next(pfn for pfn in range(dump.dump.max_mapnr)
                        if dump.dump.is_present(pfn) and not dump.dump.is_dumpable(pfn))
        with pytest.raises(PageNotInDump, match=f"page {excluded:#x} is not in the dump"):
            dump.memory.read(excluded * 4096 + 8, 16)
