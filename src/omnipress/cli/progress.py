"""Which step of a run is going and for how long, on stderr (stdout keeps only the results)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class Progress:
    """Shows each step's label and the elapsed time on `stream` (default stderr).

    On a terminal one line is redrawn every `interval` seconds and erased when the step ends; elsewhere (a log, a
    pipe) one line is written when each step starts. `enabled=False` shows nothing.
    """

    def __init__(self, enabled: bool = True, stream: TextIO | None = None, interval: float = 0.5) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.started = time.perf_counter()

    @property
    def elapsed(self) -> float:
        """Seconds since this display was made."""
        return time.perf_counter() - self.started

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        """Show `label` while the block runs."""
        if not self.enabled:
            yield
            return
        if not self._is_terminal():
            self._write(f"omnipress: {label} (elapsed {self.elapsed:.1f} s)\n")
            yield
            return
        done = threading.Event()
        start = time.perf_counter()
        ticker = threading.Thread(target=self._redraw, args=(label, start, done), daemon=True)
        ticker.start()
        try:
            yield
        finally:
            done.set()
            ticker.join()
            self._write("\r\033[K")

    @contextmanager
    def bar(self, label: str, total: int | None = None, unit: str = "frames") -> Iterator[Counter]:
        """A counter shown as `label 12/40 frames (30%)` while the block runs (`total=None`: the count alone). On a
        terminal the line is redrawn at most every `interval` seconds; elsewhere a line is written at each tenth of
        `total` (every 100 items without one)."""
        counter = Counter(self, label, total, unit)
        try:
            yield counter
        finally:
            counter.close()

    def _redraw(self, label: str, start: float, done: threading.Event) -> None:
        while True:
            step = time.perf_counter() - start
            self._write(f"\r\033[Komnipress: {label} {step:.0f} s (total {self.elapsed:.0f} s)")
            if done.wait(self.interval):
                return

    def _is_terminal(self) -> bool:
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


class Counter:
    """The count of a `Progress.bar`: call `advance(n)` as items are done."""

    def __init__(self, progress: Progress, label: str, total: int | None, unit: str) -> None:
        self.progress, self.label, self.total, self.unit = progress, label, total, unit
        self.count = 0
        self._shown_at = 0.0
        self._step_shown = -1

    def advance(self, n: int = 1) -> None:
        """Count `n` more items done."""
        self.count += n
        if not self.progress.enabled:
            return
        if self.progress._is_terminal():
            now = time.perf_counter()
            if now - self._shown_at >= self.progress.interval:
                self._shown_at = now
                self.progress._write(f"\r\033[Komnipress: {self._text()}")
            return
        step = self.count * 10 // self.total if self.total else self.count // 100
        if step != self._step_shown:
            self._step_shown = step
            self.progress._write(f"omnipress: {self._text()}\n")

    def close(self) -> None:
        if self.progress.enabled and self.progress._is_terminal():
            self.progress._write("\r\033[K")

    def _text(self) -> str:
        done = f"{self.count}/{self.total}" if self.total else f"{self.count}"
        share = f" ({100 * self.count // self.total}%)" if self.total else ""
        return f"{self.label} {done} {self.unit}{share} (elapsed {self.progress.elapsed:.0f} s)"
