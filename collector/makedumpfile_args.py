"""makedumpfile's command line as people write it (kdump.conf's core_collector, Debian's
MAKEDUMP_ARGS, habits at a shell prompt), read with makedumpfile's own rules and turned into
our settings.

makedumpfile parses its arguments with getopt_long over ``b:cDd:eEFfg:hi:lL:pRvXx:z`` and the
long options below (makedumpfile.c, main and longopts; 1.7.9): so ``-d31``, ``-cd 31``,
``--num-threads=2`` and unambiguous abbreviations such as ``--message 7`` all mean what they
mean there. Python's :func:`getopt.gnu_getopt` follows the same rules. Each option is then one
of: done as makedumpfile does it, done another way (a note says what is used instead), or
refused (it asks for something else than a dump: a split dump, a filter, a Xen dump, ...).
"""

from __future__ import annotations

import getopt
from collections.abc import Sequence
from dataclasses import dataclass

from .dump_level import MAX_DUMP_LEVEL
from .errors import CollectorError
from .pipeline.compression import FAST_LEVEL, METHODS

SHORT_OPTIONS = "b:cDd:eEFfg:hi:lL:pRvXx:z"
# Long option -> whether it takes an argument (makedumpfile.c longopts).
LONG_OPTIONS = {
    "split": False, "reassemble": False, "xen-syms": True, "xen-vmcoreinfo": True, "xen_phys_start": True,
    "message-level": True, "vtop": True, "dump-dmesg": False, "partial-dmesg": False, "config": True,
    "help": False, "diskset": True, "cyclic-buffer": True, "eppic": True, "non-mmap": False,
    "mem-usage": False, "splitblock-size": True, "work-dir": True, "num-threads": True,
    "check-params": False, "dry-run": False, "show-stats": False, "extension": True,
}
MAX_MESSAGE_LEVEL = 31  # print_info.h MAX_MSG_LEVEL

# The compression options (the last one given wins, as in makedumpfile) by the method they write.
COMPRESSION_OPTIONS = {"-c": "zlib", "-l": "lzo", "-p": "snappy", "-z": "zstd"}
# Options that change only how makedumpfile runs, not what the dump holds: read and not used.
_NOT_USED = {
    "-D": "debug messages",
    "--message-level": "its message level",
    "--show-stats": "its statistics",
    "-b": "the cache size of -R",
    "--cyclic-buffer": "its buffer size",
    "--splitblock-size": "its --split block size",
    "--work-dir": "its bitmap folder (bitmaps are kept in memory)",
    "--non-mmap": "read() instead of mmap()",
    "-f": "overwriting a file (a dump never overwrites one)",
    "-e": "leaving out unused vmemmap pages (they are kept)",
    "-x": "a vmlinux with debug information (VMCOREINFO says what a dump needs)",
    "-i": "a VMCOREINFO file (the vmcore's own is read)",
    "-L": "a size limit (min_free or --min-free keeps space free instead)",
}
# Options that ask for something else than one dump of the vmcore: refused.
_REFUSED = {
    "--split": "a dump split over several files", "--reassemble": "joining split dumps",
    "-R": "rebuilding a flattened dump (use vmcore-rearrange)", "-g": "writing a VMCOREINFO file",
    "--config": "a filter configuration (erasing data)", "--eppic": "an eppic filter (erasing data)",
    "--dump-dmesg": "the kernel log alone (use vmcore-save --dmesg)", "--partial-dmesg": "the kernel log alone",
    "--mem-usage": "a memory report", "--vtop": "address translation", "-X": "Xen dumps",
    "--xen-syms": "Xen dumps", "--xen-vmcoreinfo": "Xen dumps", "--xen_phys_start": "Xen dumps",
    "--diskset": "sadump disks", "--check-params": "a parameter check", "--dry-run": "a dry run",
    "-h": "its help", "-v": "its version", "--extension": "makedumpfile extensions",
}


@dataclass(frozen=True)
class MakedumpfileSettings:
    """What a makedumpfile command line asks for, in our terms (None: not given)."""

    dump_level: int | None = None
    compress: str | None = None    # one of pipeline.compression.METHODS
    level: int | None = None       # compression level, when not the method's default
    threads: int | None = None
    format: str | None = None      # "elf" (-E) or "flat" (-F); the last one given wins
    notes: tuple[str, ...] = ()    # one line for each option not done as makedumpfile does it


def parse_options(words: Sequence[str]) -> list[tuple[str, str]]:
    """(option, argument) pairs in order, as makedumpfile's getopt_long reads ``words``; the
    argument is "" for an option without one. Raises CollectorError for an unknown option, a
    missing argument or a word that is not an option (the file names are not ours to give)."""
    longs = [name + ("=" if takes else "") for name, takes in LONG_OPTIONS.items()]
    try:
        options, rest = getopt.gnu_getopt(list(words), SHORT_OPTIONS, longs)
    except getopt.GetoptError as e:
        raise CollectorError(f"makedumpfile {e.msg}") from None
    if rest:
        raise CollectorError(f"makedumpfile argument {rest[0]!r} is not an option "
                             "(the vmcore and the dump file are chosen here, not in its options)")
    return options


def read_options(words: Sequence[str]) -> MakedumpfileSettings:
    """Our settings for makedumpfile's options ``words`` (without the program name)."""
    dump_level: int | None = None
    compress: tuple[str, str] | None = None  # (option, makedumpfile's method)
    threads: int | None = None
    format_: str | None = None
    notes: list[str] = []
    for option, value in parse_options(words):
        if option == "-d":
            levels = [_whole(part, f"-d {value}", 0, MAX_DUMP_LEVEL) for part in value.split(",") if part]
            if not levels:
                raise CollectorError(f"makedumpfile -d {value!r}: no dump level")
            dump_level = levels[0]
            if len(levels) > 1:
                notes.append(f"makedumpfile -d {value}: dump level {levels[0]} is used; the levels after it "
                             "(makedumpfile's retries on a full disk) are not (min_free keeps space instead)")
        elif option in COMPRESSION_OPTIONS:
            compress = (option, COMPRESSION_OPTIONS[option])
        elif option == "--num-threads":
            # makedumpfile: 0 compresses in the main thread, N starts N compressing threads.
            threads = max(1, _whole(value, "--num-threads", 0, None))
        elif option == "-E":
            format_ = "elf"
        elif option == "-F":
            format_ = "flat"
        elif option in _NOT_USED:
            if option == "--message-level":
                _whole(value, "--message-level", 0, MAX_MESSAGE_LEVEL)
            shown = f"{option} {value}" if value else option
            notes.append(f"makedumpfile {shown} ({_NOT_USED[option]}) is not used")
        else:
            raise CollectorError(f"makedumpfile option {option!r} is not supported: it asks for {_REFUSED[option]}")
    method, level = None, None
    if compress is not None:
        option, wanted = compress
        if wanted in METHODS:
            method = wanted
        else:
            # lzo and snappy buy speed: FAST_LEVEL is the fastest zstd level whose dumps are no
            # larger than lzo's (pipeline/compression.py).
            method, level = "zstd", FAST_LEVEL
            notes.append(f"makedumpfile {option} ({wanted}) is not written here: zstd level {FAST_LEVEL} is "
                         "used instead (as fast, no larger)")
    return MakedumpfileSettings(dump_level, method, level, threads, format_, tuple(notes))


def _whole(text: str, what: str, low: int, high: int | None) -> int:
    try:
        number = int(text)
    except ValueError:
        raise CollectorError(f"makedumpfile {what}: {text!r} is not a whole number") from None
    if high is None and number < low:
        raise CollectorError(f"makedumpfile {what}: {number} is less than {low}")
    if high is not None and not low <= number <= high:
        raise CollectorError(f"makedumpfile {what}: {number} is not in {low}-{high}")
    return number
