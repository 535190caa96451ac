"""Progress for management commands: a bar on a terminal, plain lines when not a terminal."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Progress:
    def __init__(
        self, label: str, total: float = 1.0, *, stream: TextIO | Any | None = None
    ) -> None:
        self.label = label
        self.total = total or 1.0
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self._last_line = -1.0

    def update(self, done: float, note: str = "") -> None:
        fraction = min(max(done / self.total, 0.0), 1.0)
        elapsed = time.monotonic() - self.started
        if self.tty:
            width = 30
            filled = round(fraction * width)
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(
                f"\r{self.label} [{bar}] {fraction:6.1%} {elapsed:6.1f}s {note[:40]:<40}"
            )
            self.stream.flush()
        elif fraction - self._last_line >= 0.1 or (fraction >= 1.0 and self._last_line < 1.0):
            self._last_line = fraction
            self.stream.write(f"{self.label}: {fraction:.0%} ({elapsed:.1f}s) {note}\n")
            self.stream.flush()

    def done(self, note: str = "done") -> None:
        self.update(self.total, note)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
