"""The triage record: why the kernel crashed, from the vmcore alone, before the dump is written.

Everything comes from what a vmcore holds without debug info: the NT_PRSTATUS notes (each CPU's
pid and, on x86_64 and arm64, registers), VMCOREINFO (OSRELEASE, BUILD-ID, CRASHTIME), the crashed
kernel's utsname (init_uts_ns) and its log. A field that cannot be determined is None, with the
reason in ``Triage.unknown``: nothing is guessed and then shown as fact.

From the log, the crash report is the last ``Kernel panic - not syncing:`` line, or, where
there is none or its reason names no cause ("Fatal exception"), the last oops line (``BUG:``,
``Oops:``, ``kernel BUG at``, ``general protection fault``, ...). The report's ``CPU: N PID: P
Comm: X`` line and its ``Call Trace:`` are the first ones after it.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..dump_level import DL_CACHE, DL_CACHE_PRIVATE, DL_FREE, DL_USER, DL_ZERO
from ..errors import CollectorError
from ..source import elf
from ..source.structs import Record
from ..source.vmcore import Vmcore
from ..source.vmcoreinfo import VmcoreInfo
from .memory import MemoryImage

TRIAGE_JSON, TRIAGE_TXT = "vmcore-triage.json", "vmcore-triage.txt"
TRIAGE_FORMAT = "vmcore-triage 1"
TOP_FRAMES = 5          # call-trace functions that go into the signature
SIGNATURE_HEX = 16      # hex digits of SHA-256 kept: 64 bits, no collision in any fleet's crashes
REPORT_HEAD_LINES = 8   # an oops's lines before "Oops:" (#PF, PGD): its "BUG:" line is this close
MAX_TRACE_LINES = 64    # a trace longer than this is damage or recursion: the rest is left out

# struct elf_prstatus_common (include/linux/elfcore.h), the same on every 64-bit kernel.
_PRSTATUS_COMMON = [
    ("si_signo", "i"), ("si_code", "i"), ("si_errno", "i"), ("pr_cursig", "h"), ("_pad0", "2x"),
    ("pr_sigpend", "Q"), ("pr_sighold", "Q"),
    ("pr_pid", "i"), ("pr_ppid", "i"), ("pr_pgrp", "i"), ("pr_sid", "i"),
    *[(f"{t}_{part}", "q") for t in ("pr_utime", "pr_stime", "pr_cutime", "pr_cstime") for part in ("sec", "usec")],
]
PRSTATUS_COMMON = Record("elf_prstatus_common", _PRSTATUS_COMMON)
# pr_reg (elf_gregset_t), 64-bit registers in this order, by machine. x86_64: struct
# user_regs_struct (arch/x86/include/asm/user_64.h). arm64: struct user_pt_regs, { regs[31], sp,
# pc, pstate } (arch/arm64/include/uapi/asm/ptrace.h), which arch/arm64/include/asm/elf.h makes
# elf_gregset_t (ELF_NGREG = sizeof(struct user_pt_regs) / 8 = 34, ELF_CORE_COPY_REGS copies it);
# x29 is the frame pointer, x30 the link register.
PR_REG = {
    elf.EM_X86_64: ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
                    "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base",
                    "gs_base", "ds", "es", "fs", "gs"),
    elf.EM_AARCH64: (*(f"x{n}" for n in range(31)), "sp", "pc", "pstate"),
}
# struct elf_prstatus: the common part, pr_reg, int pr_fpvalid and padding to 8 bytes (392 bytes
# on arm64, 336 on x86_64).
PRSTATUS = {machine: Record(f"elf_prstatus_{elf.machine_name(machine)}", [
    *_PRSTATUS_COMMON, *[(name, "Q") for name in names], ("pr_fpvalid", "i"), ("_pad1", "4x"),
]) for machine, names in PR_REG.items()}

# What each dump level bit leaves out (makedumpfile's meaning, dump_level.py).
LEVEL_EXCLUDES = {DL_ZERO: "zero pages", DL_CACHE: "page cache", DL_CACHE_PRIVATE: "private page cache",
                  DL_USER: "user pages", DL_FREE: "free pages"}
ALWAYS_EXCLUDED = "hwpoisoned and offline pages"

# The printk caller id ("[    T123] "), which makedumpfile 1.7.5+ and vmcore-save print, is not text.
_LOG_LINE = re.compile(r"^\[\s*(\d+)\.(\d{6})\] (?:\[ *[TC]\d+\] )?(.*)$")
_PANIC = re.compile(r"Kernel panic - not syncing: ?(.*)$")
# Panic reasons that only say an oops came first: the oops line is then the crash's reason.
_GENERIC_PANICS = ("Fatal exception", "Fatal exception in interrupt")
_OOPS = re.compile(r"^(?:BUG: |kernel BUG at |Oops: |Oops - |general protection fault|"
                   r"Unable to handle kernel |Internal error: |watchdog: BUG: |"
                   r"stack segment: |divide error: |invalid opcode: |double fault: )")
_TASK = re.compile(r"CPU: (?P<cpu>\d+) (?:UID: \d+ )?PID: (?P<pid>\d+) Comm: (?P<comm>.*?) "
                   r"(?:Kdump: loaded )?(?P<taint>Not tainted|Tainted: [^\d]*?)\s+\d")
_TRACE_START = re.compile(r"^(?:Call Trace:|Call trace:)\s*$")
_TRACE_MARKER = re.compile(r"^\s*</?(?:TASK|IRQ|NMI|SOFTIRQ|#[A-Z]+|EOE|EOI)>\s*$")
# " ? name+0x1/0x2 [module buildid]"; older kernels put " [<ffffffff81000000>]" first;
# arm64 prints " name+0x1/0x2".
_FRAME = re.compile(r"^\s*(?:\[<[0-9a-f]+>\]\s*)?(?P<unreliable>\? )?(?P<name>[A-Za-z_.$][\w.$]*)"
                    r"\+0x[0-9a-f]+/0x[0-9a-f]+(?: \[[^\]]*\])?\s*$")
_RIP = re.compile(r"^(?:RIP|pc) ?: ?(?:[0-9a-f]{4}:)?(?P<name>[A-Za-z_.$][\w.$]*)\+0x")
# Compiler clones of one function (.cold, .isra.0, .constprop.3, .part.1, .llvm.123).
_CLONE_SUFFIX = re.compile(r"\.(?:cold|isra|constprop|part|llvm|lto_priv|localalias)(?:\.\d+)*")
# Frames of the reporting itself, the same in every crash: no part of a crash's identity.
_REPORTING_FRAMES = frozenset({
    "dump_stack", "dump_stack_lvl", "show_stack", "show_trace_log_lvl", "panic", "vpanic", "nmi_panic",
    "__warn", "warn_slowpath_fmt", "report_bug", "handle_bug", "die", "oops_end", "__die",
    "dump_backtrace",  # arm64's: its traces start with the unwinder printing them
})
# A number anywhere in a reason (hex or decimal, not part of a name like ext4): normalised.
_NUMBER = re.compile(r"(?<![A-Za-z_])(?:0x)?[0-9a-fA-F]*[0-9][0-9a-fA-F]*")


@dataclass(frozen=True)
class DumpPlan:
    """The dump level and what the dump holds: from the save options, or an existing dump."""

    level: int
    format: str
    compression: str
    not_applied: dict[int, str] = field(default_factory=dict)  # level bit -> why it cannot apply
    state: str = "to be written after this record"

    @property
    def excludes(self) -> list[str]:
        return [name for bit, name in LEVEL_EXCLUDES.items() if self.level & bit and bit not in self.not_applied]


@dataclass(frozen=True)
class CrashReport:
    """What the log's last crash report says (each part None when the log does not say it)."""

    panic: str | None = None
    oops: str | None = None
    cpu: int | None = None
    pid: int | None = None
    comm: str | None = None
    taint: str | None = None
    trace: tuple[str, ...] = ()
    frames: tuple[str, ...] = ()        # function names for the signature, top first
    uptime: float | None = None         # the last record's timestamp


@dataclass
class Triage:
    """The record. Each field left None has its reason in ``unknown`` under the same name."""

    source: str
    release: str | None = None
    version: str | None = None
    machine: str | None = None
    build_id: str | None = None
    crash_time: int | None = None
    uptime_seconds: float | None = None
    panic: str | None = None
    oops: str | None = None
    taint: str | None = None
    cpu: int | None = None
    pid: int | None = None
    comm: str | None = None
    prstatus_note: int | None = None
    prstatus_pid: int | None = None
    cpu_choice: str | None = None
    registers: dict[str, int] | None = None
    call_trace: list[str] | None = None
    signature: str | None = None
    signature_input: dict[str, Any] | None = None
    dump: DumpPlan | None = None
    unknown: dict[str, str] = field(default_factory=dict)

    def with_dump(self, plan: DumpPlan | None, reason: str = "") -> Triage:
        unknown = {k: v for k, v in self.unknown.items() if k != "dump"}
        if plan is None:
            unknown["dump"] = reason
        return replace(self, dump=plan, unknown=unknown)


# ---------------------------------------------------------------- reading


def parse_log(log: str) -> CrashReport:
    """The last crash report of a log in vmcore-dmesg.txt's form; garbage lines are skipped."""
    texts: list[str] = []
    uptime = None
    for line in log.splitlines():
        match = _LOG_LINE.match(line)
        if match is None:
            continue  # a continuation line, a gap marker or damage: no record of its own
        texts.append(match.group(3))
        uptime = int(match.group(1)) + int(match.group(2)) / 1e6
    panic_at = _last(texts, lambda t: _PANIC.search(t) is not None)
    panic = texts[panic_at].strip() if panic_at is not None else None
    generic = panic_at is None or _PANIC.search(texts[panic_at]).group(1).strip() in _GENERIC_PANICS  # type: ignore[union-attr]
    oops_at = _last(texts[:panic_at] if panic_at is not None else texts, lambda t: _OOPS.match(t) is not None)
    while oops_at is not None:  # a report's first line: "BUG: ..." comes a few lines before its "Oops: ..."
        earlier = next((i for i in range(max(0, oops_at - REPORT_HEAD_LINES), oops_at) if _OOPS.match(texts[i])), None)
        if earlier is None:
            break
        oops_at = earlier
    oops = texts[oops_at].strip() if oops_at is not None and generic else None
    start = oops_at if oops is not None else panic_at
    if start is None:
        return CrashReport(uptime=uptime)
    report = texts[start:]
    task = next((m for m in map(_TASK.search, report) if m), None)
    trace, frames = _trace(report)
    return CrashReport(
        panic=panic, oops=oops, uptime=uptime, trace=trace, frames=frames,
        cpu=int(task["cpu"]) if task else None, pid=int(task["pid"]) if task else None,
        comm=task["comm"] if task else None, taint=" ".join(task["taint"].split()) if task else None)


def _last(texts: list[str], matches: Any) -> int | None:
    return next((i for i in range(len(texts) - 1, -1, -1) if matches(texts[i])), None)


def _trace(report: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The first call trace's lines as printed, and its reliable frames' function names (the
    faulting function from the RIP line first, as an oops's trace lists only its callers)."""
    start = next((i for i, text in enumerate(report) if _TRACE_START.match(text)), None)
    if start is None:
        return (), ()
    rip = next((m for m in map(_RIP.match, report[:start]) if m), None)
    names = [rip["name"]] if rip else []
    lines = []
    for text in report[start + 1:start + 1 + MAX_TRACE_LINES]:
        frame = _FRAME.match(text)
        if frame is None and not _TRACE_MARKER.match(text):
            break
        lines.append(text.strip())
        if frame is not None and not frame["unreliable"]:
            names.append(frame["name"])
    functions = [_CLONE_SUFFIX.sub("", name) for name in names]
    return tuple(lines), tuple(name for name in functions if name not in _REPORTING_FRAMES)


@dataclass(frozen=True)
class Prstatus:
    index: int                        # the note's place among the NT_PRSTATUS notes (CPU order)
    pid: int
    registers: dict[str, int] | None  # by PR_REG's names; None: see undecoded
    undecoded: str = ""               # why the registers are None


def prstatus_notes(notes: bytes, e_machine: int) -> list[Prstatus]:
    """Each CPU's NT_PRSTATUS: pr_pid always (its place is the same on every 64-bit kernel),
    the registers where PR_REG declares the machine's layout and the note has its size."""
    found = []
    descs = [note.desc for note in elf.iter_notes(notes) if note.type == elf.NT_PRSTATUS and note.name == b"CORE"]
    record = PRSTATUS.get(e_machine)
    machine = elf.machine_name(e_machine)
    for index, desc in enumerate(descs):
        if len(desc) < PRSTATUS_COMMON.size:
            continue  # too short even for a pid: not decoded
        registers, undecoded = None, ""
        if record is None:
            known = " and ".join(elf.machine_name(m) for m in PR_REG)
            undecoded = f"registers not decoded: the NT_PRSTATUS layout is declared for {known} only, this is {machine}"
        elif len(desc) != record.size:
            undecoded = (f"registers not decoded: the NT_PRSTATUS note is {len(desc)} bytes, "
                         f"not the {record.size} of {machine}'s struct elf_prstatus")
        else:
            parsed = record.parse(desc)
            registers = {name: getattr(parsed, name) for name in PR_REG[e_machine]}
        found.append(Prstatus(index, PRSTATUS_COMMON.parse(desc).pr_pid, registers, undecoded))
    return found


def build(source: str, notes: bytes, e_machine: int, info: VmcoreInfo | None, uts: dict[str, str | None],
          uts_reason: str, log: str | None, log_reason: str) -> Triage:
    """The record from a vmcore's parts; ``uts`` values None where utsname does not say them."""
    t = Triage(source)
    unknown = t.unknown
    machine = elf.MACHINE_NAMES.get(e_machine)
    t.machine = machine
    if machine is None:
        unknown["machine"] = f"ELF machine {e_machine} is not one this program knows"
    t.release = uts.get("release") or (info.osrelease if info else None)
    if t.release is None:
        unknown["release"] = f"{uts_reason}, and no VMCOREINFO OSRELEASE"
    t.version = uts.get("version")
    if t.version is None:
        unknown["version"] = uts_reason
    t.build_id = info.values.get("BUILD-ID") if info else None
    if t.build_id is None:
        unknown["build_id"] = "no VMCOREINFO BUILD-ID (Linux 5.9+ writes one)" if info else "no VMCOREINFO"
    t.crash_time = info.integer("CRASHTIME") if info else None
    if t.crash_time is None:
        unknown["crash_time"] = "no valid VMCOREINFO CRASHTIME" if info else "no VMCOREINFO"
    report = parse_log(log) if log is not None else CrashReport()
    _from_log(t, report, None if log is not None else f"kernel log not read: {log_reason}")
    _crashing_cpu(t, report, prstatus_notes(notes, e_machine))
    _sign(t, report)
    unknown["dump"] = "not a dump: the dump level is chosen when it is saved"
    return t


def _from_log(t: Triage, report: CrashReport, no_log: str | None) -> None:
    """The log's fields; ``no_log`` is why there is no log (None: it was read)."""
    unknown = t.unknown
    t.panic, t.oops, t.taint = report.panic, report.oops, report.taint
    t.cpu, t.pid, t.comm = report.cpu, report.pid, report.comm
    t.uptime_seconds = report.uptime
    t.call_trace = list(report.trace) if report.trace else None
    no_report = no_log or "no 'Kernel panic - not syncing' or oops line in the kernel log"
    found = t.panic is not None or t.oops is not None
    reasons = {
        "uptime_seconds": no_log or "no timestamped record in the kernel log",
        "panic": no_log or "no 'Kernel panic - not syncing' line in the kernel log",
        "oops": ("not looked for: the panic line names its own reason; only a 'Fatal exception' panic "
                 "takes an oops's" if t.panic else no_report),
        "taint": "no 'CPU: N PID: P Comm: X' line after the crash report" if found else no_report,
        "call_trace": "no 'Call Trace:' after the crash report" if found else no_report,
        "cpu": "no 'CPU: N PID: P Comm: X' line after the crash report" if found else no_report,
    }
    reasons["comm"] = reasons["pid"] = reasons["taint"]
    for name, reason in reasons.items():
        if getattr(t, name) is None:
            unknown[name] = reason


def _crashing_cpu(t: Triage, report: CrashReport, notes: list[Prstatus]) -> None:
    """The crashing CPU's note: the one whose pr_pid is the crash report's PID."""
    unknown = t.unknown
    chosen: Prstatus | None = None
    reason = ""
    if not notes:
        reason = "the vmcore has no NT_PRSTATUS note"
    elif report.pid is not None:
        matching = [n for n in notes if n.pid == report.pid]
        if len(matching) == 1:
            chosen = matching[0]
            t.cpu_choice = f"the only NT_PRSTATUS note with pr_pid {report.pid}, the crash report's PID"
        elif matching and report.cpu is not None and report.cpu < len(notes) and notes[report.cpu] in matching:
            chosen = notes[report.cpu]
            t.cpu_choice = (f"{len(matching)} NT_PRSTATUS notes have pr_pid {report.pid}; note {report.cpu} "
                            f"by the crash report's 'CPU: {report.cpu}' (notes are in CPU order)")
        elif matching:
            reason = f"{len(matching)} NT_PRSTATUS notes have pr_pid {report.pid} and the log's CPU does not pick one"
        else:
            reason = f"no NT_PRSTATUS note has pr_pid {report.pid}, the crash report's PID"
    elif len(notes) == 1:
        chosen = notes[0]
        t.cpu_choice = "the vmcore's only NT_PRSTATUS note (the log has no crash report to match it with)"
    else:
        reason = f"{len(notes)} NT_PRSTATUS notes and no crash report in the log to match one by its PID"
    if chosen is not None:
        t.prstatus_note, t.prstatus_pid = chosen.index, chosen.pid
        t.registers = chosen.registers
        if chosen.registers is None:
            unknown["registers"] = chosen.undecoded
    else:
        for name in ("prstatus_note", "prstatus_pid", "cpu_choice", "registers"):
            unknown[name] = reason


def signature(reason: str | None, frames: tuple[str, ...] | list[str]) -> tuple[str, dict[str, Any]]:
    """The crash signature: the first SIGNATURE_HEX hex digits of SHA-256 over, one per line,
    the text "vmcore-triage signature 1", the crash reason (the oops line where the panic only
    says "Fatal exception", else the panic line; timestamp dropped, every number, hexadecimal
    or decimal, replaced by N, white space collapsed) and the function names of the first
    TOP_FRAMES reliable call-trace frames (no "?" frames, no offsets, addresses or modules;
    compiler suffixes like .cold/.isra.0 dropped; the reporting's own frames such as panic
    and dump_stack_lvl left out; an oops's faulting function from its RIP line first). Equal
    crashes of different boots, memory sizes and KASLR offsets get the same signature."""
    normalised = " ".join(_NUMBER.sub("N", reason).split()) if reason else ""
    top = list(frames[:TOP_FRAMES])
    text = "\n".join(["vmcore-triage signature 1", normalised, *top])
    return hashlib.sha256(text.encode()).hexdigest()[:SIGNATURE_HEX], {"reason": normalised, "frames": top}


def _sign(t: Triage, report: CrashReport) -> None:
    reason = report.oops or report.panic
    if reason is None and not report.frames:
        t.unknown["signature"] = t.unknown["signature_input"] = "no crash reason and no call trace in the log"
        return
    t.signature, t.signature_input = signature(reason, report.frames)


def plan_for_level(level: int, fmt: str, compression: str, info: VmcoreInfo | None) -> DumpPlan:
    """The plan of a dump about to be written: filters the crashed kernel's VMCOREINFO cannot
    support keep their pages (as the classifier does), and say why."""
    from .page_encoding import PageEncoding

    struct_page_bits = [bit for bit in LEVEL_EXCLUDES if bit != DL_ZERO and level & bit]
    if info is None:
        not_applied = {bit: "no VMCOREINFO" for bit in struct_page_bits}
    else:
        disabled = PageEncoding.from_vmcoreinfo(info).disabled
        not_applied = {bit: disabled[bit] for bit in struct_page_bits if bit in disabled}
    return DumpPlan(level, fmt, compression, not_applied)


# ---------------------------------------------------------------- vmcores and dumps


def _uts(values: dict[str, str]) -> dict[str, str | None]:
    """utsname fields as known: the placeholders Vmcore.utsname() and our kdump headers use
    for what could not be read ("unknown", "(none)") are not values."""
    return {name: None if value in ("", "unknown", "(none)") else value for name, value in values.items()}


UTS_UNREAD = "init_uts_ns could not be read (or disagrees with VMCOREINFO OSRELEASE)"


def of_vmcore(vmcore: Vmcore, log: str | None, log_reason: str = "") -> Triage:
    """The record of an opened ELF vmcore; ``log`` its kernel log if already read, else None
    with ``log_reason`` saying why."""
    return build(vmcore.file.path, vmcore.original_notes, vmcore.e_machine, vmcore.vmcoreinfo,
                 _uts(vmcore.utsname()), UTS_UNREAD, log, log_reason)


def of_image(image: MemoryImage, source: str, notes: bytes, uts: dict[str, str], uts_reason: str) -> Triage:
    """The record of an opened vmcore or dump (open_dump.py opens either), its log read here."""
    from .dmesg import kernel_log

    try:
        log, log_reason = kernel_log(image), ""
    except Exception as e:  # whatever stops the log, the rest of the record still stands
        log, log_reason = None, str(e) if isinstance(e, CollectorError) else f"{type(e).__name__}: {e}"
    return build(source, notes, image.e_machine, image.vmcoreinfo, _uts(uts), uts_reason, log, log_reason)


# ---------------------------------------------------------------- rendering


def to_json(t: Triage) -> str:
    record = asdict(t)
    record = {"format": TRIAGE_FORMAT, **record}
    if t.registers is not None:
        record["registers"] = {name: f"{value:#018x}" for name, value in t.registers.items()}
    if t.dump is not None:
        record["dump"] = {**asdict(t.dump), "excludes": t.dump.excludes, "always_excluded": ALWAYS_EXCLUDED,
                          "not_applied": {str(bit): why for bit, why in t.dump.not_applied.items()}}
    if t.crash_time is not None:
        record["crash_time_utc"] = _utc(t.crash_time)
    return json.dumps(record, indent=1) + "\n"


def _utc(seconds: int) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))
    except (OverflowError, OSError, ValueError):
        return f"{seconds} (not a representable date)"


def to_text(t: Triage) -> str:
    """The human form: one "name: value" line each, an unknown value as "unknown (reason)"."""

    def value(name: str, shown: str | None = None) -> str:
        if getattr(t, name) is None:
            return f"unknown ({t.unknown.get(name, 'not determined')})"
        return shown if shown is not None else str(getattr(t, name))

    lines = [f"triage of {t.source}",
             f"kernel:       {value('release')} {value('version')} ({value('machine')})",
             f"build id:     {value('build_id')}",
             f"crash time:   {value('crash_time', _utc(t.crash_time) if t.crash_time is not None else None)}"
             + (" (VMCOREINFO CRASHTIME)" if t.crash_time is not None else ""),
             f"uptime:       {value('uptime_seconds', f'{t.uptime_seconds:.6f} s (last log timestamp)')}"
             if t.uptime_seconds is not None else f"uptime:       {value('uptime_seconds')}",
             f"panic:        {value('panic')}",
             f"oops:         {value('oops')}",
             f"taint:        {value('taint')}",
             f"task:         comm {value('comm')}, pid {value('pid')}, CPU {value('cpu')}",
             f"crashing CPU: NT_PRSTATUS note {value('prstatus_note')}"
             + (f" (pr_pid {t.prstatus_pid}): {t.cpu_choice}" if t.cpu_choice else "")]
    if t.registers is None:
        lines.append(f"registers:    {value('registers')}")
    else:
        regs = list(t.registers.items())
        lines.append("registers:")
        lines += ["  " + "  ".join(f"{name:>8} {val:016x}" for name, val in regs[i:i + 3])
                  for i in range(0, len(regs), 3)]
    if t.call_trace is None:
        lines.append(f"call trace:   {value('call_trace')}")
    else:
        lines.append("call trace:")
        lines += [f"  {line}" for line in t.call_trace]
    if t.signature is not None and t.signature_input is not None:
        lines.append(f"signature:    {t.signature} (reason {t.signature_input['reason']!r}; frames "
                     f"{' '.join(t.signature_input['frames']) or 'none'})")
    else:
        lines.append(f"signature:    {value('signature')}")
    lines.append(f"dump:         {_dump_text(t.dump) if t.dump else value('dump')}")
    text = "\n".join(lines) + "\n"
    return text.encode("ascii", "backslashreplace").decode("ascii")


def _dump_text(plan: DumpPlan) -> str:
    excluded = ", ".join(plan.excludes) or "nothing by level"
    text = (f"{plan.format}, {plan.compression}, dump level {plan.level}: leaves out {excluded} "
            f"(and always {ALWAYS_EXCLUDED}); {plan.state}")
    for bit, why in sorted(plan.not_applied.items()):
        text += f"; level bit {bit} ({LEVEL_EXCLUDES[bit]}) not applied: {why}"
    return text
