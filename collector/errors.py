"""Errors that end a run with one clean line instead of a traceback."""


class CollectorError(Exception):
    """A problem the user must fix; printed as one line, exit code 2."""

    exit_code = 2


class InputError(CollectorError):
    """The vmcore (or dump) given as input is unreadable or malformed."""
