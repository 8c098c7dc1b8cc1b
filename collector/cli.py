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
    print_report,
    save,
)
from .sizes import parse_size
from .targets import SshOptions
from .targets.local import OutputFile, check_output

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
  -q, --quiet; -h, --help  no progress lines, no summary; this text
  --info|--dmesg|--triage FILE [--json]  a vmcore/dump: what|log|why it crashed
  --verify DUMP          check a dump (file or directory) against its manifest
  --dmesg-only|--dry-run  save only {LOG_NAME} | size it, write nothing
  --fallback DEST        next destination if DEST fails (repeatable)
  --keep-dumps N         after a complete dump, keep N of our dumps in DEST
  --min-free SIZE        keep SIZE (2G) free: drop old dumps or stop early
  --ssh-key FILE         SSH private key
  --known-hosts FILE     known_hosts that must hold the server's host key
  --ssh-insecure-accept-host-key   accept an unknown host key (warns)
  --ssh-retries N        reconnect attempts when the link drops [5]
Exit: 0 saved, 1 failed, 2 bad input, 3 saved incomplete but readable.
"""


class _HelpAction(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        sys.stdout.write(HELP)
        parser.exit()


def _min_free(text: str) -> int:
    return parse_size(text, "--min-free")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROGRAM, add_help=False)
    p.add_argument("-h", "--help", action=_HelpAction, nargs=0)
    p.add_argument("vmcore", nargs="?", default=DEFAULT_VMCORE)
    p.add_argument("dest", nargs="?")
    p.add_argument("-o", "--output")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("-d", "--dump-level", type=int, default=31)
    p.add_argument("--compress", choices=METHODS, default="zstd")
    p.add_argument("--level", type=int)
    p.add_argument("--format", choices=FORMATS, default="kdump")
    p.add_argument("--threads", type=int)
    p.add_argument("--fast", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--info")
    p.add_argument("--verify")
    p.add_argument("--dmesg")
    p.add_argument("--triage")
    p.add_argument("--json", action="store_true")
    p.add_argument("--dmesg-only", action="store_true")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--fallback", action="append", default=[])
    p.add_argument("--keep-dumps", type=int)
    p.add_argument("--min-free", type=_min_free, default=0)
    p.add_argument("--ssh-key")
    p.add_argument("--known-hosts")
    p.add_argument("--ssh-insecure-accept-host-key", action="store_true")
    p.add_argument("--ssh-retries", type=int, default=5)
    return p


def options_from(args: argparse.Namespace) -> SaveOptions:
    """The save job's options for parsed arguments (checked: CollectorError if not valid)."""
    if args.output is None:
        dests = (args.dest or DEFAULT_DEST, *args.fallback)
    else:  # none may be given: SaveOptions says so
        dests = (*([] if args.dest is None else [args.dest]), *args.fallback)
    level, threads = args.level, 1 if args.threads is None else args.threads
    if args.fast:
        if args.level is not None or args.compress != "zstd":
            raise CollectorError(f"--fast is zstd level {FAST_LEVEL}: it does not go with --level or --compress")
        level = FAST_LEVEL
        if args.threads is None:
            threads = min(os.cpu_count() or 1, MAX_THREADS)
    return SaveOptions(
        vmcore=args.vmcore, dests=dests, output=args.output, force=args.force,
        dump_level=args.dump_level, compress=args.compress, level=level, format=args.format,
        threads=threads, quiet=args.quiet, dmesg_only=args.dmesg_only, dry_run=args.dry_run, keep_dumps=args.keep_dumps,
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
        from .open_dump import kernel_log_of_file

        sys.stdout.write(kernel_log_of_file(args.dmesg))
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


def _rearrange(argv: list[str]) -> int:
    p = _Parser(prog=REARRANGE,
                description="Rebuild a kdump file from a flattened stream (like makedumpfile -R).")
    p.add_argument("flat", help="flattened stream file, or - for standard input")
    p.add_argument("output", help="kdump file to write (a new one, unless --force)")
    p.add_argument("-f", "--force", action="store_true",
                   help="replace an existing OUTPUT, once the new file is complete")
    args = p.parse_args(argv)
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
