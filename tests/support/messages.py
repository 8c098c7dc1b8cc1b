"""Messages are checked by their key phrases: the object named, what happened, what to do. The
wording around them may change; a whole line is compared only where the exact text is the contract."""

from __future__ import annotations

from collections.abc import Sequence


def assert_lines_say(lines: Sequence[str], *expected: Sequence[str]) -> None:
    """As many lines as ``expected`` has entries, and line i says every phrase of ``expected[i]``."""
    assert len(lines) == len(expected), lines
    for line, phrases in zip(lines, expected, strict=True):
        missing = [phrase for phrase in phrases if phrase not in line]
        assert not missing, f"{line!r} does not say {missing}"
