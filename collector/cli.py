"""vmcore-save: save a crashed kernel's memory (/proc/vmcore) as a dump crash and drgn open.

This module only reads the command line into SaveOptions and prints; the save job itself,
and its rules, are collector/savejob.py."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from . import console
from .capture.paths import CONFIG_PATH
from .errors import EXIT_OK, CollectorError
from .pipeline.compression import FAST_LEVEL, METHODS
from .progress import PROGRAM
from .savejob import (
    DEFAULT_DEST,
    DEFAULT_VMCORE,
    FORMATS,
    LOG_NAME,
    MAX_THREADS,
    SaveOptions,
    notice,
    print_report,
    save,
)
from .sizes import parse_size
from .targets import SshOptions
from .targets.local import OutputFile, check_output
from .version import VersionAction

REARRANGE = "vmcore-rearrange"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, like every other bad input
        raise CollectorError(f"{message} (see --help)")


# Written by hand to fit an 80x24 console (a capture kernel's emergency shell has no pager);
# tests/test_cli.py checks that every option is here.
HELP = f"""\
usage: vmcore-save [options] [VMCORE [DEST]]
Save VMCORE [{DEFAULT_VMCORE}] and its kernel log to DEST/<host>-<date>/.
DEST: a directory [{DEFAULT_DEST}], nfs://server/export/dir, ssh://user@host/dir.
No arguments and {CONFIG_PATH} present: the configured job.
  -o, --output FILE      one new dump file (- = stdout, flat only); with
                         -f, --force it replaces FILE once the new one is whole
  -d, --dump-level N     1 zero 2 cache 4 cache+private 8 user 16 free [31]
  --compress ALG         zstd | zlib (crash without zstd) | none [zstd]
  --level N              zstd -131072..22, zlib 0..9 [1, as makedumpfile]
  --format FMT           kdump | elf (gdb) | flat (pipes) [kdump]
  --threads N, --fast    threads 1..256 [1]; fast: zstd -3, a thread per CPU
  -q, --quiet; --version  no progress lines, no summary; print the version
  -h, --help; --help-all  this text; it and makedumpfile's -c -l -z -E -F ...
  --info|--dmesg|--triage FILE  what|log|why it crashed [--json|--dmesg-format]
  --verify DUMP          check a dump (file or directory) against its manifest
  --dmesg-only|--dry-run  save only {LOG_NAME} | size it, write nothing
  --fallback DEST        next destination if DEST fails (repeatable)
  --keep-dumps N         after a complete dump, keep N of our dumps in DEST
  --min-free SIZE        keep SIZE (2G) free: drop old dumps or stop early
  --ssh-key FILE --known-hosts FILE  SSH key; known_hosts with the host key
  --ssh-insecure-accept-host-key   accept an unknown host key (warns)
  --ssh-retries N        reconnect attempts when the link drops [5]
Exit: 0 saved, 1 failed, 2 bad input, 3 saved incomplete but readable.
"""


class _HelpAction(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        sys.stdout.write(HELP)
        parser.exit()


class _HelpAllAction(argparse.Action):
    """--help-all: HELP, then makedumpfile's options, formatted from the parser's own
    descriptions of them (the ones the man page prints)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        formatter = argparse.HelpFormatter(PROGRAM, width=80, max_help_position=25)
        for group in parser._action_groups:
            if group.title == MAKEDUMPFILE_GROUP:
                formatter.start_section(group.title)
                formatter.add_text(group.description)
                formatter.add_arguments(group._group_actions)
                formatter.end_section()
        sys.stdout.write(HELP + "\n" + formatter.format_help())
        parser.exit()


def _min_free(text: str) -> int:
    return parse_size(text, "--min-free")


def build_parser() -> argparse.ArgumentParser:
    # The help texts are the man page's (collector/manpages.py); --help prints HELP instead.
    p = _Parser(prog=PROGRAM, add_help=False)
    p.add_argument("-h", "--help", action=_HelpAction, nargs=0, help="print the summary of options (80x24), and exit")
    p.add_argument("--help-all", action=_HelpAllAction, nargs=0,
                   help="print the summary and makedumpfile's options, and exit")
    p.add_argument("--version", action=VersionAction)
    p.add_argument("vmcore", nargs="?", default=DEFAULT_VMCORE, metavar="VMCORE",
                   help=f"the crashed kernel's memory: {DEFAULT_VMCORE} in a capture kernel (the default), "
                   "or a copy of it")
    p.add_argument("dest", nargs="?", metavar="DEST",
                   help=f"where the dump directory <host>-<date>/ goes: a directory (default {DEFAULT_DEST}), "
                   "nfs://server/export/dir or ssh://user@host/dir")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write exactly one new dump file instead of a dump directory; - is standard output "
                   "(--format flat only)")
    p.add_argument("-f", "--force", action="store_true",
                   help="with --output: replace an existing FILE, once the new dump is complete")
    p.add_argument("-d", "--dump-level", type=int, default=31, metavar="N",
                   help="makedumpfile's dump level 0-31, a sum of the page kinds left out: 1 zero, 2 page cache, "
                   "4 page cache with private data, 8 user, 16 free (default 31)")
    p.add_argument("--compress", choices=METHODS, metavar="ALG",
                   help="page compression: zstd (the default), zlib (for crash builds without zstd) or none")
    p.add_argument("--level", type=int, metavar="N",
                   help="compression level: zstd -131072 to 22, zlib 0 to 9 (default 1, as makedumpfile)")
    p.add_argument("--format", choices=FORMATS, metavar="FMT",
                   help="kdump (compressed, the default), elf (an ELF core for gdb) or flat "
                   "(makedumpfile's flattened stream, for pipes; vmcore-rearrange makes it a kdump file)")
    p.add_argument("--threads", type=int, metavar="N",
                   help=f"compression threads, 1 to {MAX_THREADS} (default 1)")
    p.add_argument("--fast", action="store_true",
                   help=f"zstd level {FAST_LEVEL} on one thread per CPU (unless --threads)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines and no summary; errors still print")
    p.add_argument("--info", metavar="FILE", help="describe a vmcore or dump: kernel, CPUs, format, completeness")
    p.add_argument("--verify", metavar="DUMP",
                   help="check a dump (a file or a dump directory) against its integrity manifest")
    p.add_argument("--dmesg", metavar="FILE", help="print the kernel log of a vmcore or dump")
    p.add_argument("--dmesg-format", choices=("caller-id", "plain"), default="caller-id",
                   help="with --dmesg: caller-id prints the printk caller id as makedumpfile 1.7.5+ "
                   "(the default), plain the lines of makedumpfile 1.7.4 and older")
    p.add_argument("--triage", metavar="FILE",
                   help="print why the kernel of a vmcore or dump crashed (the record saved as vmcore-triage.txt)")
    p.add_argument("--json", action="store_true", help="with --triage: the record as JSON")
    p.add_argument("--dmesg-only", action="store_true", help=f"save only the kernel log, {LOG_NAME}, into DEST")
    p.add_argument("--dry-run", action="store_true",
                   help="classify the pages and predict the dump's size (a sample compressed); write nothing")
    p.add_argument("--fallback", action="append", default=[], metavar="DEST",
                   help="the next destination when DEST cannot take the whole dump (repeatable, tried in order)")
    p.add_argument("--keep-dumps", type=int, metavar="N",
                   help="after a complete dump, remove the oldest of this tool's dumps in DEST beyond N")
    p.add_argument("--min-free", type=_min_free, default=0, metavar="SIZE",
                   help="keep SIZE (e.g. 2G) free in DEST: remove old dumps first, or stop the dump short, "
                   "marked incomplete")
    p.add_argument("--ssh-key", metavar="FILE", help="the SSH private key for ssh:// destinations")
    p.add_argument("--known-hosts", metavar="FILE", help="the known_hosts file that must hold the server's host key")
    p.add_argument("--ssh-insecure-accept-host-key", action="store_true",
                   help="accept a server whose host key is unknown (warns)")
    p.add_argument("--ssh-retries", type=int, default=5, metavar="N",
                   help="reconnect attempts when the SSH link drops (default 5)")
    _add_makedumpfile_options(p)
    return p


MAKEDUMPFILE_GROUP = "makedumpfile's options"
# makedumpfile's --message-level bits (makedumpfile.h ML_PRINT_*): progress, common messages
# and the report are what -q turns off; errors always print.
_ML_PROGRESS, _ML_COMMON, _ML_REPORT, _MAX_MESSAGE_LEVEL = 1, 2, 16, 31
# The page compressions makedumpfile writes and this tool does not, by their flag: zstd at
# --fast's level is written instead (its dumps are no larger than lzo's: compression.FAST_LEVEL).
_NOT_WRITTEN = {"lzo": "-l", "snappy": "-p"}


def _num_threads(text: str) -> int:
    # makedumpfile's 0 is no compression threads besides its main one: ours is one thread.
    return int(text) or 1


def _add_makedumpfile_options(p: argparse.ArgumentParser) -> None:
    """The flags kdump users type (kdump.conf's core_collector, scripts), with makedumpfile's
    meaning; -d N and -f are the same in both tools. Each is one of the options above."""
    group = p.add_argument_group(MAKEDUMPFILE_GROUP, "(-d N, -d31 and -f as in makedumpfile; "
                                 "makedumpfile's VMCORE DUMPFILE is vmcore-save VMCORE -o DUMPFILE)")
    group.add_argument("-c", dest="compress", action="store_const", const="zlib", help="--compress zlib")
    group.add_argument("-z", dest="compress", action="store_const", const="zstd", help="--compress zstd")
    group.add_argument("-l", dest="compress", action="store_const", const="lzo",
                       help=f"lzo is not written: zstd level {FAST_LEVEL} instead (--fast's level, dumps no "
                       "larger than lzo's), saying so in one line")
    group.add_argument("-p", dest="compress", action="store_const", const="snappy",
                       help="snappy is not written: as -l")
    group.add_argument("-E", dest="format", action="store_const", const="elf", help="--format elf")
    group.add_argument("-F", dest="flattened", action="store_true",
                       help="--format flat, to standard output when neither DEST nor --output is given")
    group.add_argument("--num-threads", dest="threads", type=_num_threads, metavar="N",
                       help="--threads N (0, makedumpfile's default, is 1)")
    group.add_argument("--message-level", type=int, metavar="N",
                       help=f"0-{_MAX_MESSAGE_LEVEL}, accepted: a level without progress ({_ML_PROGRESS}), "
                       f"common messages ({_ML_COMMON}) and the report ({_ML_REPORT}) is -q")


def options_from(args: argparse.Namespace) -> SaveOptions:
    """The save job's options for parsed arguments (checked: CollectorError if not valid)."""
    compress, level, threads = args.compress or "zstd", args.level, 1 if args.threads is None else args.threads
    if compress in _NOT_WRITTEN:
        compress, level = "zstd", FAST_LEVEL if args.level is None else args.level
        notice(f"{_NOT_WRITTEN[args.compress]}: {args.compress} pages are not written; zstd level {level} instead"
               + (" (--fast's level: dumps no larger than lzo's)" if args.level is None else ""))
    dump_format, output, quiet = args.format or "kdump", args.output, args.quiet
    if args.flattened:
        if args.format not in (None, "flat"):
            raise CollectorError(f"-F is --format flat: it does not go with --format {args.format} or -E")
        dump_format = "flat"
        if output is None and args.dest is None and not args.fallback:
            output = "-"  # as makedumpfile -F: the stream on standard output
    if output is None:
        dests = (args.dest or DEFAULT_DEST, *args.fallback)
    else:  # none may be given: SaveOptions says so
        dests = (*([] if args.dest is None else [args.dest]), *args.fallback)
    if args.message_level is not None:
        if not 0 <= args.message_level <= _MAX_MESSAGE_LEVEL:
            raise CollectorError(f"--message-level {args.message_level} is not in 0-{_MAX_MESSAGE_LEVEL}")
        quiet = quiet or not args.message_level & (_ML_PROGRESS | _ML_COMMON | _ML_REPORT)
    if args.fast:
        if args.level is not None or compress != "zstd":
            raise CollectorError(f"--fast is zstd level {FAST_LEVEL}: it does not go with --level or --compress")
        level = FAST_LEVEL
        if args.threads is None:
            threads = min(os.cpu_count() or 1, MAX_THREADS)
    return SaveOptions(
        vmcore=args.vmcore, dests=dests, output=output, force=args.force,
        dump_level=args.dump_level, compress=compress, level=level, format=dump_format,
        threads=threads, quiet=quiet, dmesg_only=args.dmesg_only, dry_run=args.dry_run, keep_dumps=args.keep_dumps,
        min_free=args.min_free,
        ssh=SshOptions(key_file=args.ssh_key, known_hosts=args.known_hosts,
                       accept_unknown_host_key=args.ssh_insecure_accept_host_key, retries=args.ssh_retries))


def main(argv: Sequence[str] | None = None) -> int:
    return console.run(_save, argv, PROGRAM)


def rearrange_main(argv: Sequence[str] | None = None) -> int:
    return console.run(_rearrange, argv, REARRANGE)


def _save(argv: list[str]) -> int:
    if not argv and os.path.exists(CONFIG_PATH):  # e.g. the capture kernel's emergency shell
        from .capture.config import load as load_config
        from .capture.environment import save_configured

        return save_configured(load_config(CONFIG_PATH))
    args = build_parser().parse_args(argv)
    # Imported where used: every module costs each start, and the machine is down meanwhile.
    if args.verify is not None:
        from .integrity import VerifyOptions, verify

        verdict = verify(VerifyOptions(args.verify))
        print(verdict.text)
        return verdict.exit_code
    if args.json and not args.triage:
        raise CollectorError("--json goes only with --triage FILE")
    if args.triage:
        return _triage(args.triage, args.json)
    if args.info:
        from .describe import describe

        info = describe(args.info)
        print(info.text)
        return info.exit_code
    if args.dmesg:
        from .kernel.dmesg import DmesgFormat
        from .open_dump import kernel_log_of_file

        sys.stdout.write(kernel_log_of_file(args.dmesg, DmesgFormat(args.dmesg_format)))
        return EXIT_OK
    options = options_from(args)
    return print_report(options, save(options))


def _triage(path: str, as_json: bool) -> int:
    """--triage: the record saved as vmcore-triage.txt (or .json), of an existing vmcore or dump;
    the exit code is --info's (3: a dump with pages missing, whose record says what it could)."""
    from .describe import INFO_COMPLETE, INFO_INCOMPLETE
    from .kernel.triage import to_json, to_text
    from .triage_file import triage_of_file

    record, complete = triage_of_file(path)
    sys.stdout.write(to_json(record) if as_json else to_text(record))
    return INFO_COMPLETE if complete else INFO_INCOMPLETE


def build_rearrange_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=REARRANGE,
                description="Rebuild a kdump file from a flattened stream (like makedumpfile -R).")
    p.add_argument("flat", metavar="FLAT", help="flattened stream file, or - for standard input")
    p.add_argument("output", metavar="OUTPUT", help="kdump file to write (a new one, unless --force)")
    p.add_argument("-f", "--force", action="store_true",
                   help="replace an existing OUTPUT, once the new file is complete")
    p.add_argument("--version", action=VersionAction)
    return p


def _rearrange(argv: list[str]) -> int:
    args = build_rearrange_parser().parse_args(argv)
    from .formats import flat

    check_output(args.output, args.force, [] if args.flat == "-" else [args.flat], "OUTPUT")
    stream = sys.stdin.buffer if args.flat == "-" else open(args.flat, "rb")
    out = OutputFile(args.output)
    try:
        records = flat.rearrange(stream, out.file.write_at)
        out.file.sync()
    finally:
        out.file.close()
    out.commit()
    console.say(REARRANGE, f"{records} records written to {args.output}")
    return EXIT_OK
