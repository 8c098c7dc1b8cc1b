"""Errors that end a run with one clean line instead of a traceback."""


class CollectorError(Exception):
    """A problem the user must fix; printed as one line, exit code 2."""

    exit_code = 2


class InputError(CollectorError):
    """The vmcore (or dump) given as input is unreadable or malformed."""


class TargetUnreachable(CollectorError):
    """A dump destination cannot be used (connection, authentication, host key); the next
    --fallback destination is tried. Exit code 1: the command line was fine, the world was not."""

    exit_code = 1
