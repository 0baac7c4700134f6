"""The one progress printer, for every long job (preparing a dataset, sampling, embedding, training): a line with
the count, rate and ETA, redrawn in place on a terminal and printed every `every_s` seconds elsewhere (a log file,
Ray's log stream, CI), the final line always."""

from __future__ import annotations

import sys
import time
from typing import TextIO

REDRAW_S = 0.5  # a terminal's line is redrawn at most this often


class Progress:
    def __init__(self, total: int, stream: TextIO = sys.stderr, label: str = "prepare", every_s: float = 10.0,
                 done: int = 0):
        """`done`: what was done before this printer started (a resumed run's steps), left out of the rate."""
        self.total, self.stream, self.label, self.every_s = total, stream, label, every_s
        self.tty = stream.isatty()
        self.start = self.last = time.perf_counter()
        self.before = done

    def update(self, done: int, final: bool = False, note: str = "", total: int | None = None) -> None:
        """`note` ends the line (e.g. the last losses); `total`: the whole job where it ended early (--limit)."""
        now = time.perf_counter()
        if not final and now - self.last < (REDRAW_S if self.tty else self.every_s):
            return
        self.last = now
        total = self.total if total is None else total
        rate = (done - self.before) / max(now - self.start, 1e-9)
        eta = "" if final else f" ETA {(total - done) / rate if rate > 0 else 0.0:,.0f}s"
        speed = f"{rate:,.0f}" if rate >= 10 else f"{rate:.2g}"
        line = f"{self.label}: {done}/{total} ({100 * done / max(total, 1):.0f}%) {speed}/s{eta}{note}"
        end = "\n" if final or not self.tty else ""
        self.stream.write(("\r\033[K" if self.tty else "") + line + end)
        self.stream.flush()

    def message(self, text: str) -> None:
        """A line of its own, which on a terminal replaces the progress line until the next update."""
        self.stream.write(("\r\033[K" if self.tty else "") + text + "\n")
        self.stream.flush()
