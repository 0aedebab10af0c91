"""A small progress bar on stderr for long batches (no dependency; silent when stderr is not a TTY
unless forced)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, label: str = "", stream: TextIO | None = None, enabled: bool | None = None,
                 min_interval_s: float = 0.1):
        self.total = max(total, 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.start = time.monotonic()
        self.last = 0.0
        self.min_interval_s = min_interval_s

    def __call__(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if done < self.total and now - self.last < self.min_interval_s:
            return
        self.last = now
        frac = done / self.total
        bar = "#" * int(frac * 30)
        rate = done / max(now - self.start, 1e-9)
        self.stream.write(f"\r{self.label} [{bar:<30}] {done}/{self.total} {frac:6.1%} {rate:,.0f}/s")
        if done >= self.total:
            self.stream.write("\n")
        self.stream.flush()
