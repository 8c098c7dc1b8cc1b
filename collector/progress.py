"""Progress as whole lines (serial consoles and journals cannot show carriage-return redraws)."""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO

from .console import say

PROGRAM = "vmcore-save"


def format_duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress(Protocol):
    """What writers report to: a phase with a total, then units done."""

    def start(self, phase: str, total: int, unit_bytes: int = 1) -> None: ...
    def update(self, done: int) -> None: ...
    def finish(self) -> None: ...


class LineProgress:
    """Prints ``phase  42%  123.4 MB/s  ETA 0:00:05`` at most once per ``interval`` seconds."""

    def __init__(self, stream: TextIO = sys.stderr, quiet: bool = False, interval: float = 1.0) -> None:
        self.stream = stream
        self.quiet = quiet
        self.interval = interval
        self.unit_bytes = 1

    def start(self, phase: str, total: int, unit_bytes: int = 1) -> None:
        self.phase, self.total, self.unit_bytes = phase, total, unit_bytes
        self.started = self.last_print = time.monotonic()
        self.done = 0

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if now - self.last_print >= self.interval:
            self.last_print = now
            self._line(now)

    def finish(self) -> None:
        elapsed = time.monotonic() - self.started
        if elapsed >= self.interval:  # short phases are reported in the summary only
            self._line(time.monotonic(), final=True)

    def _line(self, now: float, final: bool = False) -> None:
        if self.quiet:
            return
        elapsed = max(now - self.started, 1e-9)
        rate = self.done * self.unit_bytes / elapsed / 1e6
        percent = 100.0 * self.done / self.total if self.total else 100.0
        if final:
            tail = f"done in {format_duration(elapsed)}"
        else:
            remaining = (self.total - self.done) / (self.done / elapsed) if self.done else 0
            tail = f"ETA {format_duration(remaining)}"
        say(PROGRAM, f"{self.phase} {percent:5.1f}%  {rate:8.1f} MB/s  {tail}", self.stream)

    def message(self, text: str) -> None:
        if not self.quiet:
            say(PROGRAM, text, self.stream)
