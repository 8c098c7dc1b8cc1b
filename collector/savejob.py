"""The save job: one vmcore saved, with its kernel log, to the first destination that takes
the whole dump. The command line (collector/cli.py) and the capture job (collector/capture.py)
both build a SaveOptions and call save(); this module owns the rules:

- Every option is checked when SaveOptions is made, before any file is opened or any target
  touched: one line naming the option, exit 2.
- Destinations are tried in order in one loop: a destination that cannot be reached or used
  is skipped with one line saying why; a dump that its target cut short (full, failing,
  server gone) stays there, readable and flagged incomplete, and is saved again on the next
  destination. The best dump made is the result.
- Nothing is written over: -o refuses an existing file unless --force, and then replaces it
  only with a complete one; the input is never an output. Retention (targets/local.py)
  removes old dumps only when that cannot leave fewer complete dumps than there were.
"""

from __future__ import annotations

import os
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import console, fastcopy
from .dump_level import MAX_DUMP_LEVEL
from .errors import EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK, CollectorError, TargetUnreachable
from .formats import flat
from .formats.elfcore import write_elf
from .formats.kdump import TARGET_FULL_ERRNOS, DumpResult, KdumpLayout, write_kdump
from .integrity import HashingFile, ManifestFile
from .open_dump import open_source
from .pipeline.compression import DEFAULT_LEVEL, LEVEL_RANGES, METHODS
from .pipeline.pages import PageCompressor
from .progress import PROGRAM, LineProgress, format_duration
from .scan.classify import PageClassifier
from .source.vmcore import Vmcore
from .targets import (
    Appender,
    SshOptions,
    Target,
    TargetFile,
    check_destination,
    open_target,
)
from .targets.local import OutputFile, Retention, check_output

if TYPE_CHECKING:
    from .kernel.triage import Triage
    from .prediction import Prediction

DEFAULT_VMCORE = "/proc/vmcore"
DEFAULT_DEST = "/var/crash"
LOG_NAME, LOG_INCOMPLETE_NAME = "vmcore-dmesg.txt", "vmcore-dmesg-incomplete.txt"
INCOMPLETE_NAME = "vmcore-incomplete"
FORMATS = ("kdump", "elf", "flat")
# More compression threads cannot help any machine this runs on (a capture kernel usually has
# one or a few CPUs), and each holds a compressor and batch buffers in a small memory; a fixed
# bound, not one from os.cpu_count(): a configuration must mean the same in the capture kernel.
MAX_THREADS = 256
# A host name the crashed kernel did not set ("(none)" is its placeholder): the analysing
# machine's name would be wrong for a vmcore copied elsewhere.
UNKNOWN_HOST = "unknown-host"
# The most a dump can take beyond its pages (headers, notes, bitmaps, descriptors and flat
# record headers are within PER_PAGE_OVERHEAD per page plus this).
PER_PAGE_OVERHEAD = 64
FIXED_OVERHEAD = 1 << 20

Notice = Callable[[str], None]


def notice(text: str) -> None:
    """A line that matters even with --quiet (fallbacks, retention, unverified host keys)."""
    console.say(PROGRAM, text)


@dataclass(frozen=True)
class SaveOptions:
    """Everything one save needs; checked on creation (invalid options cannot exist). Messages
    name the command line's options (the configuration file is checked in its own terms first)."""

    vmcore: str = DEFAULT_VMCORE
    dests: tuple[str, ...] = (DEFAULT_DEST,)  # DEST, then each --fallback (none with output)
    output: str | None = None                 # -o: exactly one file ("-": standard output)
    force: bool = False
    dump_level: int = 31
    compress: str = "zstd"
    level: int | None = None                  # None: DEFAULT_LEVEL (no level for "none")
    format: str = "kdump"
    threads: int = 1
    quiet: bool = False
    dmesg_only: bool = False
    dry_run: bool = False                     # classify and predict the size; write nothing
    keep_dumps: int | None = None
    min_free: int = 0
    ssh: SshOptions = field(default_factory=SshOptions)

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise CollectorError(problem)

    def _problem(self) -> str | None:
        if not 0 <= self.dump_level <= MAX_DUMP_LEVEL:
            return f"--dump-level {self.dump_level} is not in 0-{MAX_DUMP_LEVEL}"
        if self.compress not in METHODS:
            return f"--compress {self.compress!r} is not one of {', '.join(METHODS)}"
        if self.level is not None:
            if self.compress == "none":
                return "--level does not go with --compress none"
            low, high = LEVEL_RANGES[self.compress]
            if not low <= self.level <= high:
                return f"--level {self.level} is not in {low}-{high} for {self.compress}"
        if self.format not in FORMATS:
            return f"--format {self.format!r} is not one of {', '.join(FORMATS)}"
        if not 1 <= self.threads <= MAX_THREADS:
            return f"--threads {self.threads} is not in 1-{MAX_THREADS}"
        if self.keep_dumps is not None and self.keep_dumps < 1:
            return f"--keep-dumps {self.keep_dumps}: must be at least 1 (the dump being written)"
        if self.min_free < 0:
            return f"--min-free {self.min_free}: must be 0 or more"
        if self.ssh.retries < 0:
            return f"--ssh-retries {self.ssh.retries}: must be 0 or more"
        if self.dry_run and (self.dmesg_only or self.format != "kdump"):
            return "--dry-run predicts a kdump dump: it does not go with --dmesg-only or --format elf|flat"
        if self.output is not None:
            if self.dests:
                return "DEST and --fallback do not go with --output (the one file written)"
            if self.dmesg_only:
                return "--dmesg-only saves into a dump directory: it does not go with --output"
            if self.output == "-" and self.format != "flat":
                return "--output -: only --format flat can be written to standard output"
            return None
        if not self.dests:
            return "no DEST given"
        for index, dest in enumerate(self.dests):
            option = "DEST" if index == 0 else "--fallback"
            try:
                check_destination(dest, option)
            except CollectorError as e:
                return str(e)
            if dest.startswith("ssh://") and not self.ssh.key_file:
                return f"{option} {dest}: --ssh-key FILE is needed for SSH destinations"
            if dest.startswith("ssh://") and not (self.ssh.known_hosts or self.ssh.accept_unknown_host_key):
                return (f"{option} {dest}: --known-hosts FILE is needed to check the server "
                        "(or --ssh-insecure-accept-host-key)")
        return None

    @property
    def effective_level(self) -> int | None:
        return None if self.compress == "none" else (DEFAULT_LEVEL if self.level is None else self.level)


@dataclass(frozen=True)
class Outcome:
    """What a save did. ``path``: the dump (or, with dmesg_only, the log) that is the result."""

    exit_code: int
    path: str
    result: DumpResult | None = None  # None: dmesg_only
    format: str = "kdump"              # the format written (flat where a target takes only streams)
    seconds: float = 0.0
    log_lines: int = 0
    prediction: Prediction | None = None  # dry_run: what the dump would take


@dataclass(frozen=True)
class _Attempt:
    result: DumpResult
    path: str
    format: str


def save(options: SaveOptions, say: Notice = notice) -> Outcome:
    """Save ``options.vmcore``; returns the outcome (exit code 0, 1 or 3). Raises CollectorError
    (bad input, nothing written) or TargetUnreachable (no destination could be used)."""
    if options.dry_run:  # no destination is opened or created
        from .prediction import predict

        with open_source(options.vmcore) as vmcore:
            for warning in vmcore.warnings:
                say(f"warning: {warning}")
            prediction = predict(vmcore, options.dump_level, options.compress, options.level, say)
        return Outcome(EXIT_OK, options.vmcore, prediction=prediction)
    _check_paths(options)
    progress = LineProgress(quiet=options.quiet)
    started = time.monotonic()
    with open_source(options.vmcore, options.format, options.dump_level) as vmcore:
        for warning in vmcore.warnings:
            progress.message(f"warning: {warning}")
        if options.dmesg_only:  # the log is the whole job, so failing to read or write it is an error
            from .kernel.dmesg import kernel_log  # only where a log is saved

            text = kernel_log(vmcore)
            # No size bound: min_free stops the log, and nothing is removed to make room for it.
            retention = Retention(options.keep_dumps, options.min_free)
            attempt = _save_with_fallbacks(options, dump_dir_name(vmcore), retention, say,
                                           lambda target, directory: _log_into(target, directory, text))
            return Outcome(EXIT_OK, attempt.path, seconds=time.monotonic() - started, log_lines=text.count("\n"))
        classifier = PageClassifier(vmcore, options.dump_level | vmcore.input_dump_level, progress.message)
        if options.output is not None:
            attempt = _save_output(vmcore, classifier, options, progress, say)
        else:
            # The log goes next to a dump in a dump directory; --output promises exactly one file.
            log_text = _kernel_log_or_warn(vmcore, say)
            triage = _triage_or_warn(vmcore, log_text, say)
            retention = Retention(options.keep_dumps, options.min_free, dump_size_bound(vmcore))
            attempt = _save_with_fallbacks(
                options, dump_dir_name(vmcore), retention, say,
                lambda target, directory: _save_into(target, directory, vmcore, classifier, options, progress, say,
                                                     log_text, triage))
    result = attempt.result
    code = EXIT_OK if result.complete else EXIT_INCOMPLETE if result.readable else EXIT_FAILED
    return Outcome(code, attempt.path, result, attempt.format, time.monotonic() - started)


def _check_paths(options: SaveOptions) -> None:
    """What can be known about the files before any is opened: the input is a file, the
    output is neither the input nor a file already there, local destinations are directories."""
    try:
        mode = os.stat(options.vmcore).st_mode
    except OSError:
        mode = None  # Vmcore says why it cannot open it
    if mode is not None and stat.S_ISDIR(mode):
        raise CollectorError(f"VMCORE {options.vmcore} is a directory: give the vmcore file (or "
                             f"nothing, for {DEFAULT_VMCORE})")
    if options.output is not None:
        if options.output != "-":
            check_output(options.output, options.force, [options.vmcore], "--output")
        return
    for index, dest in enumerate(options.dests):
        if "://" not in dest and os.path.exists(dest) and not os.path.isdir(dest):
            raise CollectorError(f"{'DEST' if index == 0 else '--fallback'} {dest} is a file, not a directory: "
                                 "dumps go into a directory there")


def _save_with_fallbacks(options: SaveOptions, name: str, retention: Retention, say: Notice,
                         save_into: Callable[[Target, str], _Attempt]) -> _Attempt:
    """Try each destination in turn, ``save_into`` its new dump directory ``name`` (which
    closes the target), until one takes the whole dump (module docstring)."""
    kept: _Attempt | None = None  # the best dump cut short so far
    for index, dest in enumerate(options.dests):
        following = options.dests[index + 1] if index + 1 < len(options.dests) else None
        try:
            target, directory = _open_dump_dir(dest, name, options, say, retention)
        except (TargetUnreachable, OSError) as e:
            reason = str(e) if isinstance(e, TargetUnreachable) else f"{dest}: {e.strerror or e}"
            if following is not None:
                say(f"{reason}; falling back to {following}")
            elif kept is None:
                raise TargetUnreachable(reason) from None
            else:
                say(f"{reason}; no destination left for the dump")
            continue
        attempt = save_into(target, directory)
        if attempt.result.complete:
            return attempt
        if kept is None or attempt.result.readable or not kept.result.readable:
            kept = attempt
        elif following is None:  # worse than an earlier dump, which is the one reported
            say(f"dump FAILED ({attempt.result.error}): {attempt.path}")
        if following is not None:
            state = "INCOMPLETE" if attempt.result.readable else "FAILED"
            say(f"dump {state} ({attempt.result.error}): {attempt.path}; saving it again to {following}")
    assert kept is not None  # the loop returned or raised otherwise
    return kept


def _open_dump_dir(dest: str, name: str, options: SaveOptions, say: Notice,
                   retention: Retention) -> tuple[Target, str]:
    target = open_target(dest, options.ssh, say, retention)
    try:
        return target, target.make_dump_dir(name)
    except BaseException:
        target.close()
        raise


def _save_into(target: Target, directory: str, vmcore: Vmcore, classifier: PageClassifier, options: SaveOptions,
               progress: LineProgress, say: Notice, log_text: str | None, triage: Triage | None) -> _Attempt:
    """The kernel log, the triage record and the dump into ``directory`` on ``target``; closes
    the target."""
    try:
        if log_text is not None:
            _save_log_or_warn(target, directory, log_text, say)
        fmt = options.format
        if target.streams_only and fmt != "flat":
            fmt = "flat"
            say(f"{target.description} takes only a stream: writing the flattened format to "
                f"{directory}/vmcore.flat; make it a dump there with: vmcore-rearrange vmcore.flat vmcore")
        if triage is not None:
            _save_triage_or_warn(target, directory, triage, vmcore, options, fmt, say)
        path = os.path.join(directory, INCOMPLETE_NAME)
        final_path = os.path.join(directory, "vmcore.flat" if fmt == "flat" else "vmcore")
        dump_file = target.create(path)
        # The manifest (collector/integrity.py) is renamed with the dump, after it.
        manifest = ManifestFile(target, path, dump_size_bound(vmcore), say)
        try:
            hashed = HashingFile(dump_file)
            result = _write(vmcore, classifier, options, fmt, hashed, progress)
            commit_started = time.monotonic()
            manifest.write(hashed, result.complete, result.error or None)
        finally:
            manifest.close()
        if result.complete:
            target.commit(path, final_path)
            manifest.commit(final_path)
            path = final_path
            target.finish_dump(directory)
        result.phases["commit"] = time.monotonic() - commit_started
    finally:
        target.close()
    return _Attempt(result, path, fmt)


def _save_output(vmcore: Vmcore, classifier: PageClassifier, options: SaveOptions,
                 progress: LineProgress, say: Notice) -> _Attempt:
    """--output: exactly one file, or standard output for "-"."""
    assert options.output is not None
    if options.output == "-":
        return _Attempt(_write(vmcore, classifier, options, options.format, StdoutFile(), progress), "-",
                        options.format)
    output = OutputFile(options.output, options.min_free)
    result = _write(vmcore, classifier, options, options.format, output.file, progress)
    commit_started = time.monotonic()
    path = output.path
    if result.complete:
        path = output.commit()
    elif output.replaces:
        say(f"{output.final_path} is left as it was: the new dump did not complete")
    result.phases["commit"] = time.monotonic() - commit_started
    return _Attempt(result, path, options.format)


def _write(vmcore: Vmcore, classifier: PageClassifier, options: SaveOptions, fmt: str, file: TargetFile,
           progress: LineProgress) -> DumpResult:
    """Write one dump file in format ``fmt`` and close it."""
    try:
        compressor = PageCompressor(options.compress, options.effective_level, options.threads)
        try:
            if fmt == "elf":
                result = write_elf(file, vmcore, classifier, progress)
            elif fmt == "flat":
                stream = flat.FlatSink(Appender(file).write)
                result = write_kdump(stream, vmcore, classifier, compressor, progress)
                stream.close()
            else:
                result = write_kdump(file, vmcore, classifier, compressor, progress)
        finally:
            compressor.close()
        sync_started = time.monotonic()
        try:
            file.sync()
        except OSError as e:  # e.g. an SSH link lost for good: what got out is still a readable dump
            if e.errno not in TARGET_FULL_ERRNOS:
                raise
            result.complete, result.error = False, result.error or f"syncing: {e.strerror or e}"
        result.phases["sync"] = time.monotonic() - sync_started
        return result
    finally:
        file.close()


class StdoutFile:
    """Standard output as a TargetFile: only sequential writes (the flattened stream)."""

    def __init__(self) -> None:
        self.stream = sys.stdout.buffer
        self.offset = 0

    def write_at(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        if offset != self.offset:
            raise ValueError("standard output only takes sequential writes")
        self.stream.write(data)
        self.offset += len(data)

    def reserve(self, offset: int, length: int) -> None:
        """A pipe cannot reserve space."""

    def sync(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


def dump_size_bound(vmcore: Vmcore) -> int:
    """The most bytes a dump of ``vmcore`` can take in any format: every page stored
    uncompressed (compressed pages are stored only when smaller), with its bookkeeping."""
    layout = KdumpLayout.compute(vmcore.page_size, vmcore.memory.max_mapnr, len(vmcore.notes))
    metadata = (1 + layout.sub_hdr_blocks + layout.bitmap_blocks) * vmcore.page_size
    return metadata + vmcore.memory.max_mapnr * (vmcore.page_size + PER_PAGE_OVERHEAD) + FIXED_OVERHEAD


def dump_dir_name(vmcore: Vmcore) -> str:
    """``<crashed host>-<date>``: the crashed kernel's nodename, UNKNOWN_HOST if it had none."""
    node = vmcore.utsname().get("nodename", "")
    host = node if node and node != "(none)" else UNKNOWN_HOST
    return f"{host.replace('/', '_')}-{time.strftime('%Y-%m-%d-%H:%M:%S')}"


def _kernel_log_or_warn(vmcore: Vmcore, say: Notice) -> str | None:
    """The crashed kernel's log, or None after one warning line: the dump matters more."""
    try:
        from .kernel.dmesg import kernel_log  # only where a log is saved

        return kernel_log(vmcore)
    except Exception as e:  # whatever goes wrong with the log, the dump must still be taken
        reason = str(e) if isinstance(e, CollectorError) else f"{type(e).__name__}: {e}"
        say(f"warning: kernel log not saved: {reason}")
        return None


def _write_log(target: Target, directory: str, text: str) -> str:
    return _write_whole(target, directory, LOG_INCOMPLETE_NAME, LOG_NAME, text.encode("ascii"))


def _write_whole(target: Target, directory: str, incomplete_name: str, name: str, data: bytes) -> str:
    """Write a file under a temporary name, sync, rename: a file that exists is whole."""
    path, final_path = os.path.join(directory, incomplete_name), os.path.join(directory, name)
    file = target.create(path)
    try:
        file.write_at(0, data)
        file.sync()
    finally:
        file.close()
    target.commit(path, final_path)
    return final_path


def _save_log_or_warn(target: Target, directory: str, text: str, say: Notice) -> None:
    try:
        _write_log(target, directory, text)
    except (OSError, CollectorError) as e:  # a target that cannot take the log may still take the dump
        reason = str(e) if isinstance(e, CollectorError) else console.os_error_text(e)
        say(f"warning: kernel log not saved: {reason}")


def _triage_or_warn(vmcore: Vmcore, log_text: str | None, say: Notice) -> Triage | None:
    """The triage record (kernel/triage.py), or None after one warning line: the dump matters more."""
    try:
        from .kernel import triage  # only where a dump directory is written

        return triage.of_vmcore(vmcore, log_text, "the save's warning 'kernel log not saved' says why")
    except Exception as e:  # whatever goes wrong with the record, the dump must still be taken
        reason = str(e) if isinstance(e, CollectorError) else f"{type(e).__name__}: {e}"
        say(f"warning: triage record not saved: {reason}")
        return None


def _save_triage_or_warn(target: Target, directory: str, triage: Triage, vmcore: Vmcore, options: SaveOptions,
                         fmt: str, say: Notice) -> None:
    """vmcore-triage.json then vmcore-triage.txt, with the dump level and format of this dump,
    each written whole or not at all."""
    from .kernel.triage import TRIAGE_JSON, TRIAGE_TXT, plan_for_level, to_json, to_text

    try:
        plan = plan_for_level(options.dump_level, fmt, _compression_text(options, fmt), vmcore.vmcoreinfo)
        record = triage.with_dump(plan)
        for name, text in ((TRIAGE_JSON, to_json(record)), (TRIAGE_TXT, to_text(record))):
            stem, ext = os.path.splitext(name)
            _write_whole(target, directory, f"{stem}-incomplete{ext}", name, text.encode("ascii"))
    except Exception as e:  # a record that cannot be made or written costs a warning, never the dump
        reason = (str(e) if isinstance(e, CollectorError) else console.os_error_text(e) if isinstance(e, OSError)
                  else f"{type(e).__name__}: {e}")
        say(f"warning: triage record not saved: {reason}")


def _log_into(target: Target, directory: str, text: str) -> _Attempt:
    """--dmesg-only's save: the log alone, in the dump directory; closes the target."""
    try:
        return _Attempt(DumpResult(), _write_log(target, directory, text), "log")
    finally:
        target.close()


def report(options: SaveOptions, outcome: Outcome) -> list[str]:
    """The lines to print after a save: the summary (not with quiet), then for a dump that is
    not complete the line saying so (always). A dump is "saved" only when complete."""
    result = outcome.result
    if outcome.prediction is not None:
        return _dry_run_lines(options, outcome.prediction)
    if result is None:
        return [] if options.quiet else [f"saved {outcome.path} ({outcome.log_lines} lines)"]
    lines = [] if options.quiet else _summary(options, outcome, result)
    if not result.readable:
        lines.append(f"dump FAILED ({result.error}): not even its headers could be written to {outcome.path}")
    elif not result.complete:
        lines.append(f"dump INCOMPLETE ({result.error}): {outcome.path} is readable, missing pages are "
                     "reported as such by crash and drgn")
    return lines


def _summary(options: SaveOptions, outcome: Outcome, result: DumpResult) -> list[str]:
    c = result.counts
    compression = _compression_text(options, outcome.format)
    excluded = [("zero", c.zero), ("cache", c.cache), ("cache private", c.cache_private),
                ("user", c.user), ("free", c.free), ("hwpoison", c.hwpoison), ("offline", c.offline)]
    verb = "saved" if result.complete else "wrote INCOMPLETE" if result.readable else "could not write"
    return [
        f"{verb} {outcome.path} ({outcome.format}, {compression}, dump level {options.dump_level}, "
        f"{'compiled' if fastcopy.COMPILED else 'pure-Python'} scanner, {options.threads} thread(s))",
        f"pages: {c.present} present; excluded " + ", ".join(f"{n} {name}" for name, n in excluded)
        + f"; {c.written} written",
        f"bytes: {result.bytes_in / 2**20:.1f} MiB read, {result.bytes_out / 2**20:.1f} MiB written",
        "time: " + ", ".join(f"{name} {secs:.2f} s" for name, secs in result.phases.items())
        + f", total {format_duration(outcome.seconds)} ({outcome.seconds:.2f} s)",
    ]


def _dry_run_lines(options: SaveOptions, p: Prediction) -> list[str]:
    """What --dry-run prints (also with --quiet: it is the whole answer)."""
    from .prediction import format_size

    c = p.counts
    excluded = [("cache", c.cache), ("cache private", c.cache_private), ("user", c.user), ("free", c.free),
                ("hwpoison", c.hwpoison), ("offline", c.offline)]
    zero = f"about {c.zero} zero, " if options.dump_level & 1 else ""
    return [
        f"dry run of {options.vmcore}: nothing written (kdump, {_compression_text(options, 'kdump')}, "
        f"dump level {options.dump_level})",
        f"pages: {c.present} present; excluded " + ", ".join(f"{n} {name}" for name, n in excluded)
        + f", {zero}about {c.written} written",
        f"predicted size: {format_size(p.size)} ({p.size} bytes) +- {format_size(p.error_bytes)}: "
        f"{p.sample} of {p.kept} kept pages compressed ({p.sample_zero} zero), 95% interval of the sample",
        f"time: classify {p.classify_seconds:.3f} s, compress {p.compress_bytes_per_second / 2**20:.0f} MiB/s "
        "of pages here (one thread)",
    ]


def _compression_text(options: SaveOptions, fmt: str) -> str:
    if fmt == "elf":  # ELF cores hold raw pages
        return "uncompressed"
    level = options.effective_level
    return options.compress if level is None else f"{options.compress} level {level}"


def print_report(options: SaveOptions, outcome: Outcome) -> int:
    """Print report() and return the outcome's exit code."""
    for line in report(options, outcome):
        console.say(PROGRAM, line)
    return outcome.exit_code
