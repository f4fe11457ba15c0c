"""A minimal terminal progress bar (no dependency), drawn on stderr only when it is a TTY."""
from __future__ import annotations

import sys
import time


class ProgressBar:
    def __init__(self, total: int, label: str = "", stream=None, enabled: bool | None = None) -> None:
        self.total = max(1, total)
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.started = time.perf_counter()
        self.done = 0

    def update(self, done: float, note: str = "") -> None:
        """``done`` may be fractional (an item part-way through, e.g. its tiles); the count
        shows whole items, the bar and the ETA use the fraction."""
        self.done = done
        if not self.enabled:
            return
        width = 28
        filled = int(width * done / self.total)
        elapsed = time.perf_counter() - self.started
        eta = elapsed / done * (self.total - done) if done else 0.0
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {int(done)}/{self.total} "
                          f"{elapsed:5.1f}s eta {eta:5.1f}s {note[:40]:40s}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
