"""vmcore-save: save a crashed kernel's memory (/proc/vmcore) as a dump crash and drgn open."""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
import time
from typing import Callable, Sequence

from . import fastcopy
from .classify import MAX_DUMP_LEVEL, PageClassifier
from .config import CONFIG_PATH
from .config import load as load_config
from .dmesg import kernel_log, kernel_log_of_file
from .errors import CollectorError, TargetUnreachable
from .formats import flat
from .formats.elfcore import write_elf
from .describe import describe
from .formats.kdump import TARGET_FULL_ERRNOS, DumpResult, write_kdump
from .pipeline import PageCompressor
from .progress import PROGRAM, LineProgress, format_duration
from .targets import Appender, SshOptions, Target, TargetFile, open_dump_dir
from .targets.local import LocalFile, LocalTarget, Retention
from .vmcore import Vmcore

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3
DEFAULT_VMCORE = "/proc/vmcore"
DEFAULT_DEST = "/var/crash"
DEBUG_ENV = "VMCORE_SAVE_DEBUG"
LOG_NAME, LOG_INCOMPLETE_NAME = "vmcore-dmesg.txt", "vmcore-dmesg-incomplete.txt"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other bad input
        raise CollectorError(f"{message} (see --help)")


# Written by hand to fit an 80x24 console (a capture kernel's emergency shell has no pager);
# tests/test_cli.py checks that every option is here.
HELP = f"""\
usage: vmcore-save [options] [VMCORE [DEST]]
Save VMCORE [{DEFAULT_VMCORE}] and its kernel log to DEST/<host>-<date>/.
DEST: a directory [{DEFAULT_DEST}], nfs://server/export/dir, ssh://user@host/dir.
No arguments and {CONFIG_PATH} present: the configured job.
  -o, --output FILE      exactly one dump file (- = stdout, --format flat only)
  -d, --dump-level N     1 zero 2 cache 4 cache+private 8 user 16 free [31]
  --compress ALG         zstd | zlib (crash without zstd) | none [zstd]
  --level N              compression level [1, as makedumpfile]
  --format FMT           kdump | elf (gdb) | flat (pipes) [kdump]
  --threads N            compression threads [1]
  -q, --quiet            no progress lines, no summary
  --info FILE            describe a vmcore or a dump
  --dmesg FILE           print the kernel log of a vmcore or a kdump dump
  --dmesg-only           save only {LOG_NAME} into DEST
  --fallback DEST        next destination if DEST fails (repeatable)
  --keep-dumps N         keep at most N dumps in DEST, this one included
  --min-free SIZE        drop old dumps, stop early, to keep SIZE (2G) free
  --ssh-key FILE         SSH private key
  --known-hosts FILE     known_hosts that must hold the server's host key
  --ssh-insecure-accept-host-key   accept an unknown host key (warns)
  --ssh-retries N        reconnect attempts when the link drops [5]
  -h, --help             this text
Exit: 0 saved, 1 failed, 2 bad input, 3 saved incomplete but readable.
"""


class _HelpAction(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        sys.stdout.write(HELP)
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROGRAM, add_help=False)
    p.add_argument("-h", "--help", action=_HelpAction, nargs=0)
    p.add_argument("vmcore", nargs="?", default=DEFAULT_VMCORE)
    p.add_argument("dest", nargs="?", default=DEFAULT_DEST)
    p.add_argument("-o", "--output")
    p.add_argument("-d", "--dump-level", type=int, default=31)
    p.add_argument("--compress", choices=("zstd", "zlib", "none"), default="zstd")
    p.add_argument("--level", type=int)
    p.add_argument("--format", choices=("kdump", "elf", "flat"), default="kdump")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--info")
    p.add_argument("--dmesg")
    p.add_argument("--dmesg-only", action="store_true")
    p.add_argument("--fallback", action="append", default=[])
    p.add_argument("--keep-dumps", type=int)
    p.add_argument("--min-free", type=parse_size, default=0)
    p.add_argument("--ssh-key")
    p.add_argument("--known-hosts")
    p.add_argument("--ssh-insecure-accept-host-key", action="store_true")
    p.add_argument("--ssh-retries", type=int, default=5)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return _run(_save, argv, PROGRAM)


def rearrange_main(argv: Sequence[str] | None = None) -> int:
    return _run(_rearrange, argv, "vmcore-rearrange")


def _run(command: Callable[[list[str]], int], argv: Sequence[str] | None, program: str) -> int:
    try:
        return command(list(sys.argv[1:] if argv is None else argv))
    except CollectorError as e:
        print(f"{program}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        print(f"{program}: error: {e.filename + ': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as e:  # never a traceback on a console in a capture kernel
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"{program}: internal error: {type(e).__name__}: {e} (set {DEBUG_ENV}=1 for a traceback)",
              file=sys.stderr)
        return EXIT_FAILED


def _save(argv: list[str]) -> int:
    if not argv and os.path.exists(CONFIG_PATH):  # e.g. the capture kernel's emergency shell
        from .capture import save_configured

        return save_configured(load_config(CONFIG_PATH))
    args = build_parser().parse_args(argv)
    if args.info:
        print(describe(args.info))
        return EXIT_OK
    if args.dmesg:
        sys.stdout.write(kernel_log_of_file(args.dmesg))
        return EXIT_OK
    if args.dmesg_only and args.output:
        raise CollectorError("--dmesg-only saves into a dump directory: it does not go with --output")
    if not 0 <= args.dump_level <= MAX_DUMP_LEVEL:
        raise CollectorError(f"dump level {args.dump_level} is not in 0-{MAX_DUMP_LEVEL}")
    if args.threads < 1:
        raise CollectorError("--threads must be at least 1")
    if args.keep_dumps is not None and args.keep_dumps < 1:
        raise CollectorError("--keep-dumps must be at least 1 (the dump being written)")
    if args.output == "-" and args.format != "flat":
        raise CollectorError("only --format flat can be written to stdout")
    progress = LineProgress(quiet=args.quiet)
    started = time.monotonic()
    with Vmcore(args.vmcore) as vmcore:
        for warning in vmcore.warnings:
            progress.message(f"warning: {warning}")
        if args.dmesg_only:
            return _save_log_only(vmcore, args)
        # The log goes next to a dump in a dump directory; --output promises exactly one file.
        log_text = None if args.output else _kernel_log_or_warn(vmcore)
        classifier = PageClassifier(vmcore, args.dump_level, progress.message)
        if args.output:
            result, path = _save_to(LocalTarget(os.path.dirname(args.output) or "."), None, vmcore, classifier,
                                    args, progress, log_text)
        else:
            result, path = _save_with_fallbacks(vmcore, classifier, args, progress, log_text)
    if not args.quiet:
        _summary(result, path, args, time.monotonic() - started)
    if not result.readable:
        print(f"{PROGRAM}: dump FAILED ({result.error}): not even its headers could be written to {path}",
              file=sys.stderr)
        return EXIT_FAILED
    if not result.complete:
        print(f"{PROGRAM}: dump INCOMPLETE ({result.error}): {path} is readable, missing pages are "
              "reported as such by crash and drgn", file=sys.stderr)
        return EXIT_INCOMPLETE
    return EXIT_OK


def _save_with_fallbacks(vmcore: Vmcore, classifier: PageClassifier, args: argparse.Namespace,
                         progress: LineProgress, log_text: str | None) -> tuple[DumpResult, str]:
    """Save to DEST, or to the first --fallback that can be reached. A dump that its target cut
    short (full, failing, server gone mid-dump) is saved again on the next destination, with one
    line saying why: a kdump user expects never to lose a dump. The partial dump stays where it
    is, readable and flagged incomplete; if no later destination does better, it is the result."""
    dests, name, requested_format = [args.dest, *args.fallback], _dump_dir_name(vmcore), args.format
    kept: tuple[DumpResult, str] | None = None  # (result, path) of the best incomplete dump so far
    while True:
        try:
            target, directory, used = open_dump_dir(dests, name, _ssh_options(args), _notice, _retention(args))
        except (TargetUnreachable, OSError) as e:
            if kept is None:
                raise
            reason = str(e) if isinstance(e, TargetUnreachable) else f"{dests[-1]}: {e.strerror or e}"
            _notice(f"{reason}; no destination left for the dump")
            return kept
        args.format = requested_format  # a stream-only target before this one chose flat for itself
        result, path = _save_to(target, directory, vmcore, classifier, args, progress, log_text)
        dests = dests[used + 1:]
        if result.complete:
            return result, path
        if kept is None or result.readable or not kept[0].readable:
            kept = result, path
        elif not dests:  # worse than an earlier dump, which is the one reported: say what became of this one
            _notice(f"dump FAILED ({result.error}): {path}")
        if not dests:
            return kept
        state = "INCOMPLETE" if result.readable else "FAILED"
        _notice(f"dump {state} ({result.error}): {path}; saving it again to {dests[0]}")


def _save_to(target: Target, directory: str | None, vmcore: Vmcore, classifier: PageClassifier,
             args: argparse.Namespace, progress: LineProgress, log_text: str | None) -> tuple[DumpResult, str]:
    """Save the dump (and the kernel log) into ``directory`` on ``target``, or to --output when
    ``directory`` is None, and close the target; returns (result, path of the dump)."""
    try:
        if directory is None:
            path, final_path = args.output, None
        else:
            if log_text is not None:
                _save_log_or_warn(target, directory, log_text)
            if target.streams_only and args.format != "flat":
                args.format = "flat"
                _notice(f"{target.description} takes only a stream: writing the flattened format to "
                        f"{directory}/vmcore.flat; make it a dump there with: vmcore-rearrange vmcore.flat vmcore")
            name = "vmcore.flat" if args.format == "flat" else "vmcore"
            path, final_path = os.path.join(directory, "vmcore-incomplete"), os.path.join(directory, name)
        result = _write(vmcore, classifier, args, target, path, progress)
        commit_started = time.monotonic()
        if final_path and result.complete:
            target.commit(path, final_path)
            path = final_path
        result.phases["commit"] = time.monotonic() - commit_started
    finally:
        target.close()
    return result, path


def _kernel_log_or_warn(vmcore: Vmcore) -> str | None:
    """The crashed kernel's log, or None after one warning line: the dump matters more."""
    try:
        return kernel_log(vmcore)
    except Exception as e:  # whatever goes wrong with the log, the dump must still be taken
        reason = str(e) if isinstance(e, CollectorError) else f"{type(e).__name__}: {e}"
        _notice(f"warning: kernel log not saved: {reason}")
        return None


def _write_log(target: Target, directory: str, text: str) -> str:
    """Write the log under a temporary name, sync, rename: a log file that exists is whole."""
    path, final_path = os.path.join(directory, LOG_INCOMPLETE_NAME), os.path.join(directory, LOG_NAME)
    file = target.create(path)
    try:
        file.write_at(0, text.encode("ascii"))
        file.sync()
    finally:
        file.close()
    target.commit(path, final_path)
    return final_path


def _save_log_or_warn(target: Target, directory: str, text: str) -> None:
    try:
        _write_log(target, directory, text)
    except (OSError, CollectorError) as e:  # a target that cannot take the log may still take the dump
        reason = str(e) if isinstance(e, CollectorError) else e.strerror or str(e)
        _notice(f"warning: kernel log not saved: {reason}")


def _save_log_only(vmcore: Vmcore, args: argparse.Namespace) -> int:
    """--dmesg-only: the log is the whole job, so failing to read it is an error."""
    text = kernel_log(vmcore)
    target, directory, _ = open_dump_dir([args.dest, *args.fallback], _dump_dir_name(vmcore),
                                         _ssh_options(args), _notice, _retention(args))
    try:
        path = _write_log(target, directory, text)
    finally:
        target.close()
    if not args.quiet:
        lines = text.count("\n")
        print(f"{PROGRAM}: saved {path} ({lines} lines)", file=sys.stderr)
    return EXIT_OK


def _write(vmcore: Vmcore, classifier: PageClassifier, args: argparse.Namespace, target: Target,
           path: str, progress: LineProgress) -> DumpResult:
    """Write one dump file in the chosen format; stdout (path "-") takes the flattened stream."""
    compressor = PageCompressor(args.compress, args.level, args.threads)
    file: TargetFile = StdoutFile() if path == "-" else target.create(path)
    try:
        if args.format == "elf":
            result = write_elf(file, vmcore, classifier, progress)
        elif args.format == "flat":
            stream = flat.FlatSink(Appender(file).write)
            result = write_kdump(stream, vmcore, classifier, compressor, progress)
            stream.close()
        else:
            result = write_kdump(file, vmcore, classifier, compressor, progress)
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
        compressor.close()


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


def _ssh_options(args: argparse.Namespace) -> SshOptions:
    return SshOptions(key_file=args.ssh_key, known_hosts=args.known_hosts,
                      accept_unknown_host_key=args.ssh_insecure_accept_host_key, retries=args.ssh_retries)


def _notice(text: str) -> None:
    """A line that matters even with --quiet (fallbacks, unverified host keys)."""
    print(f"{PROGRAM}: {text}", file=sys.stderr, flush=True)


def parse_size(text: str) -> int:
    """Bytes from ``123``, ``64K``, ``512M``, ``2G``, ``1T`` (powers of 1024)."""
    match = re.fullmatch(r"(\d+)([KMGT]?)", text.strip().upper())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 512M or 2G)")
    return int(match.group(1)) << (10 * " KMGT".index(match.group(2) or " "))


def _retention(args: argparse.Namespace) -> Retention:
    return Retention(args.keep_dumps, args.min_free)


def _dump_dir_name(vmcore: Vmcore) -> str:
    # The crashed kernel's host name; "(none)" is the kernel's placeholder for an unset one.
    names = (vmcore.utsname().get("nodename"), socket.gethostname())
    host = next((n for n in names if n and n != "(none)"), "localhost")
    return f"{host}-{time.strftime('%Y-%m-%d-%H:%M:%S')}"


def _summary(result: DumpResult, path: str, args: argparse.Namespace, total: float) -> None:
    c = result.counts
    if args.format == "elf":  # ELF cores hold raw pages
        compression = "uncompressed"
    else:
        level = "" if args.compress == "none" else f" level {args.level if args.level is not None else 1}"
        compression = f"{args.compress}{level}"
    excluded = [("zero", c.zero), ("cache", c.cache), ("cache private", c.cache_private),
                ("user", c.user), ("free", c.free), ("hwpoison", c.hwpoison), ("offline", c.offline)]
    lines = [
        f"saved {path} ({args.format}, {compression}, dump level {args.dump_level}, "
        f"{'compiled' if fastcopy.COMPILED else 'pure-Python'} scanner, {args.threads} thread(s))",
        f"pages: {c.present} present; excluded " + ", ".join(f"{n} {name}" for name, n in excluded)
        + f"; {c.written} written",
        f"bytes: {result.bytes_in / 2**20:.1f} MiB read, {result.bytes_out / 2**20:.1f} MiB written",
        "time: " + ", ".join(f"{name} {secs:.2f} s" for name, secs in result.phases.items())
        + f", total {format_duration(total)} ({total:.2f} s)",
    ]
    for line in lines:
        print(f"{PROGRAM}: {line}", file=sys.stderr)


def _rearrange(argv: list[str]) -> int:
    p = _Parser(prog="vmcore-rearrange",
                description="Rebuild a kdump file from a flattened stream (like makedumpfile -R).")
    p.add_argument("flat", help="flattened stream file, or - for standard input")
    p.add_argument("output", help="kdump file to write")
    args = p.parse_args(argv)
    stream = sys.stdin.buffer if args.flat == "-" else open(args.flat, "rb")
    out = LocalFile(args.output)
    try:
        records = flat.rearrange(stream, out.write_at)
        out.sync()
    finally:
        out.close()
    print(f"vmcore-rearrange: {records} records written to {args.output}", file=sys.stderr)
    return EXIT_OK
