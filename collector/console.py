"""What a command prints on a console: one line per message, prefixed with the program's name,
and one runner that turns every failure into one such line and an exit code (a capture
kernel's console shows no traceback anyone can act on)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from .errors import EXIT_FAILED, EXIT_INTERRUPTED, CollectorError

DEBUG_ENV = "VMCORE_SAVE_DEBUG"


def say(program: str, text: str, stream: TextIO | None = None) -> None:
    """One whole line on ``stream`` (standard error), flushed at once (progress and errors interleave)."""
    print(f"{program}: {text}", file=sys.stderr if stream is None else stream, flush=True)


def guarded(program: str, call: Callable[[], int]) -> int:
    """``call()``'s exit code; any failure becomes one line naming it and an exit code."""
    try:
        return call()
    except CollectorError as e:
        say(program, f"error: {e}")
        return e.exit_code
    except KeyboardInterrupt:
        say(program, "interrupted")
        return EXIT_INTERRUPTED
    except OSError as e:
        say(program, f"error: {os_error_text(e)}")
        return EXIT_FAILED
    except Exception as e:  # never a traceback on a console in a capture kernel
        if os.environ.get(DEBUG_ENV):
            raise
        say(program, f"internal error: {type(e).__name__}: {e} (set {DEBUG_ENV}=1 for a traceback)")
        return EXIT_FAILED


def run(command: Callable[[list[str]], int], argv: Sequence[str] | None, program: str) -> int:
    """A command-line entry point: ``command`` on argv (sys.argv's by default), guarded."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    return guarded(program, lambda: command(arguments))


def os_error_text(error: OSError) -> str:
    """``file: reason`` for an OSError; never empty (some carry neither a file nor a text)."""
    reason = error.strerror or str(error) or type(error).__name__
    return f"{error.filename}: {reason}" if error.filename else reason
