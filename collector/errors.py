"""Errors that end a run with one clean line instead of a traceback, and the exit codes of every
command (vmcore-save, vmcore-rearrange, vmcore-collector, the capture job)."""

EXIT_OK = 0
EXIT_FAILED = 1          # the command line was fine, the world was not: no dump, a target failed
EXIT_USAGE = 2           # something the user must fix: an option, the input, the configuration
EXIT_INCOMPLETE = 3      # a dump that lacks pages; what it holds is readable
EXIT_SHELL = 75          # the capture job asks the initramfs's /init for its emergency shell
EXIT_INTERRUPTED = 130   # 128 + SIGINT, as shells report it


class CollectorError(Exception):
    """A problem the user must fix; printed as one line, exit code 2."""

    exit_code = EXIT_USAGE


class InputError(CollectorError):
    """The vmcore (or dump) given as input is unreadable or malformed."""


class TargetUnreachable(CollectorError):
    """A dump destination cannot be used (connection, authentication, host key); the next
    --fallback destination is tried. Exit code 1: the command line was fine, the world was not."""

    exit_code = EXIT_FAILED
